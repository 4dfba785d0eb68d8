"""Creating the files ``init`` and ``migrate`` write: never overwriting, never following links.

They run as root on a host, perhaps in a directory someone else can write, so every step
works on open file descriptors: the directory is opened once and each file is created in it
with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (an existing file or a planted symlink is refused, not
followed), then given its group and mode with ``fchown``/``fchmod`` on the descriptor, so a
rename of the path in between changes nothing. A directory that others may write to is
refused: they could replace the file after it was written, and the server reads it as root.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tempmail.errors import CannotCreate

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

#: A file with a secret: its owner only, or with ``group`` set, its owner and that group.
PRIVATE_FILE: Final = 0o600
GROUP_FILE: Final = 0o640
PRIVATE_DIRECTORY: Final = 0o700
GROUP_DIRECTORY: Final = 0o750


@dataclass(frozen=True, slots=True)
class Access:
    """Who may read what is created: the creator only, or also the members of ``group``."""

    group: int | None = None  # a gid; None keeps the creator's own group and mode 0600/0700
    group_name: str = ""  # for messages

    @property
    def file_mode(self) -> int:
        return PRIVATE_FILE if self.group is None else GROUP_FILE

    @property
    def directory_mode(self) -> int:
        return PRIVATE_DIRECTORY if self.group is None else GROUP_DIRECTORY


def refuse_existing(*paths: Path) -> None:
    """Fail before anything is written when one of ``paths`` exists (a dangling link counts)."""
    for path in paths:
        if os.path.lexists(path):
            raise CannotCreate(f"{path} exists; refusing to overwrite it")


@contextlib.contextmanager
def directory(path: Path, access: Access) -> Iterator[int]:
    """An open descriptor of the directory ``path``, created (its last part) when missing.

    A new directory gets ``access``'s group and mode; an existing one is left as it is.
    ``path`` is absolute.
    """
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise CannotCreate(f"cannot create files in {path.parent}: {exc.strerror}") from None
    try:
        fd = _open_or_make_directory(parent, path, access)
    finally:
        os.close(parent)
    try:
        _refuse_if_others_may_write(fd, path)
        yield fd
    finally:
        os.close(fd)


def _open_or_make_directory(parent: int, path: Path, access: Access) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        # 0700 first: nobody else can enter it before its group and mode are set.
        os.mkdir(path.name, PRIVATE_DIRECTORY, dir_fd=parent)
    except FileExistsError:
        made = False
    except OSError as exc:
        raise CannotCreate(f"cannot create {path}: {exc.strerror}") from None
    else:
        made = True
    try:
        fd = os.open(path.name, flags, dir_fd=parent)
    except OSError as exc:
        # O_NOFOLLOW with O_DIRECTORY fails with ENOTDIR on a link: say what it is.
        link = stat.S_ISLNK(os.lstat(path.name, dir_fd=parent).st_mode)
        reason = "it is a symbolic link" if link else exc.strerror
        raise CannotCreate(f"cannot use {path} as a directory: {reason}") from None
    if made:
        try:
            _give(fd, path, access, access.directory_mode)
        except CannotCreate:
            os.close(fd)
            os.rmdir(path.name, dir_fd=parent)
            raise
    return fd


def _refuse_if_others_may_write(fd: int, path: Path) -> None:
    info = os.fstat(fd)
    if info.st_uid not in (0, os.geteuid()):
        raise CannotCreate(
            f"refusing to create files in {path}: it belongs to uid {info.st_uid}, who could "
            "replace them; use a directory of your own or root's"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise CannotCreate(
            f"refusing to create files in {path}: others may write to it (mode "
            f"{stat.S_IMODE(info.st_mode):04o}) and could replace them; use a directory only "
            "you can write to"
        )


def create(directory_fd: int, path: Path, text: str, access: Access) -> None:
    """Create ``path`` (whose directory is open as ``directory_fd``) holding ``text``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path.name, flags, PRIVATE_FILE, dir_fd=directory_fd)
    except FileExistsError:
        raise CannotCreate(f"{path} exists; refusing to overwrite it") from None
    except OSError as exc:
        raise CannotCreate(f"cannot create {path}: {exc.strerror}") from None
    try:
        _give(fd, path, access, access.file_mode)
        data = text.encode()
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    except OSError as exc:
        os.unlink(path.name, dir_fd=directory_fd)
        raise CannotCreate(f"cannot write {path}: {exc.strerror}") from None
    except CannotCreate:
        os.unlink(path.name, dir_fd=directory_fd)
        raise
    finally:
        os.close(fd)


def remove(directory_fd: int, path: Path) -> None:
    """Remove a file this module created, when a later step failed."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path.name, dir_fd=directory_fd)


def _give(fd: int, path: Path, access: Access, mode: int) -> None:
    """Set the group and mode of what ``fd`` is, whatever its path has become meanwhile."""
    try:
        if access.group is not None:
            os.fchown(fd, -1, access.group)
        os.fchmod(fd, mode)  # after fchown, which may clear set-id bits
    except OSError as exc:
        raise CannotCreate(
            f"cannot give {path} to group {access.group_name}: {exc.strerror} "
            "(run as root, or as a member of that group)"
        ) from None
