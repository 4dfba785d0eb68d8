"""The exceptions tempmail raises; callers outside a module only ever see these.

Each class carries the exit status the command line reports for it (sysexits(3), as the
README's command table documents), so a new error needs no new mapping anywhere else.
"""

from __future__ import annotations

from typing import ClassVar


class TempmailError(Exception):
    """Base class of every error tempmail raises on purpose."""

    exit_code: ClassVar[int] = 70  # EX_SOFTWARE: a failure with no more specific status


class UsageError(TempmailError):
    """The command line itself is wrong (a missing or conflicting option)."""

    exit_code: ClassVar[int] = 2  # as argparse's own usage errors


class ConfigError(TempmailError):
    """A configuration file, secret or setting is unusable.

    ``problems`` holds one line per problem, each naming the file and the dotted key, so that
    an operator sees every mistake at once instead of fixing them one restart at a time.
    """

    exit_code: ClassVar[int] = 78  # EX_CONFIG

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class CannotCreate(TempmailError):
    """A file the command must create exists already or cannot be created."""

    exit_code: ClassVar[int] = 73  # EX_CANTCREAT


class ProtocolError(TempmailError):
    """A peer broke the netstring or socketmap protocol."""

    exit_code: ClassVar[int] = 76  # EX_PROTOCOL


class PostfixUnavailable(TempmailError):
    """Postfix's configuration cannot be read: postconf is missing or fails."""

    exit_code: ClassVar[int] = 69  # EX_UNAVAILABLE


class ServerError(TempmailError):
    """The server cannot start or keep running (socket in use, permissions, ...)."""

    exit_code: ClassVar[int] = 71  # EX_OSERR
