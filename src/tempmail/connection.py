"""One client connection: asyncio transport callbacks over the sans-I/O :class:`Session`.

Why callbacks and not an anyio stream per connection: measured on this project's benchmark
(docs/benchmarks.md), anyio's stream layer and per-connection task machinery cost about half
of every lookup and about 100 µs per new connection (Postfix's ``postmap -q`` and every
short-lived Postfix process open one). A transport keeps the reader registered for the
connection's whole life and answers in the callback that delivered the bytes. The server around
it (accepting, the connection cap, idle timeouts, signals, reloads, shutdown) is anyio; anyio's
own streams use these same asyncio transports underneath.

The connection owns its state. The server that accepted it reads that state (``last_active``,
``held``, ``idle``, ``reading_replies``, ``close_reason``) and states its intent through
methods (``begin_shutdown``, ``expire``, ``evict``, ``abort``); the connection reports to the
server (its :class:`Owner`) when it opens, when what it holds changes a lot, and when it is gone.

Fairness and flow control:

* requests are answered in turns (session.py): after a turn with requests left, the connection
  stops reading and schedules its next turn behind every other ready callback of the event
  loop, so one pipelining client cannot keep the loop to itself; a turn answers at most 32
  requests, fewer while turns take longer than ``TURN_TIME``;
* when the transport's write buffer passes its high-water mark (the client does not read its
  replies), the connection stops reading and stops answering until the buffer drains. What a
  connection holds is then bounded by one read, one turn's replies and the write buffer's
  high-water mark; what all connections together hold is bounded by the server, which evicts
  the connections holding the most (server.py).
"""

from __future__ import annotations

import array
import asyncio
import enum
import fcntl
import logging
import termios
from typing import TYPE_CHECKING, Final, Protocol, cast

from tempmail.session import TURN_REQUESTS, Next, Session

if TYPE_CHECKING:
    from collections.abc import Callable

    from tempmail.handler import HandlerRef

log = logging.getLogger(__name__)

#: The work one turn should take at most, in seconds: about how long another client's lookup
#: may wait per busy connection.
TURN_TIME: Final = 0.0005
#: The longest netstring prefix of a request ("100000:") and its terminating comma.
MAX_LENGTH_PREFIX: Final = 8
#: At shutdown, how long a client that connected but has not sent a byte yet has for its first
#: request (it connected before the socket was removed; Postfix sends at once, a client on a
#: busy machine may be descheduled for a while).
FIRST_REQUEST_GRACE: Final = 0.5
#: Changes in held bytes smaller than this are not reported to the owner (a lookup's reply is
#: tens of bytes): the owner's total may be off by this much per connection, no more.
HELD_REPORT_STEP: Final = 4096


class CloseReason(enum.Enum):
    """Why a connection ended."""

    ENDED = "ended"  # the client closed it, or broke the protocol (answered PERM first)
    IDLE = "idle"  # no complete request answered for idle_timeout
    EVICTED_IDLE = "evicted idle"  # at max_connections: the connection idle longest
    EVICTED_HELD = "evicted held"  # all connections held too much: this one held the most
    SHUTDOWN = "shutdown"  # the server stops
    ERROR = "error"  # an unexpected error while serving it (logged)


class Owner(Protocol):
    """What a connection tells the server that accepted it."""

    def connection_opened(self, connection: SocketmapConnection) -> None:
        """The transport is ready."""

    def held_changed(self, connection: SocketmapConnection, held: int) -> None:
        """What the connection holds changed by at least ``HELD_REPORT_STEP`` bytes."""

    def connection_closed(self, connection: SocketmapConnection) -> None:
        """The connection is gone (whoever closed it); ``close_reason`` says why."""


