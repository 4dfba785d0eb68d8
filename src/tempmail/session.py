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

import enum
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
#: Reply bytes produced per batch: what one connection may make the server hold at most.
REPLY_BUDGET: Final = 65536


class Next(enum.Enum):
    """What a connection does after sending a batch of replies."""

    READ = "read"  # every buffered request is answered: receive more
    WRITE_MORE = "write more"  # the reply budget was reached: send, then answer more
    CLOSE = "close"  # end of stream or a protocol error


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
        try:
            name, key = socketmap.parse_request(request)
        except socketmap.MalformedRequest:
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
    """The protocol state of one connection.

    ``feed()`` buffers received bytes; ``answer()`` decodes buffered requests and returns
    their replies, at most about ``REPLY_BUDGET`` bytes at a time, so that a client that sends
    many small requests and never reads cannot make the server hold more than that: the server
    writes each batch (waiting for the client to read) before asking for the next.
    """

    __slots__ = ("_decoder", "_ref")

    def __init__(self, ref: HandlerRef) -> None:
        self._ref = ref
        # The limit is read when the connection opens; a reload applies to new connections.
        self._decoder = NetstringDecoder(max_length=ref.handler.config.server.max_query_length)

    @property
    def buffered(self) -> int:
        """Bytes of requests not answered yet held for this connection."""
        return self._decoder.buffered

    def feed(self, data: bytes) -> None:
        """Buffer received bytes; ``b""`` marks the end of the stream."""
        self._decoder.feed(data)

    def answer(self, now: float) -> tuple[bytes, Next]:
        """Replies to buffered requests, and what the connection should do next."""
        decoder = self._decoder
        handler = self._ref.handler
        replies: list[bytes] = []
        size = 0
        try:
            while size < REPLY_BUDGET:
                event = decoder.next_event()
                if type(event) is bytes:
                    reply = handler.answer(event, now).wire
                elif event is NEED_DATA:
                    return b"".join(replies), Next.READ
                elif event is END:
                    return b"".join(replies), Next.CLOSE
                else:
                    assert isinstance(event, Oversized)  # noqa: S101 - exhaustive
                    handler.stats.oversized_queries += 1
                    handler.stats.lookups_notfound += 1
                    reply = NOTFOUND.wire
                replies.append(reply)
                size += len(reply)
        except Truncated:
            log.info("client closed the connection in the middle of a request")
            return b"".join(replies), Next.CLOSE
        except NetstringError as exc:
            handler.stats.protocol_errors += 1
            log.warning("closing a connection after a protocol error: %s", exc)
            replies.append(socketmap.perm(f"malformed netstring: {exc}").wire)
            return b"".join(replies), Next.CLOSE
        return b"".join(replies), Next.WRITE_MORE

    def receive(self, data: bytes, now: float) -> tuple[bytes, bool]:
        """Feed ``data`` and answer everything buffered: (replies, close).

        For tests and tools; the server uses :meth:`feed` and :meth:`answer` to bound what it
        holds.
        """
        self.feed(data)
        chunks = []
        while True:
            replies, next_step = self.answer(now)
            chunks.append(replies)
            if next_step is not Next.WRITE_MORE:
                return b"".join(chunks), next_step is Next.CLOSE


def _printable(raw: bytes) -> str:
    text = repr(raw[:_LOGGED_KEY_LENGTH])[2:-1]
    return text + "..." if len(raw) > _LOGGED_KEY_LENGTH else text
