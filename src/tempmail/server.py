"""The anyio socketmap server: a thin loop that feeds each connection's bytes to its Session.

Lifecycle:

* connections: each is served until the client closes it, it breaks the protocol, or it makes
  no progress for ``idle_timeout`` seconds (no complete request answered; a client that never
  reads its replies or dribbles a request byte by byte is closed too);
* ``max_connections``: at the cap the server stops accepting (further clients wait in the
  kernel's listen backlog) and closes the connection that has been idle longest, if it has been
  idle for ``EVICT_IDLE_AFTER`` seconds: idle connections cannot lock Postfix out, and Postfix
  simply reconnects;
* SIGHUP: reload the configuration and secrets in a worker thread; on any error keep serving
  with the old configuration and log why;
* SIGTERM/SIGINT: stop accepting and remove the socket, accept what already waits in the
  listen backlog, answer every request that has arrived, close the connections and return.
"""

from __future__ import annotations

import functools
import logging
import signal
import time
from typing import TYPE_CHECKING, Final

import anyio
from anyio.abc import SocketListener, SocketStream, TaskGroup

from tempmail import config as config_module
from tempmail import metrics
from tempmail.errors import ConfigError, ServerError
from tempmail.session import Handler, HandlerRef, Next, Session
from tempmail.stats import Stats
from tempmail.systemd import Notifier

if TYPE_CHECKING:
    from collections.abc import Callable

    from tempmail.config import Config
    from tempmail.listeners import Bound

log = logging.getLogger(__name__)

#: Bytes asked for per read: a Postfix request is a few dozen bytes; pipelining clients get many.
RECEIVE_SIZE: Final = 65536
#: At shutdown, how long to let requests that already arrived be read and answered.
SHUTDOWN_GRACE: Final = 0.05
#: At the connection cap, a connection idle at least this long is closed to make room.
EVICT_IDLE_AFTER: Final = 1.0
#: At shutdown, how long to wait for replies that are being written before closing anyway.
SHUTDOWN_TIMEOUT: Final = 5.0


