"""The socketmap server: anyio for the structure, asyncio protocols for each connection.

anyio runs the event loop and every long-lived task: accepting (with the connection cap), the
idle sweeper, signals, reloads, metrics and the shutdown. Each accepted connection is served by
a :class:`~tempmail.connection.SocketmapConnection`, an asyncio protocol over the sans-I/O
session (see that module for why: it halves the cost of a lookup).

Lifecycle:

* connections: each is served until the client closes it, it breaks the protocol, or it makes
  no progress for ``idle_timeout`` seconds (no complete request answered; a client that never
  reads its replies or dribbles a request byte by byte is closed too);
* ``max_connections``: at the cap the server stops accepting (further clients wait in the
  kernel's listen backlog) and closes the connection that has been idle longest, if it has been
  idle for ``EVICT_IDLE_AFTER`` seconds: idle connections cannot lock Postfix out, and Postfix
  simply reconnects;
* the day's table of valid addresses is built in a worker thread shortly before local
  midnight, and a reload builds the new one in a worker thread too: lookups never wait for it;
* SIGHUP: reload the configuration and secrets; on any error keep serving with the old
  configuration and log why;
* SIGTERM/SIGINT: stop accepting and remove the socket, accept what already waits in the
  listen backlog, answer every request that has arrived, close the connections and return.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
import time
from typing import TYPE_CHECKING, Final

import anyio
from anyio.abc import SocketStream

from tempmail import config as config_module
from tempmail import metrics
from tempmail.connection import SocketmapConnection
from tempmail.errors import ConfigError, ServerError
from tempmail.session import Handler, HandlerRef
from tempmail.stats import Stats
from tempmail.systemd import Notifier

if TYPE_CHECKING:
    from collections.abc import Callable

    from tempmail.config import Config
    from tempmail.listeners import Bound

log = logging.getLogger(__name__)

#: At shutdown, how long to let requests that already arrived be read and answered.
SHUTDOWN_GRACE: Final = 0.05
#: At the connection cap, a connection idle at least this long is closed to make room.
EVICT_IDLE_AFTER: Final = 1.0
#: At shutdown, how long to wait for replies that are being written before closing anyway.
SHUTDOWN_TIMEOUT: Final = 5.0
#: How long before local midnight the next day's table is built (in a worker thread).
PREPARE_AHEAD: Final = 60.0


class Server:
    """Serves socketmap lookups on already-bound sockets until :meth:`stop` or a signal."""

    def __init__(  # noqa: PLR0913 - collaborators are injected for tests
        self,
        config: Config,
        bound: list[Bound],
        *,
        loader: Callable[[], Config] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        notifier: Notifier | None = None,
    ) -> None:
        self._bound = bound
        self._notifier = notifier or Notifier(None)
        self._loader = loader or functools.partial(config_module.load, config.path)
        self._clock = clock
        self._monotonic = monotonic
        self.stats = Stats(started=clock())
        self.ref = HandlerRef(Handler(config, clock(), self.stats))
        self._connections: set[SocketmapConnection] = set()
        self._drained: anyio.Event | None = None  # set when the last connection ends at shutdown
        self._stop_requested = False
        self.metrics_address: str | None = None  # http://HOST:PORT/metrics once serving
        # Event-loop objects: created in run(), inside the loop.
        self._accepting: anyio.CancelScope | None = None
        self._stop_event: anyio.Event | None = None
        self._limiter: anyio.CapacityLimiter | None = None  # one token per open connection

    @property
    def config(self) -> Config:
        """The configuration in use now."""
        return self.ref.handler.config

    @property
    def addresses(self) -> list[str]:
        """Where the server listens, as ``unix:PATH`` / ``inet:HOST:PORT``."""
        return [b.description for b in self._bound]

    @property
    def open_connections(self) -> int:
        """Connections being served now."""
        return len(self._connections)

    async def run(
        self,
        *,
        handle_signals: bool = True,
        task_status: anyio.abc.TaskStatus[list[str]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until stopped; ``task_status.started`` reports the listening addresses."""
        self._accepting = anyio.CancelScope()
        self._stop_event = anyio.Event()
        self._limiter = anyio.CapacityLimiter(self.config.server.max_connections)
        if self._stop_requested:
            self._stop_event.set()
        for bound in self._bound:
            bound.sock.setblocking(False)  # noqa: FBT003 - socket API
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._accept_all)
                tg.start_soon(self._sweep_idle)
                tg.start_soon(self._prepare_tables)
                if handle_signals:  # before announcing readiness: an early SIGHUP must reload
                    await tg.start(self._handle_signals)
                if self.config.metrics.enabled:
                    self.metrics_address = await tg.start(self._serve_metrics)
                if self.config.metrics.summary_interval > 0:
                    tg.start_soon(self._log_summaries, self.config.metrics.summary_interval)
                for warning in self.config.warnings:
                    log.warning("%s", warning)
                log.info("listening on %s", ", ".join(self.addresses))
                self._notifier.ready(f"serving on {', '.join(self.addresses)}")
                task_status.started(self.addresses)
                await self._stop_event.wait()
                self._notifier.stopping()
                await self._shut_down()
                tg.cancel_scope.cancel()
        finally:
            for bound in self._bound:
                bound.close()
        log.info("stopped")

    def stop(self) -> None:
        """Ask the server to shut down gracefully (idempotent)."""
        self._stop_requested = True
        if self._stop_event is not None:
            self._stop_event.set()

    async def reload(self) -> bool:
        """Load the configuration again; keep the current one if the new one is broken.

        Reading files happens in a worker thread and the new day's table is built before the
        switch, so lookups never wait for a reload.
        """
        self._notifier.reloading()
        try:
            handler = await anyio.to_thread.run_sync(self._load_handler)
        except ConfigError as exc:
            self.stats.reloads_failed += 1
            log.error(  # noqa: TRY400 - the message is the whole story; no traceback wanted
                "reload failed, still serving the previous configuration: %s",
                "; ".join(exc.problems),
            )
            self._notifier.ready("reload failed; serving the previous configuration")
            return False
        old, new = self.config, handler.config
        if _needs_restart(old) != _needs_restart(new):
            log.warning(
                "[socket], server.user, server.event_loop and [metrics] changes take effect "
                "at the next restart"
            )
        self.ref.handler = handler
        if self._limiter is not None:
            self._limiter.total_tokens = new.server.max_connections
        self.stats.reloads_ok += 1
        for warning in new.warnings:
            log.warning("%s", warning)
        log.info("configuration reloaded from %s", new.path or "<config>")
        self._notifier.ready(f"serving on {', '.join(self.addresses)}")
        return True

    def _load_handler(self) -> Handler:
        """In a worker thread: read the config and secrets and build today's table."""
        return Handler(self._loader(), self._clock(), self.stats)

    def metrics_text(self) -> str:
        """The current metrics in Prometheus text format."""
        now = self._clock()
        handler = self.ref.handler
        self.stats.forget_dates_before(handler.oldest_valid_date(now))
        return metrics.render(self.stats, len(handler.resolver.table(now)))

    async def _serve_metrics(
        self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        settings = self.config.metrics
        try:
            listener = await anyio.create_tcp_listener(
                local_host=settings.host, local_port=settings.port, reuse_port=False
            )
        except OSError as exc:
            raise ServerError(
                f"metrics: cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
            ) from None
        port = listener.listeners[0].extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        address = f"http://{host}:{port}/metrics"
        log.info("metrics on %s", address)
        task_status.started(address)

        async def scrape(stream: SocketStream) -> None:
            try:
                await metrics.handle_scrape(stream, self.metrics_text)
            except Exception:  # a scrape must never take the lookup service down
                log.exception("error while answering a metrics request")

        async with listener:
            await listener.serve(scrape)

    async def _log_summaries(self, interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            self.stats.forget_dates_before(self.ref.handler.oldest_valid_date(self._clock()))
            log.info("summary %s", self.stats.summary())

    async def _accept_all(self) -> None:
        assert self._accepting is not None  # noqa: S101 - created in run()
        with self._accepting:
            async with anyio.create_task_group() as accepting:
                for bound in self._bound:
                    accepting.start_soon(self._accept_loop, bound.sock)

    async def _accept_loop(self, listening: socket.socket) -> None:
        """Accept every waiting connection per wake-up, within max_connections."""
        limiter = self._limiter
        assert limiter is not None  # noqa: S101 - created in run()
        while True:
            await anyio.wait_readable(listening)
            while True:
                try:
                    sock, _ = listening.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # EMFILE and friends: back off instead of spinning
                    log.error("cannot accept a connection: %s", exc)  # noqa: TRY400
                    await anyio.sleep(0.1)
                    break
                # The token is taken after accept(): a loop waiting in accept() must not hold
                # capacity another listener's clients need. At the cap, this accepted client
                # waits unserved (and this loop accepts nothing more) until a token frees.
                token = object()
                try:
                    limiter.acquire_on_behalf_of_nowait(token)  # no yield when there is room
                except anyio.WouldBlock:
                    self._evict_idlest()
                    try:
                        await limiter.acquire_on_behalf_of(token)
                    except anyio.get_cancelled_exc_class():
                        await self._serve(sock, None, closing=True)  # stopping: answer it
                        raise
                await self._serve(sock, token)

    async def _serve(
        self, sock: socket.socket, token: object | None, *, closing: bool = False
    ) -> None:
        """Hand an accepted socket to a protocol; it lives until the connection ends."""
        sock.setblocking(False)  # noqa: FBT003 - socket API
        factory = functools.partial(
            SocketmapConnection,
            self,
            self.ref,
            self._clock,
            self._monotonic,
            token,
            closing=closing,
        )
        try:
            with anyio.CancelScope(shield=True):  # the socket must end up owned by a transport
                await asyncio.get_running_loop().connect_accepted_socket(factory, sock=sock)
        except OSError as exc:  # the client vanished before the transport was set up
            log.debug("connection lost while setting it up: %s", exc)
            sock.close()
            if token is not None and self._limiter is not None:
                self._limiter.release_on_behalf_of(token)

    def connection_opened(self, connection: SocketmapConnection) -> None:
        """A connection's transport is ready (called by the connection)."""
        self._connections.add(connection)
        self.stats.connections_total += 1
        self.stats.connections_open += 1

    def connection_closed(self, connection: SocketmapConnection) -> None:
        """A connection ended, whoever closed it (called by the connection)."""
        self._connections.discard(connection)
        self.stats.connections_open -= 1
        if connection.idle_closed:
            self.stats.connections_idle_closed += 1
        if connection.token is not None and self._limiter is not None:
            self._limiter.release_on_behalf_of(connection.token)
        if self._drained is not None and not self._connections:
            self._drained.set()

    def _evict_idlest(self) -> None:
        """At the cap: close the connection idle longest, if idle long enough to be harmless."""
        idle = [c for c in self._connections if not c.busy and not c.evicted]
        if not idle:
            return
        idlest = min(idle, key=lambda c: c.last_active)
        if self._monotonic() - idlest.last_active >= EVICT_IDLE_AFTER:
            idlest.evicted = True
            idlest.abort()
            self.stats.connections_evicted += 1
            log.info("at max_connections: closed the connection idle longest to make room")

    async def _sweep_idle(self) -> None:
        """Close connections that made no progress for ``idle_timeout`` seconds."""
        while True:
            timeout = self.config.server.idle_timeout
            await anyio.sleep(min(1.0, timeout / 4))
            deadline = self._monotonic() - timeout
            for connection in list(self._connections):
                if connection.last_active < deadline and not connection.idle_closed:
                    connection.idle_closed = True
                    log.debug("closing a connection that made no progress for the idle timeout")
                    connection.abort()  # abort: its client may not be reading at all
            limiter = self._limiter
            if limiter is not None and limiter.statistics().tasks_waiting:
                self._evict_idlest()  # someone waits at the cap: make room if we can

    async def _prepare_tables(self) -> None:
        """Build the next day's table in a worker thread shortly before it is needed."""
        while True:
            now = self._clock()
            until = self.ref.handler.resolver.table(now).valid_until
            await anyio.sleep(max(0.0, until - now - PREPARE_AHEAD))
            resolver = self.ref.handler.resolver  # the current one, after any reload
            await anyio.to_thread.run_sync(resolver.prepare, until)
            await anyio.sleep(max(0.0, until - self._clock()) + 0.001)

    async def _handle_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("received SIGHUP: reloading the configuration")
                    await self.reload()
                else:
                    log.info("received %s: shutting down", signal.Signals(signum).name)
                    self.stop()

    async def _shut_down(self) -> None:
        await self._stop_listening()
        for connection in self._connections:
            connection.closing = True
        # Requests that reached us before the stop are read and answered (each connection
        # closes itself once it has answered all it received); idle ones are closed after a
        # short grace, and busy ones get SHUTDOWN_TIMEOUT to finish writing.
        await anyio.sleep(SHUTDOWN_GRACE)
        for connection in list(self._connections):
            if not connection.busy:
                connection.close()
        if self._connections:
            self._drained = anyio.Event()
            with anyio.move_on_after(SHUTDOWN_TIMEOUT):
                await self._drained.wait()
        for connection in list(self._connections):
            connection.abort()
        await anyio.lowlevel.checkpoint()  # let the transports report connection_lost

    async def _stop_listening(self) -> None:
        assert self._accepting is not None  # noqa: S101 - created in run()
        self._accepting.cancel()
        for bound in self._bound:
            bound.unlink()  # first: new clients now fail fast (and Postfix retries later)
        # Clients already in the listen backlog have connected and may have sent a request:
        # accept them too, answer what they sent, then close.
        for bound in self._bound:
            for sock in bound.accept_pending():
                await self._serve(sock, None, closing=True)
        for bound in self._bound:
            bound.close()


def _needs_restart(config: Config) -> tuple[object, ...]:
    """The settings a reload cannot change in a running server."""
    return (config.socket, config.server.user, config.server.event_loop, config.metrics)
