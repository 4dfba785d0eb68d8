"""Secrets: a type that never shows its value, and careful reading from files."""

from __future__ import annotations

import enum
import hmac
import os
import stat
from typing import TYPE_CHECKING, Final, NoReturn

if TYPE_CHECKING:
    from pathlib import Path

#: A secret file holds one secret; reading stops after this many bytes.
MAX_SECRET_FILE: Final = 64 * 1024


class Secret:
    """A secret value. Its repr and str are ``<SECRET>``; only :meth:`reveal` gives the bytes."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not value:
            raise ValueError("a secret must not be empty")
        self._value = value

    def reveal(self) -> bytes:
        """The secret's bytes, for the schemes and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return "<SECRET>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(Secret)  # equal secrets must hash equally; the value itself is not hashed

    def __reduce__(self) -> NoReturn:
        raise TypeError("secrets cannot be pickled")


class Permissions(enum.Enum):
    """How much access a file holding a secret may grant beyond its owner."""

    PRIVATE = "private"  # no group or other permission bits at all (0600, 0400)
    GROUP = "group"  # the group may read (0640, 0440): Kubernetes fsGroup, shared service groups
    ANY = "any"  # anyone may read: only for throw-away development setups


def check_permissions(path: Path | None, mode: int, allowed: Permissions) -> str | None:
    """Why a file with ``mode`` is too open for a secret, or None when it is fine.

    ``path`` is named in the message and its ``chmod`` hint; None words the message for "the
    secret file" instead, for paths that must not be shown (a secret typed where a path
    belongs would otherwise be printed).
    """
    if allowed is Permissions.ANY:
        return None
    too_open = stat.S_IRWXO | (0 if allowed is Permissions.GROUP else stat.S_IRWXG)
    if not mode & too_open:
        return None
    fixed_mode = "600" if allowed is Permissions.PRIVATE else "640"
    who = "others" if mode & stat.S_IRWXO else "its group"
    hint = (
        ', or set server.secret_permissions = "group" if a group must read it'
        if allowed is Permissions.PRIVATE and not mode & stat.S_IRWXO
        else ""
    )
    subject, chmod = (
        (str(path), f"'chmod {fixed_mode} {path}'")
        if path is not None
        else ("the secret file", f"'chmod {fixed_mode}' on it")
    )
    return f"{subject} is accessible by {who} (mode {stat.S_IMODE(mode):04o}); run {chmod}{hint}"


def read_secret_file(path: Path, allowed: Permissions) -> Secret:
    """Read one secret from ``path``: UTF-8 text, one trailing newline ignored.

    Raises ``ValueError`` with a message that says how to fix the file. The messages never
    contain ``path``: an operator who pasted the secret where its path belongs would see it
    printed at start and logged at every reload. The caller names the configuration key.
    """
    try:
        # O_NONBLOCK: a FIFO or a device must not hang the start or a reload; it is refused
        # below as not a regular file.
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise ValueError(f"cannot read the secret file: {exc.strerror}") from None
    except ValueError:  # an embedded NUL; os.open() echoes nothing, but says it oddly
        raise ValueError("cannot read the secret file: the path holds a NUL character") from None
    try:
        info = os.fstat(fd)  # the file we read, not whatever the path points to later
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("the secret file is not a regular file")
        problem = check_permissions(None, info.st_mode, allowed)
        if problem:
            raise ValueError(problem)
        raw = os.read(fd, MAX_SECRET_FILE + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_SECRET_FILE:
        raise ValueError("the secret file is larger than 64 KiB; a secret file holds one secret")
    return parse_secret_text(raw, "the secret file")


def parse_secret_text(raw: bytes, where: str) -> Secret:
    """Validate the contents of a secret file or variable and wrap them."""
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not UTF-8 text") from None
    if b"\n" in raw:
        raise ValueError(
            f"{where} holds more than one line; put one secret per file "
            "(older secrets go in previous_secret_files)"
        )
    if not raw:
        raise ValueError(f"{where} is empty")
    return Secret(raw)