class Connection:
    """What the sweeper, the connection cap and the shutdown need to know about a connection."""

    __slots__ = ("busy", "closing", "evicted", "last_active", "scope")

    def __init__(self, now: float, *, closing: bool = False) -> None:
        self.scope = anyio.CancelScope()
        self.last_active = now  # last time a complete request was answered (monotonic)
        self.busy = False  # between receiving bytes and finishing writing the replies
        self.closing = closing  # answer what has arrived, then close
        self.evicted = False


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
        self._connections: set[Connection] = set()
        self._drained: anyio.Event | None = None  # set when the last connection ends at shutdown
        self._stop_requested = False
        self.metrics_address: str | None = None  # http://HOST:PORT/metrics once serving
        # Event-loop objects: created in run(), inside the loop.
        self._accepting: anyio.CancelScope | None = None
        self._stop_event: anyio.Event | None = None
        self._limiter: anyio.CapacityLimiter | None = None  # one token per open connection
        self._tg: TaskGroup | None = None

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
        listeners = [await SocketListener.from_socket(b.sock) for b in self._bound]
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._accept_all, listeners)
                tg.start_soon(self._sweep_idle)
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
                await self._shut_down(listeners)
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
            new = await anyio.to_thread.run_sync(self._loader)
        except ConfigError as exc:
            self.stats.reloads_failed += 1
            log.error(  # noqa: TRY400 - the message is the whole story; no traceback wanted
                "reload failed, still serving the previous configuration: %s",
                "; ".join(exc.problems),
            )
            self._notifier.ready("reload failed; serving the previous configuration")
            return False
        old = self.config
        if (new.socket, new.server.user, new.metrics) != (old.socket, old.server.user, old.metrics):
            log.warning(
                "[socket], server.user and [metrics] changes take effect at the next restart"
            )
        self.ref.handler = Handler(new, self._clock(), self.stats)
        if self._limiter is not None:
            self._limiter.total_tokens = new.server.max_connections
        self.stats.reloads_ok += 1
        for warning in new.warnings:
            log.warning("%s", warning)
        log.info("configuration reloaded from %s", new.path or "<config>")
        self._notifier.ready(f"serving on {', '.join(self.addresses)}")
        return True

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

    async def _accept_all(self, listeners: list[SocketListener]) -> None:
        assert self._accepting is not None  # noqa: S101 - created in run()
        with self._accepting:
            async with anyio.create_task_group() as accepting:
                for listener in listeners:
                    accepting.start_soon(self._accept_loop, listener)

    async def _accept_loop(self, listener: SocketListener) -> None:
        limiter = self._limiter
        assert limiter is not None  # noqa: S101 - created in run()
        while True:
            try:
                stream = await listener.accept()
            except anyio.ClosedResourceError:
                return  # shutting down: the listener was closed under us
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                log.error("cannot accept a connection: %s", exc)  # noqa: TRY400
                await anyio.sleep(0.1)
                continue
            # The token is taken after accept(): a loop waiting in accept() must not hold
            # capacity that another listener's clients need. At the cap, this accepted
            # client waits unserved (and this loop accepts nothing more) until a token frees.
            token = object()
            if limiter.available_tokens < 1:
                self._evict_idlest()
            try:
                await limiter.acquire_on_behalf_of(token)
            except anyio.get_cancelled_exc_class():
                self._spawn(stream, None, closing=True)  # stopping: answer what it sent
                raise
            self._spawn(stream, token)

    def _spawn(self, stream: SocketStream, token: object | None, *, closing: bool = False) -> None:
        assert self._tg is not None  # noqa: S101 - created in run()
        connection = Connection(self._monotonic(), closing=closing)
        self._connections.add(connection)
        self._tg.start_soon(self._serve_connection, stream, connection, token)

    def _evict_idlest(self) -> None:
        """At the cap: close the connection idle longest, if idle long enough to be harmless."""
        idle = [c for c in self._connections if not c.busy and not c.evicted]
        if not idle:
            return
        idlest = min(idle, key=lambda c: c.last_active)
        if self._monotonic() - idlest.last_active >= EVICT_IDLE_AFTER:
            idlest.evicted = True
            idlest.scope.cancel()
            self.stats.connections_evicted += 1
            log.info("at max_connections: closed the connection idle longest to make room")

    async def _serve_connection(
        self, stream: SocketStream, connection: Connection, token: object | None
    ) -> None:
        stats = self.stats
        stats.connections_total += 1
        stats.connections_open += 1
        try:
            with connection.scope:
                await self._converse(stream, connection)
            if connection.scope.cancelled_caught and not (connection.closing or connection.evicted):
                stats.connections_idle_closed += 1
                log.debug("closed a connection that made no progress for the idle timeout")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            log.debug("connection lost: %s", exc)
        except Exception:
            # One broken connection must never take the server down.
            log.exception("unexpected error while serving a connection; closing it")
        finally:
            self._connections.discard(connection)
            stats.connections_open -= 1
            if token is not None and self._limiter is not None:
                self._limiter.release_on_behalf_of(token)
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            if self._drained is not None and not self._connections:
                self._drained.set()

    async def _converse(self, stream: SocketStream, connection: Connection) -> None:
        """Read requests and write replies until the client or the protocol ends it."""
        session = Session(self.ref)
        clock, monotonic = self._clock, self._monotonic
        while True:
            connection.busy = False
            try:
                data = await stream.receive(RECEIVE_SIZE)
            except anyio.EndOfStream:
                data = b""
            connection.busy = True
            session.feed(data)
            next_step = Next.WRITE_MORE
            while next_step is Next.WRITE_MORE:
                replies, next_step = session.answer(clock())
                if replies:
                    await stream.send(replies)
                    connection.last_active = monotonic()
            if next_step is Next.CLOSE or connection.closing:
                return

    async def _sweep_idle(self) -> None:
        """Close connections that made no progress for ``idle_timeout`` seconds."""
        while True:
            timeout = self.config.server.idle_timeout
            await anyio.sleep(min(1.0, timeout / 4))
            deadline = self._monotonic() - timeout
            for connection in list(self._connections):
                if connection.last_active < deadline:
                    connection.scope.cancel()
            limiter = self._limiter
            if limiter is not None and limiter.statistics().tasks_waiting:
                self._evict_idlest()  # someone waits at the cap: make room if we can

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

    async def _shut_down(self, listeners: list[SocketListener]) -> None:
        await self._stop_listening(listeners)
        for connection in self._connections:
            connection.closing = True
        # Requests that reached us before the stop are read and answered; then idle
        # connections are closed while busy ones finish writing their replies.
        await anyio.sleep(SHUTDOWN_GRACE)
        for connection in list(self._connections):
            if not connection.busy:
                connection.scope.cancel()
        if self._connections:
            self._drained = anyio.Event()
            with anyio.move_on_after(SHUTDOWN_TIMEOUT):
                await self._drained.wait()
        for connection in list(self._connections):
            connection.scope.cancel()

    async def _stop_listening(self, listeners: list[SocketListener]) -> None:
        assert self._accepting is not None  # noqa: S101 - created in run()
        self._accepting.cancel()
        for bound in self._bound:
            bound.unlink()  # first: new clients now fail fast (and Postfix retries later)
        # Clients already in the listen backlog have connected and may have sent a request:
        # accept them too, answer what they sent, then close.
        for bound in self._bound:
            for sock in bound.accept_pending():
                self._spawn(await SocketStream.from_socket(sock), None, closing=True)
        for listener in listeners:
            await listener.aclose()
        for bound in self._bound:
            bound.close()
