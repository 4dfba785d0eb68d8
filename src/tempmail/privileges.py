"""Running as root: drop to the configured user after binding, as the original's PARSER_RUN_UID."""

from __future__ import annotations

import logging
import os
import pwd
import sys
from pathlib import Path

from tempmail import access
from tempmail.errors import ConfigError, ServerError

log = logging.getLogger(__name__)


def check_switch(user: str | None) -> None:
    """Check, before anything is bound, that the server can switch to ``user`` and run there.

    As root: refuse to serve as root unless told to, refuse a user that does not exist, and
    refuse one that could not read the Python installation after the switch.
    """
    if os.geteuid() != 0 or user == "root":
        return
    _switch_target(user)
    assert user is not None  # noqa: S101 - _switch_target refuses None
    _check_installation_readable(user)


def drop_privileges(user: str | None) -> None:
    """Become ``user`` if started as root; refuse to serve as root unless told to."""
    if os.geteuid() != 0:
        if user and user not in (_current_user(), str(os.geteuid())):
            log.warning("server.user = %r is ignored: the server was not started as root", user)
        return
    if user == "root":
        log.warning('running as root because server.user = "root"; an unprivileged user is safer')
        return
    entry = _switch_target(user)
    if entry.pw_uid == 0:  # "0", or another name of root (toor): root all the same
        log.warning(
            "running as root because server.user = %r is uid 0; an unprivileged user is safer",
            user,
        )
        return
    try:
        os.initgroups(entry.pw_name, entry.pw_gid)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except OSError as exc:
        raise ServerError(f"server.user: cannot switch to {user!r}: {exc.strerror}") from None
    log.info("switched to user %s (uid %d, gid %d)", user, entry.pw_uid, entry.pw_gid)


def _switch_target(user: str | None) -> pwd.struct_passwd:
    """The account to switch to; refuses none at all and one that does not exist."""
    if user is None:
        raise ConfigError(
            "server.user: refusing to run as root; set server.user to an unprivileged user "
            "(the socket is created first, then the server switches to that user), "
            'or to "root" to run as root anyway'
        )
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"server.user: no user {user!r} on this system") from None


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry, common in containers
        return str(os.geteuid())


def _check_installation_readable(user: str) -> None:
    """Refuse a ``server.user`` that could not read the Python installation after the switch.

    The server keeps importing after it dropped root (a reload, a worker thread, a time zone
    first used); a venv under /root, or a checkout in a private directory, would crash it then
    with "No module named ...". Checked before anything is served, with the user's own
    permissions: the interpreter's standard library and the packages the server runs on.
    """
    account = access.Account.named(user)
    assert account is not None  # noqa: S101 - _switch_target found it
    import anyio  # noqa: PLC0415 - only its location is wanted

    import tempmail  # noqa: PLC0415

    for module in (os, anyio, tempmail):
        where = Path(module.__file__ or sys.executable)
        denied = account.denied(where, access.Permission.READ)
        if denied is not None:
            raise ConfigError(
                f"server.user: {denied}, so the server would stop at its next import after "
                f"switching to {account.name!r}; install tempmail where that user can read "
                "it, e.g. 'python3 -m venv /opt/tempmail' (see README, Installing on a host)"
            )
