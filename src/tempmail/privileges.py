"""Running as root: drop to the configured user after binding, as the original's PARSER_RUN_UID."""

from __future__ import annotations

import logging
import os
import pwd

from tempmail.errors import ConfigError, ServerError

log = logging.getLogger(__name__)


def drop_privileges(user: str | None) -> None:
    """Become ``user`` if started as root; refuse to serve as root unless told to."""
    if os.geteuid() != 0:
        if user and user not in (_current_user(), str(os.geteuid())):
            log.warning("server.user = %r is ignored: the server was not started as root", user)
        return
    if user is None:
        raise ConfigError(
            "server.user: refusing to run as root; set server.user to an unprivileged user "
            "(the socket is created first, then the server switches to that user), "
            'or to "root" to run as root anyway'
        )
    if user == "root":
        log.warning('running as root because server.user = "root"; an unprivileged user is safer')
        return
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"server.user: no user {user!r} on this system") from None
    try:
        os.initgroups(entry.pw_name, entry.pw_gid)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except OSError as exc:
        raise ServerError(f"server.user: cannot switch to {user!r}: {exc.strerror}") from None
    log.info("switched to user %s (uid %d, gid %d)", user, entry.pw_uid, entry.pw_gid)


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry, common in containers
        return str(os.geteuid())
