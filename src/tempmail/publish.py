"""Publishing today's addresses: files a website shows, so that it needs no secret.

The renderers are pure functions of a configuration and an injected instant. :func:`publish`
writes each configured file atomically: a new file under an unpredictable name in the same
directory, created exclusively (never through a link someone placed there), written, synced
and given its mode through the open descriptor, then renamed over the target. A reader sees
the old file or the new one, never a part of one. The directory is the operator's and may be
writable by the web server's user: nothing here follows a name such a user controls.

What is published is what anyone who is given an address sees anyway: the address, its date,
the end of its validity and its scheme. Never a secret, never a tagged address (a tag names
who received it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tempmail import generate, window
from tempmail.errors import ServerError

if TYPE_CHECKING:
    from pathlib import Path

    from tempmail.config import Config, PublishSettings

#: Attempts at an unused temporary name before giving up: with 64 random bits a collision
#: means someone is creating names in the directory on purpose.
_NAME_ATTEMPTS: Final = 8


@dataclass(frozen=True, slots=True)
class Entry:
    """Today's address of one identity, as published."""

    identity: str
    address: str
    date: dt.date
    valid_until: dt.datetime  # aware, in the identity's time zone: when the address expires
    scheme: str

    def as_json(self) -> dict[str, str]:
        """The JSON object of this entry (keys in a fixed order)."""
        return {
            "identity": self.identity,
            "address": self.address,
            "date": self.date.isoformat(),
            "valid_until": self.valid_until.isoformat(timespec="seconds"),
            "scheme": self.scheme,
        }


def entries(config: Config, now: float) -> list[Entry]:
    """Today's address of each identity at ``now``, in the order of the configuration."""
    found = []
    for identity in config.identities:
        zone = identity.timezone
        today = window.local_date(now, zone)
        address = generate.address_on(identity, today)
        # Valid on `window` local dates from today: until the start of the date after them.
        end = window.start_of_day(today + dt.timedelta(days=identity.window), zone)
        found.append(
            Entry(
                identity=identity.name,
                address=str(address),
                date=today,
                valid_until=dt.datetime.fromtimestamp(end, zone),
                scheme=address.scheme,
            )
        )
    return found


def render_text(config: Config, now: float) -> str:
    """The text file: today's address of each identity, one per line."""
    return "".join(f"{entry.address}\n" for entry in entries(config, now))


def render_json(config: Config, now: float) -> str:
    """The JSON file: a list of objects with identity, address, date, valid_until, scheme."""
    return json.dumps([entry.as_json() for entry in entries(config, now)], indent=2) + "\n"


def next_change(config: Config, now: float) -> float:
    """The next instant after ``now`` at which a published address changes (a local midnight)."""
    return min(window.span_at(now, i.timezone, 1).valid_until for i in config.identities)


def publish(settings: PublishSettings, config: Config, now: float) -> None:
    """Write the configured files for ``now``; :class:`ServerError` names the key and the fix.

    Blocking file I/O: the server calls it in a worker thread.
    """
    if settings.file is not None:
        write_atomically(
            settings.file, render_text(config, now).encode(), settings.mode, "publish.file"
        )
    if settings.json is not None:
        write_atomically(
            settings.json, render_json(config, now).encode(), settings.mode, "publish.json"
        )


def write_atomically(path: Path, data: bytes, mode: int, key: str) -> None:
    """Replace ``path`` by a file holding ``data`` with ``mode``, in one rename."""
    try:
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ServerError(
            f"{key}: cannot open the directory {path.parent}: {exc.strerror}; create it, "
            f"writable by the server's user, or change {key}"
        ) from None
    try:
        # Every step is relative to the directory opened above: renaming or replacing a
        # directory on the way cannot redirect the write.
        temporary, fd = _create_temporary(directory, path, key)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fchmod(file.fileno(), mode)  # on the descriptor: no name, no umask
                os.fsync(file.fileno())
            # rename() replaces the name itself: a symlink at the target is replaced, never
            # followed.
            os.rename(temporary, path.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=directory)
            raise
        os.fsync(directory)  # the rename itself survives a crash
    except OSError as exc:
        raise ServerError(
            f"{key}: cannot write {path}: {exc.strerror}; make its directory writable by the "
            f"server's user, or change {key}"
        ) from None
    finally:
        os.close(directory)


def _create_temporary(directory: int, path: Path, key: str) -> tuple[str, int]:
    """A new file in ``directory`` under a random name: its name and a writable descriptor."""
    # O_EXCL: created here and now, or an error; with O_CREAT it also refuses a symlink (even
    # a dangling one), so a name planted in advance is never written through.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_NAME_ATTEMPTS):
        name = f".tempmail-publish-{secrets.token_hex(8)}.tmp"
        try:
            return name, os.open(name, flags, 0o600, dir_fd=directory)
        except FileExistsError:
            continue
    raise ServerError(
        f"{key}: cannot create a temporary file next to {path}: {_NAME_ATTEMPTS} random names "
        "were taken; check who else writes to that directory"
    )
