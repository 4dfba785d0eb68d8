"""The exceptions tempmail raises; callers outside a module only ever see these."""

from __future__ import annotations


class TempmailError(Exception):
    """Base class of every error tempmail raises on purpose."""


class ConfigError(TempmailError):
    """A configuration file, secret or setting is unusable.

    ``problems`` holds one line per problem, each naming the file and the dotted key, so that
    an operator sees every mistake at once instead of fixing them one restart at a time.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ProtocolError(TempmailError):
    """A peer broke the netstring or socketmap protocol."""


class ServerError(TempmailError):
    """The server cannot start or keep running (socket in use, permissions, ...)."""
