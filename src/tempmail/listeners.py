"""Listening sockets: unix (owner, group, mode), TCP, or inherited from systemd.

Plain ``socket`` code, run before the event loop and before dropping privileges.

anyio's own ``create_unix_listener`` unlinks whatever socket is at the path, which would steal
the socket of a running server, and never chowns it; so we bind here and hand the socket over.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

from tempmail.errors import ServerError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from tempmail.config import SocketSettings

log = logging.getLogger(__name__)

#: The first file descriptor systemd passes (sd_listen_fds(3)).
SD_LISTEN_FDS_START: Final = 3


class Bound:
    """A listening socket and, for a unix socket we created, the path to remove at the end."""

    __slots__ = ("_identity", "_path", "description", "sock")

    def __init__(self, sock: socket.socket, description: str, path: Path | None = None) -> None:
        self.sock = sock
        self.description = description
        self._path = path
        # Remember which file we created: a successor server may already have put its own
        # socket at the same path, and that one must survive our shutdown.
        self._identity = _file_identity(path) if path is not None else None

    def accept_pending(self) -> list[socket.socket]:
        """Accept every connection waiting in the listen backlog, without waiting."""
        accepted: list[socket.socket] = []
        blocking = self.sock.getblocking()
        self.sock.setblocking(False)  # noqa: FBT003 - socket API
        try:
            while True:
                try:
                    connection, _ = self.sock.accept()
                except (BlockingIOError, InterruptedError):
                    return accepted
                except OSError as exc:  # e.g. EMFILE: the rest get a reset, Postfix retries
                    log.warning("cannot accept a waiting connection at shutdown: %s", exc)
                    return accepted
                accepted.append(connection)
        finally:
            self.sock.setblocking(blocking)

    def close(self) -> None:
        """Close the socket and remove its path if it is still the socket we created."""
        self.sock.close()
        self.unlink()

    def unlink(self) -> None:
        """Remove the socket's path (if it is still ours); the socket keeps its backlog."""
        path, self._path = self._path, None
        if path is not None and _file_identity(path) == self._identity:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # e.g. the directory is not writable after dropping root
                log.warning("cannot remove the socket %s: %s", path, exc.strerror)


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISSOCK(info.st_mode):
        return None
    # The inode number of a removed socket is often reused at once; the change time is not.
    return (info.st_dev, info.st_ino, info.st_ctime_ns)


def bind(settings: SocketSettings) -> Bound:
    """Create the listening socket that ``settings`` describe."""
    if settings.type == "unix":
        return bind_unix(settings)
    return bind_inet(settings)


def bind_inet(settings: SocketSettings) -> Bound:
    """A TCP listening socket on the configured host and port."""
    try:
        infos = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, _, _, _, address = infos[0]
        sock = socket.create_server(address, family=family, backlog=socket.SOMAXCONN)
    except OSError as exc:
        raise ServerError(
            f"socket: cannot listen on {settings.describe()}: {exc.strerror or exc}"
        ) from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return Bound(sock, f"inet:{shown}:{port}")


def bind_unix(settings: SocketSettings) -> Bound:
    """A unix listening socket with the configured mode, owner and group.

    A stale socket (nobody accepts on it: a crashed server's) is replaced; a live one is left
    alone and reported; a path that is not a socket is never deleted.
    """
    path = settings.path
    if not path.parent.is_dir():
        raise ServerError(
            f"socket.path: the directory {path.parent} does not exist; create it, for example "
            f"'install -d -m 0750 -g postfix {path.parent}'"
        )
    _remove_stale(path)
    uid = _resolve_id("socket.owner", settings.owner, _uid)
    gid = _resolve_id("socket.group", settings.group, _gid)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes bind() create the socket with at most the configured permissions, so
    # there is no moment in which it is more open than configured.
    old_umask = os.umask(0o777 & ~settings.mode)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ServerError(f"socket.path: cannot create {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)
    try:
        if uid != -1 or gid != -1:
            os.chown(path, uid, gid)
        path.chmod(settings.mode)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        path.unlink(missing_ok=True)
        key = "socket.owner/socket.group" if exc.errno == errno.EPERM else "socket.path"
        raise ServerError(
            f"{key}: cannot set up {path}: {exc.strerror} "
            "(changing the owner needs root; the group, membership in that group)"
        ) from None
    return Bound(sock, f"unix:{path}", path)


def _remove_stale(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ServerError(f"socket.path: cannot inspect {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise ServerError(f"socket.path: {path} exists and is not a socket; refusing to delete it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise ServerError(
                f"socket.path: cannot remove the stale socket {path}: {exc.strerror}"
            ) from None
        log.info("removed stale socket %s (no server accepted on it)", path)
        return
    except OSError as exc:
        raise ServerError(
            f"socket.path: cannot tell whether {path} is in use: {exc.strerror}"
        ) from None
    finally:
        probe.close()
    raise ServerError(f"socket.path: another server is already listening on {path}")


def _uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def _gid(name: str) -> int:
    return grp.getgrnam(name).gr_gid


def _resolve_id(key: str, value: str | int | None, lookup: Callable[[str], int]) -> int:
    if value is None:
        return -1
    if isinstance(value, int):
        return value
    try:
        return lookup(value)
    except KeyError:
        kind = "user" if key.endswith("owner") else "group"
        raise ServerError(f"{key}: no {kind} named {value!r} on this system") from None


def inherited(environ: Mapping[str, str]) -> list[Bound]:
    """Listening sockets passed by systemd socket activation (``LISTEN_PID``/``LISTEN_FDS``).

    Returns an empty list when none were passed to this process.
    """
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        raise ServerError("LISTEN_FDS is not a number") from None
    bound = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)  # noqa: FBT003 - os API
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM:
            raise ServerError(f"inherited file descriptor {fd} is not a stream socket")
        name = sock.getsockname()
        description = (
            f"unix:{name}" if sock.family == socket.AF_UNIX else f"inet:{name[0]}:{name[1]}"
        )
        bound.append(Bound(sock, description + " (from systemd)"))
    return bound
