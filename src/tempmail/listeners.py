"""Listening sockets: unix (owner, group, mode), TCP, or inherited from systemd.

Plain ``socket`` code, run before the event loop and before dropping privileges.

anyio's own ``create_unix_listener`` unlinks whatever socket is at the path, which would steal
the socket of a running server, and never chowns it; so we bind here and hand the socket over.
How the socket gets its owner and mode without ever following a symlink: ``bind_unix``.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import secrets
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from tempmail import access, runtime
from tempmail.errors import ServerError

if TYPE_CHECKING:
    from collections.abc import Callable

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

    def accept_pending(self, limit: int) -> list[socket.socket]:
        """Accept the connections waiting in the listen backlog (``limit`` at most) at once."""
        accepted: list[socket.socket] = []
        blocking = self.sock.getblocking()
        self.sock.setblocking(False)  # noqa: FBT003 - socket API
        try:
            while len(accepted) < limit:
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
        return accepted

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


def bind(
    settings: SocketSettings,
    *,
    service_user: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Bound:
    """Create the listening socket that ``settings`` describe.

    ``service_user`` (``server.user``) and ``environ`` only shape the advice of errors.
    """
    if settings.type == "unix":
        return bind_unix(settings, service_user=service_user, environ=environ)
    return bind_inet(settings)


def bind_inet(settings: SocketSettings) -> Bound:
    """A TCP listening socket on the configured host and port (0: any free port)."""
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


def bind_unix(
    settings: SocketSettings,
    *,
    service_user: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Bound:
    """A unix listening socket with the configured mode, owner and group.

    A stale socket (nobody accepts on it: a crashed server's) is replaced; a live one is left
    alone and reported; a path that is not a socket is never deleted.

    The socket directory may be writable by the service user (it must remove the socket when
    it stops), and that user may race us: swap the socket for a symlink to a root-only file
    between our bind() and a chmod()/chown() by name. So the socket never has its final name
    until it is finished: it is bound in a private directory (mode 0700, created by us next to
    the final name and used only through its file descriptor, so it cannot be replaced under
    us), given its owner, group and mode there, and then hard-linked to its final name, which
    never replaces an existing name and never follows a symlink (SECURITY.md, "The socket").
    """
    path = settings.path
    try:
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        advice = missing_directory_advice(
            path.parent, service_user, container=runtime.in_container(environ)
        )
        raise ServerError(advice) from None
    except OSError as exc:
        problem = _directory_problem(path.parent, exc, container=runtime.in_container(environ))
        raise ServerError(f"socket.path: cannot open {path.parent}: {problem}") from None
    try:
        _remove_stale(path)
        uid = _resolve_id("socket.owner", settings.owner, _uid)
        gid = _resolve_id("socket.group", settings.group, _gid)
        sock = _bind_privately(
            directory, path, settings.mode, uid, gid, container=runtime.in_container(environ)
        )
    finally:
        os.close(directory)
    return Bound(sock, f"unix:{path}", path)


def _bind_privately(  # noqa: PLR0913 - the socket's settings, unpacked
    directory: int, path: Path, mode: int, uid: int, gid: int, *, container: bool
) -> socket.socket:
    """Bind, set up and listen in a private directory, then link the socket to ``path``."""
    private_name = f".{path.name}.{secrets.token_hex(8)}"
    try:
        os.mkdir(private_name, 0o700, dir_fd=directory)
    except OSError as exc:
        problem = _directory_problem(path.parent, exc, container=container)
        raise ServerError(
            f"socket.path: cannot create the socket in {path.parent}: {problem}"
        ) from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    private = -1
    try:
        private = os.open(
            private_name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory
        )
        _check_private(private, path)
        # Through /proc/self/fd the path names the directory we opened, whatever happens to
        # its name; it is also short, whatever the length of the socket directory's path.
        sock.bind(f"/proc/self/fd/{private}/{_BOUND_NAME}")
        if uid != -1 or gid != -1:
            os.chown(_BOUND_NAME, uid, gid, dir_fd=private, follow_symlinks=False)
        os.chmod(_BOUND_NAME, mode, dir_fd=private)  # nobody else can reach this directory
        sock.listen(socket.SOMAXCONN)
        os.link(
            _BOUND_NAME,
            path.name,
            src_dir_fd=private,
            dst_dir_fd=directory,
            follow_symlinks=False,
        )
    except ServerError:
        sock.close()
        raise
    except FileExistsError:
        sock.close()
        raise ServerError(
            f"socket.path: {path} appeared while the socket was being created; is another "
            "server starting?"
        ) from None
    except OSError as exc:
        sock.close()
        key = "socket.owner/socket.group" if exc.errno == errno.EPERM else "socket.path"
        raise ServerError(
            f"{key}: cannot set up {path}: {exc.strerror} "
            "(changing the owner needs root; the group, membership in that group)"
        ) from None
    finally:
        if private != -1:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_BOUND_NAME, dir_fd=private)
            os.close(private)
        # By name: whoever may write to the socket directory may have renamed it meanwhile;
        # then what is left behind is theirs, or an empty directory of ours.
        with contextlib.suppress(OSError):
            os.rmdir(private_name, dir_fd=directory)
    return sock


def _check_private(private: int, path: Path) -> None:
    """The directory opened by name is the one we made: ours, and closed to everyone else.

    Between our mkdir and our open, a user who may write to the socket directory could rename
    ours away and put a directory of their own under its name; binding in theirs would let
    them swap the socket for a symlink before our chmod.
    """
    found = os.fstat(private)
    if found.st_uid != os.geteuid() or found.st_mode & 0o077:
        raise ServerError(
            f"socket.path: the directory made in {path.parent} to create the socket in was "
            f"replaced (now owner uid {found.st_uid}, mode {found.st_mode & 0o7777:04o}) by "
            f"someone who may write to {path.parent}; refusing to create the socket there"
        )


#: The socket's name inside the private directory it is bound in.
_BOUND_NAME: Final = "s"


def _directory_problem(directory: Path, exc: OSError, *, container: bool) -> str:
    """Why ``directory`` cannot hold the socket (``exc``) and, where we know it, the fix."""
    fix = _directory_fix(directory, exc, container=container)
    return f"{exc.strerror}; {fix}" if fix else str(exc.strerror)


def _directory_fix(directory: Path, exc: OSError, *, container: bool) -> str | None:
    """How to make ``directory`` usable for the socket, after ``exc``, if we know."""
    uid, gid = os.geteuid(), os.getegid()
    if exc.errno == errno.ENOTDIR:
        return f"{directory} is not a directory: socket.path must name a file in a directory"
    if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
        return None
    if exc.errno == errno.EROFS:
        where = "a volume" if container else "a writable file system"
        return f"mount {where} at {directory} (the socket is created there)"
    if container:
        return (
            f"this container runs as uid {uid}: the volume at {directory} must let it enter and "
            f"write (owned by uid {uid}, or group {gid} with mode 0770; in Kubernetes, "
            f"fsGroup: {gid})"
        )
    user = access.user_name(uid)
    return (
        f"the server runs as {user} and must be able to enter and write {directory} (e.g. "
        f"'chown {user} {directory} && chmod u+rwx {directory}')"
    )


def missing_directory_advice(directory: Path, service_user: str | None, *, container: bool) -> str:
    """What to do about a socket directory that does not exist, where we run."""
    if container:
        return (
            f"socket.path: the directory {directory} does not exist in this container; mount "
            f"the volume shared with Postfix there (e.g. -v tempmail-socket:{directory}), or "
            "set [socket] path to a file in the directory where it is mounted"
        )
    owner = service_user if service_user and service_user != "root" else "tempmail"
    return (
        f"socket.path: the directory {directory} does not exist; create it owned by the "
        f"service user, so that it can remove the socket when it stops: 'install -d -o {owner} "
        f"-g postfix -m 0750 {directory}'"
    )


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
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            # A unit with Accept=yes passes one connected client per instance: accept() on it
            # fails with EINVAL forever.
            raise ServerError(
                f"inherited file descriptor {fd} is not a listening socket; tempmail's socket "
                "unit needs Accept=no (the default)"
            )
        name = sock.getsockname()
        description = (
            f"unix:{name}" if sock.family == socket.AF_UNIX else f"inet:{name[0]}:{name[1]}"
        )
        bound.append(Bound(sock, description + " (from systemd)"))
    return bound


def postfix_access_problem(path: Path, user: str = "postfix") -> str | None:
    """Why Postfix's daemons (``user``) cannot connect to the socket at ``path``, or None.

    None as well when there is no such user here (a sidecar container: Postfix lives in
    another container and is checked by ``tempmail check`` there).
    """
    account = access.Account.named(user)
    if account is None:
        return None
    problem = account.denied(path, access.Permission.WRITE)
    if problem is None:
        return None
    fix = (
        f'set [socket] group = "{user}" and mode = "0660"'
        if problem.path == path
        else f"e.g. 'chgrp {user} {problem.path} && chmod g+x {problem.path}'"
    )
    return f"{problem}; {fix}"
