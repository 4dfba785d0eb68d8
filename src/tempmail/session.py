"""One socketmap connection, sans I/O: received bytes in, reply bytes and "close?" out.

The protocol policy lives here, apart from sockets and event loops:

* a malformed netstring gets ``PERM`` and the connection is closed (the stream cannot be
  resynchronised);
* a request longer than ``max_query_length`` gets ``NOTFOUND`` without being buffered (a
  ``PERM`` would make Postfix defer that mail forever);
* a request for another map name gets ``PERM`` with a reason that names both names;
* everything else goes to the :class:`~tempmail.lookup.Resolver`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from tempmail import socketmap, window
from tempmail.lookup import Resolver
from tempmail.netstring import (
    END,
    NEED_DATA,
    NetstringDecoder,
    NetstringError,
    Oversized,
    Truncated,
)
from tempmail.socketmap import NOTFOUND, Reply
from tempmail.stats import Stats

if TYPE_CHECKING:
    import datetime as dt

    from tempmail.config import Config

log = logging.getLogger(__name__)

#: Longest key shown in a log line; the rest is elided.
_LOGGED_KEY_LENGTH: Final = 200


class Handler:
    """Answers requests for one loaded configuration; replaced as a whole on reload."""

    __slots__ = ("_debug", "_map_name", "_resolver", "config", "stats")

    def __init__(self, config: Config, now: float, stats: Stats | None = None) -> None:
        self.config = config
        self.stats = stats or Stats()
        self._map_name = config.server.map_name.encode()
        self._resolver = Resolver(config.identities, config.server.recipient_delimiter, now)
        self._debug = log.isEnabledFor(logging.DEBUG)

    @property
    def resolver(self) -> Resolver:
        """The resolver (and its current day's table)."""
        return self._resolver

    def oldest_valid_date(self, now: float) -> dt.date:
        """The oldest local date whose addresses (tagged or not) are still valid at ``now``."""
        return min(
            window.span_at(now, i.timezone, max(i.window, i.tag_window if i.tags else 0)).dates[-1]
            for i in self.config.identities
        )

    def answer(self, request: bytes, now: float) -> Reply:
        """The reply to one request payload ``name SP key``."""
        name, space, key = request.partition(b" ")
        if not space:
            self.stats.lookups_perm += 1
            return socketmap.perm("malformed request: expected 'mapname key'")
        if name != self._map_name:
            self.stats.lookups_perm += 1
            return socketmap.perm(
                f"unknown map name '{_printable(name)}'; this server answers "
                f"{self.config.server.map_name!r} (check virtual_alias_maps in main.cf)"
            )
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
                _printable(key),
                result.reply.status.value,
                f" identity={match.identity} date={match.day} scheme={match.scheme}"
                + (f" tag={match.tag}" if match.tag else "")
                if match
                else "",
            )
        return result.reply


class HandlerRef:
    """The current handler; a reload swaps it and every open connection uses the new one."""

    __slots__ = ("handler",)

    def __init__(self, handler: Handler) -> None:
        self.handler = handler


class Session:
    """The protocol state of one connection."""

    __slots__ = ("_decoder", "_ref")

    def __init__(self, ref: HandlerRef) -> None:
        self._ref = ref
        # The limit is read when the connection opens; a reload applies to new connections.
        self._decoder = NetstringDecoder(max_length=ref.handler.config.server.max_query_length)

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete request held for this connection."""
        return self._decoder.buffered

    def receive(self, data: bytes, now: float) -> tuple[bytes, bool]:
        """Feed received bytes (``b""`` at end of stream); return (replies, close)."""
        decoder = self._decoder
        decoder.feed(data)
        handler = self._ref.handler
        replies: list[bytes] = []
        try:
            while True:
                event = decoder.next_event()
                if type(event) is bytes:
                    replies.append(handler.answer(event, now).wire)
                elif event is NEED_DATA:
                    return b"".join(replies), False
                elif event is END:
                    return b"".join(replies), True
                else:
                    assert isinstance(event, Oversized)  # noqa: S101 - exhaustive
                    handler.stats.oversized_queries += 1
                    handler.stats.lookups_notfound += 1
                    replies.append(NOTFOUND.wire)
        except Truncated:
            log.info("client closed the connection in the middle of a request")
            return b"".join(replies), True
        except NetstringError as exc:
            handler.stats.protocol_errors += 1
            log.warning("closing a connection after a protocol error: %s", exc)
            replies.append(socketmap.perm(f"malformed netstring: {exc}").wire)
            return b"".join(replies), True


def _printable(raw: bytes) -> str:
    text = repr(raw[:_LOGGED_KEY_LENGTH])[2:-1]
    return text + "..." if len(raw) > _LOGGED_KEY_LENGTH else text
