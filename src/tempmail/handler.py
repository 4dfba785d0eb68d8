"""From a request payload to a reply, for one loaded configuration: the dispatch and its counts.

Between the protocol (session.py: framing, batching, when to close) and the policy (lookup.py:
is this key a valid address now) sits this one decision: which map was asked. The configured
map name goes to the lookup, ``_status`` to the status report (status.py), anything else gets
``PERM`` with a reason Postfix logs. Every answer is counted in the shared :class:`Stats`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from tempmail import socketmap, status
from tempmail.lookup import Resolver
from tempmail.socketmap import Reply
from tempmail.stats import Stats

if TYPE_CHECKING:
    from tempmail.config import Config

log = logging.getLogger(__name__)

#: Longest key shown in a log line; the rest is elided.
_LOGGED_KEY_LENGTH: Final = 200
_STATUS_MAP: Final = status.STATUS_MAP.encode()
_MALFORMED: Final = socketmap.perm("malformed request: expected 'mapname key'")
#: Unknown map names whose PERM reply is kept (they are built with a reason to log).
_PERM_REPLIES_KEPT: Final = 16


class Handler:
    """Answers requests for one loaded configuration; replaced as a whole on reload."""

    __slots__ = ("_debug", "_map_name", "_perm_replies", "_resolver", "config", "stats")

    def __init__(self, config: Config, now: float, stats: Stats | None = None) -> None:
        self.config = config
        self.stats = stats or Stats()
        self._map_name = config.server.map_name.encode()
        self._resolver = Resolver(config.identities, config.server.recipient_delimiter, now)
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._perm_replies: dict[bytes, Reply] = {}

    def follow_log_level(self) -> None:
        """Log lookups or not as the logger now says (it is asked once, not per lookup)."""
        self._debug = log.isEnabledFor(logging.DEBUG)

    @property
    def resolver(self) -> Resolver:
        """The resolver (and its current day's table)."""
        return self._resolver

    def answer(self, request: bytes, now: float) -> Reply:
        """The reply to one request payload ``name SP key``."""
        try:
            name, key = socketmap.parse_request(request)
        except socketmap.MalformedRequest:
            self.stats.lookups_perm += 1
            return _MALFORMED
        if name != self._map_name:
            if name == _STATUS_MAP:
                self.stats.status_requests += 1
                return status.reply(self.config, self._resolver, self.stats, now)
            self.stats.lookups_perm += 1
            return self._unknown_map(name)
        result = self._resolver.resolve(key, now)
        match = result.match
        if match is None:
            self.stats.lookups_notfound += 1
        else:
            self.stats.lookups_ok += 1
            self.stats.served(match.day)
            if match.tag is not None:
                self.stats.lookups_tagged += 1
        if self._debug:
            log.debug(
                "lookup key=%s result=%s%s",
                printable(key),
                result.reply.status.value,
                f" identity={match.identity} date={match.day} scheme={match.scheme}"
                + (f" tag={match.tag}" if match.tag else "")
                if match
                else "",
            )
        return result.reply

    def _unknown_map(self, name: bytes) -> Reply:
        """PERM for a map name we do not serve; a misconfigured Postfix repeats one name."""
        reply = self._perm_replies.get(name)
        if reply is None:
            if len(self._perm_replies) >= _PERM_REPLIES_KEPT:
                self._perm_replies.clear()  # a client cycling through names gains nothing
            reply = socketmap.perm(
                f"unknown map name '{printable(name)}'; this server answers "
                f"{self.config.server.map_name!r} (check virtual_alias_maps in main.cf)"
            )
            self._perm_replies[name] = reply
        return reply


class HandlerRef:
    """The current handler; a reload swaps it and every open connection uses the new one."""

    __slots__ = ("handler",)

    def __init__(self, handler: Handler) -> None:
        self.handler = handler


def printable(raw: bytes) -> str:
    """Bytes from a client, safe and bounded for a log line or a reason."""
    text = repr(raw[:_LOGGED_KEY_LENGTH])[2:-1]
    return text + "..." if len(raw) > _LOGGED_KEY_LENGTH else text
