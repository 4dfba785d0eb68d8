"""One client connection: asyncio transport callbacks over the sans-I/O :class:`Session`.

Why callbacks and not an anyio stream per connection: measured on this project's benchmark
(docs/benchmarks.md), anyio's stream layer and per-connection task machinery cost about half
of every lookup and about 100 µs per new connection (Postfix's ``postmap -q`` and every
short-lived Postfix process open one). A transport keeps the reader registered for the
connection's whole life and answers in the same callback that delivered the bytes. The
server around it (accepting, the connection cap, idle timeouts, signals, reloads, shutdown) is
still anyio; anyio's own streams use these same asyncio transports underneath.

Flow control: replies are produced in batches of at most ``REPLY_BUDGET`` bytes; when the
transport's write buffer passes its high-water mark (the client does not read), the protocol
stops reading and stops answering until the buffer drains, so a client can make the server
hold at most one read, one batch and the write buffer's high-water mark.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol, cast

from tempmail.session import Next, Session

if TYPE_CHECKING:
    from collections.abc import Callable

    from tempmail.session import HandlerRef

log = logging.getLogger(__name__)


class Owner(Protocol):
    """What a connection needs from the server that accepted it."""

    def connection_opened(self, connection: SocketmapConnection) -> None:
        """The transport is ready."""

    def connection_closed(self, connection: SocketmapConnection) -> None:
        """The connection is gone (whoever closed it)."""


class SocketmapConnection(asyncio.Protocol):
    """Serves socketmap requests on one transport."""

    def __init__(  # noqa: PLR0913 - the server's collaborators, injected
        self,
        owner: Owner,
        ref: HandlerRef,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        token: object | None,
        *,
        closing: bool = False,
    ) -> None:
        self._owner = owner
        self._session = Session(ref)
        self._clock = clock
        self._monotonic = monotonic
        self._transport: asyncio.Transport | None = None
        self._writing_paused = False
        self.token = token  # the claim on one of max_connections (None: not counted)
        self.last_active = monotonic()  # when a complete request was last answered
        self.closing = closing  # answer what has arrived, then close
        self.evicted = False
        self.idle_closed = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        # A stream transport (uvloop's do not subclass asyncio.Transport, hence no isinstance).
        self._transport = cast("asyncio.Transport", transport)
        self._owner.connection_opened(self)

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self._session.feed(data)
        self._answer()

    def eof_received(self) -> bool:  # noqa: D102
        self._session.feed(b"")
        self._answer()
        return False  # close our side too

    def pause_writing(self) -> None:  # noqa: D102
        # The client does not read its replies: stop reading its requests until it does.
        self._writing_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:  # noqa: D102
        self._writing_paused = False
        self._answer()  # requests left in the decoder while paused
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        if exc is not None:
            log.debug("connection lost: %s", exc)
        self._owner.connection_closed(self)

    # --- the server's view --------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether replies are still to be written, or held back for a client that does not read.

        Requests are answered as soon as they are complete, so a connection holding only part
        of a request is not busy: nothing can be answered for it.
        """
        transport = self._transport
        return self._writing_paused or (
            transport is not None and transport.get_write_buffer_size() > 0
        )

    def close(self) -> None:
        """Close after writing what is buffered."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping unwritten replies (a client that does not read)."""
        if self._transport is not None:
            self._transport.abort()

    def _answer(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        try:
            while not self._writing_paused:
                replies, next_step = self._session.answer(self._clock())
                if replies:
                    transport.write(replies)
                    self.last_active = self._monotonic()
                if next_step is Next.CLOSE or (next_step is Next.READ and self.closing):
                    transport.close()  # after the replies are written
                    return
                if next_step is Next.READ:
                    return
        except Exception:
            # One broken connection must never take the server down.
            log.exception("unexpected error while serving a connection; closing it")
            transport.abort()