class SocketmapConnection(asyncio.Protocol):
    """Serves socketmap requests on one transport."""

    def __init__(
        self,
        owner: Owner,
        ref: HandlerRef,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        *,
        draining: bool = False,
    ) -> None:
        self._owner = owner
        self._session = Session(ref)
        self._clock = clock
        self._monotonic = monotonic
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_active = monotonic()
        self._writing_paused = False  # the client does not read its replies
        self._turn_scheduled = False  # a turn is queued behind the other ready callbacks
        self._reading_paused = False
        self._draining = draining  # answer what has arrived, then close
        self._reported_held = 0
        self._turn_requests = TURN_REQUESTS  # requests per turn, shortened while turns are slow
        self._spoken = False  # whether the client has sent anything at all
        # Whether a partial request alone may hold enough to be worth a report to the owner.
        self._partials_matter = (
            ref.handler.config.server.max_query_length + MAX_LENGTH_PREFIX >= HELD_REPORT_STEP
        )
        self._close_reason: CloseReason | None = CloseReason.SHUTDOWN if draining else None

    # --- state, for the server -------------------------------------------------------------

    @property
    def last_active(self) -> float:
        """Monotonic time when a complete request was last answered (or the connection made)."""
        return self._last_active

    @property
    def held(self) -> int:
        """Bytes held for this connection: unanswered requests and unsent replies."""
        transport = self._transport
        writing = transport.get_write_buffer_size() if transport is not None else 0
        return self._session.buffered + writing

    def measure_held(self) -> int:
        """What the connection holds now, for the server to count (reports start from it)."""
        self._reported_held = held = self.held
        return held

    @property
    def reading_replies(self) -> bool:
        """False while the client lets its replies pile up (the write buffer is full)."""
        return not self._writing_paused

    @property
    def idle(self) -> bool:
        """Nothing to answer and nothing to send: closing it now loses nothing.

        A connection holding only part of a request is idle: nothing can be answered for it.
        """
        transport = self._transport
        return (
            not self._writing_paused
            and not self._turn_scheduled
            and (transport is None or transport.get_write_buffer_size() == 0)
        )

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the connection ended, or is ending; None while it is open."""
        return self._close_reason

    # --- intent, from the server -----------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Answer the requests that have arrived, then close.

        "Arrived" includes bytes still in the kernel's receive queue: they are read and
        answered. A connection with nothing to answer closes at once, unless its client has
        not sent a single byte yet: it connected before the socket was removed and is about to
        send its first request, which it gets ``FIRST_REQUEST_GRACE`` seconds to do.
        """
        self._close_reason = self._close_reason or CloseReason.SHUTDOWN
        self._draining = True
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._turn_scheduled or self._writing_paused:
            return  # the turn in progress closes it once everything is answered
        if self._reading_paused:
            self._resume_reading()
        if self._bytes_in_kernel() > 0:
            return  # data_received and the turns answer it, then close
        if self._spoken:
            transport.close()  # after the replies already written
        else:
            assert self._loop is not None  # noqa: S101 - set in connection_made
            self._loop.call_later(FIRST_REQUEST_GRACE, self._close_if_silent)

    def _close_if_silent(self) -> None:
        """At shutdown: a client that never sent its first request in time is closed."""
        transport = self._transport
        if transport is not None and not self._spoken and not transport.is_closing():
            transport.close()

    def expire(self) -> None:
        """Close a connection that made no progress for the idle timeout."""
        self._end_at_once(CloseReason.IDLE)

    def evict(self, reason: CloseReason) -> None:
        """Close at once to make room (``EVICTED_IDLE``) or free memory (``EVICTED_HELD``)."""
        self._end_at_once(reason)

    def abort(self) -> None:
        """Close at once, dropping unwritten replies (the shutdown's grace has run out)."""
        self._end_at_once(CloseReason.SHUTDOWN)

    def _end_at_once(self, reason: CloseReason) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._close_reason in (None, CloseReason.SHUTDOWN):
            self._close_reason = reason  # the first specific reason is the one counted
        transport.abort()  # abort, even when closing: its client may not be reading at all
        # The transport lets go of us on a later turn of the loop; the buffers go now, so that
        # an eviction for memory frees memory within the turn that needed it.
        self._session.discard()

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        # A stream transport (uvloop's do not subclass asyncio.Transport, hence no isinstance).
        self._transport = cast("asyncio.Transport", transport)
        self._loop = asyncio.get_running_loop()
        # Idle from now, not from when it was accepted: at the cap it may have waited for room.
        self._last_active = self._monotonic()
        self._owner.connection_opened(self)

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self._spoken = True
        self._session.feed(data)
        if not self._turn_scheduled and not self._writing_paused:
            self._take_turn()

    def eof_received(self) -> bool:  # noqa: D102
        self._session.feed(b"")
        if not self._turn_scheduled and not self._writing_paused:
            self._take_turn()
        return True  # half-closed: the turns close the transport once all is answered

    def pause_writing(self) -> None:  # noqa: D102
        self._writing_paused = True
        self._pause_reading()
        self._report_held()

    def resume_writing(self) -> None:  # noqa: D102
        self._writing_paused = False
        if not self._turn_scheduled:
            self._take_turn()  # requests left in the decoder while paused

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        if exc is not None:
            log.debug("connection lost: %s", exc)
        self._close_reason = self._close_reason or CloseReason.ENDED
        self._owner.connection_closed(self)

    # --- turns ------------------------------------------------------------------------------

    def _take_turn(self) -> None:
        self._turn_scheduled = False
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        monotonic = self._monotonic
        started = monotonic()
        try:
            replies, next_step = self._session.answer(self._clock(), self._turn_requests)
        except Exception:
            # One broken connection must never take the server down.
            log.exception("unexpected error while serving a connection; closing it")
            self._close_reason = CloseReason.ERROR
            transport.abort()
            return
        if replies:
            transport.write(replies)
            self._last_active = finished = monotonic()
            if finished - started > TURN_TIME or self._turn_requests < TURN_REQUESTS:
                self._fit_turn(finished - started)
        if next_step is Next.READ and not (self._draining or self._reading_paused):
            # The common case, a lookup answered and nothing left: nothing held worth a report
            # unless something was before (a partial request is short, see __init__).
            if self._reported_held or self._partials_matter or transport.get_write_buffer_size():
                self._report_held()
            return
        self._after_turn(next_step, transport)

    def _after_turn(self, next_step: Next, transport: asyncio.Transport) -> None:
        """Close, resume reading, or queue the next turn; then report what is held."""
        if next_step is Next.READ and self._draining and self._bytes_in_kernel() > 0:
            # Shutting down while reading was paused: what arrived meanwhile is answered too.
            if not self._writing_paused:
                self._resume_reading()
        elif next_step is Next.CLOSE or (next_step is Next.READ and self._draining):
            transport.close()  # after the replies are written
        elif next_step is Next.READ:
            if not self._writing_paused:
                self._resume_reading()
        elif not self._writing_paused:  # Next.ANSWER_MORE: yield to the other connections
            self._pause_reading()
            self._turn_scheduled = True
            assert self._loop is not None  # noqa: S101 - set in connection_made
            self._loop.call_soon(self._take_turn)
        self._report_held()

    def _fit_turn(self, took: float) -> None:
        """Halve the requests per turn while turns take longer than TURN_TIME, regrow after.

        Most lookups cost microseconds, but some are costlier by design (a 1.x tagged code is
        checked against every day of the tag window while legacy_tags_until keeps them valid):
        a time bound keeps a turn short whatever the keys cost.
        """
        if took > TURN_TIME:
            self._turn_requests = max(1, self._turn_requests // 2)
        elif took < TURN_TIME / 4 and self._turn_requests < TURN_REQUESTS:
            self._turn_requests = min(TURN_REQUESTS, self._turn_requests * 2)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        transport = self._transport
        if self._reading_paused and transport is not None and not transport.is_closing():
            self._reading_paused = False
            transport.resume_reading()

    def _report_held(self) -> None:
        held = self.held
        if abs(held - self._reported_held) >= HELD_REPORT_STEP:
            self._reported_held = held
            self._owner.held_changed(self, held)

    def _bytes_in_kernel(self) -> int:
        """Bytes the client sent that the kernel holds and we have not read (FIONREAD)."""
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return 0
        count = array.array("i", [0])
        try:
            fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
        except OSError:  # the socket is gone: nothing more will arrive
            return 0
        return count[0]
