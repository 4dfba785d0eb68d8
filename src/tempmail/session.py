"""One socketmap connection, sans I/O: received bytes in, reply bytes and what to do next out.

The protocol policy lives here, apart from sockets and event loops:

* a malformed netstring gets ``PERM`` and the connection is closed (the stream cannot be
  resynchronised);
* a request longer than ``max_query_length`` gets ``NOTFOUND`` without being buffered (a
  ``PERM`` would make Postfix defer that mail forever);
* every other request goes to the current :class:`~tempmail.handler.Handler`;
* work is handed out in **turns**: one call to :meth:`Session.answer` answers at most
  ``max_requests`` requests (``TURN_REQUESTS`` by default) and ``REPLY_BUDGET`` reply bytes, so
  a client that pipelines without pause gets one turn like every other connection instead of
  the whole server (the connection yields to the event loop between turns, and shortens its
  turns when they take long: connection.py), and cannot make the server hold more than one
  batch of replies at a time.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, Final

from tempmail import socketmap
from tempmail.netstring import (
    END,
    NEED_DATA,
    NetstringError,
    Oversized,
    Truncated,
)
from tempmail.socketmap import NOTFOUND

if TYPE_CHECKING:
    from tempmail.handler import HandlerRef

log = logging.getLogger(__name__)

#: Reply bytes produced per turn: what one connection may make the server hold at most
#: (besides the transport's write buffer, see connection.py).
REPLY_BUDGET: Final = 16384
#: Requests answered per turn. A lookup costs a few microseconds (a tagged one one HMAC
#: more), so a turn is well under a millisecond: another client's lookup waits at most about
#: one turn per busy connection (measured in docs/benchmarks.md, "Fairness").
TURN_REQUESTS: Final = 32


class Next(enum.Enum):
    """What a connection does after sending a turn's replies."""

    READ = "read"  # every buffered request is answered: receive more
    ANSWER_MORE = "answer more"  # the turn ended with requests left: yield, then answer more
    CLOSE = "close"  # end of stream or a protocol error


class Session:
    """The protocol state of one connection.

    ``feed()`` buffers received bytes; ``answer()`` decodes buffered requests and returns the
    replies of one turn.
    """

    __slots__ = ("_decoder", "_ref")

    def __init__(self, ref: HandlerRef) -> None:
        self._ref = ref
        # The limit is read when the connection opens; a reload applies to new connections.
        self._decoder = socketmap.decoder(ref.handler.config.server.max_query_length)

    @property
    def buffered(self) -> int:
        """Bytes of requests not answered yet held for this connection."""
        return self._decoder.buffered

    def discard(self) -> None:
        """Drop every buffered byte at once (the connection is closed without answers)."""
        self._decoder = socketmap.decoder(self._decoder.max_length)

    def feed(self, data: bytes) -> None:
        """Buffer received bytes; ``b""`` marks the end of the stream."""
        self._decoder.feed(data)

    def answer(self, now: float, max_requests: int = TURN_REQUESTS) -> tuple[bytes, Next]:
        """The replies of one turn (at most ``max_requests``), and what to do next."""
        decoder = self._decoder
        handler = self._ref.handler
        replies: list[bytes] = []
        size = 0
        try:
            while size < REPLY_BUDGET and len(replies) < max_requests:
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
        return b"".join(replies), Next.ANSWER_MORE

    def receive(self, data: bytes, now: float) -> tuple[bytes, bool]:
        """Feed ``data`` and answer everything buffered, turn after turn: (replies, close).

        For tests and tools; the server answers one turn at a time (see connection.py).
        """
        self.feed(data)
        chunks = []
        while True:
            replies, next_step = self.answer(now)
            chunks.append(replies)
            if next_step is not Next.ANSWER_MORE:
                return b"".join(chunks), next_step is Next.CLOSE
