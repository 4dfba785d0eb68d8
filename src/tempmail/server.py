"""The socketmap server: anyio for the structure, asyncio protocols for each connection.

anyio runs the event loop and every long-lived task: accepting (with the connection cap), the
housekeeping tick, signals, reloads and metrics. Each accepted connection is served by a
:class:`~tempmail.connection.SocketmapConnection`, an asyncio protocol over the sans-I/O session
(see that module for why). The server owns the connections' lifecycle: it keeps the set of open
connections, their claims on ``max_connections`` and what they hold, and it closes them through
their intent methods; a connection reports back when it opens, holds much more or less, and
ends.

Lifecycle:

* connections: each is served until the client closes it, it breaks the protocol, or it makes
  no progress for ``idle_timeout`` seconds (no complete request answered; a client that never
  reads its replies or dribbles a request byte by byte is closed too);
* ``max_connections``: at the cap the server stops accepting (further clients wait in the
  kernel's listen backlog) and closes the connection idle longest, if it has been idle for
  ``EVICT_IDLE_AFTER`` seconds, else the one holding the most among those that do not read
  their replies: idle or hostile connections cannot lock Postfix out (Postfix reconnects);
* memory: when all connections together hold more than ``MAX_HELD_BYTES`` of unanswered
  requests and unsent replies, the ones holding the most are closed;
* the housekeeping tick (every second): idle timeouts, room at the cap, the next day's table
  (built in a worker thread shortly before local midnight), the published addresses (after each
  local midnight, see publish.py), and the configuration and secret files (a settled change
  reloads, with ``reload_on_change``);
* SIGHUP or a changed file: reload the configuration and secrets in a worker thread; on any
  error keep serving the previous configuration, log why and show it in the status report;
* SIGTERM/SIGINT: stop accepting and remove the socket, accept what already waits in the
  listen backlog, answer every request that has arrived (including what the kernel holds for
  us), close the connections and return.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import signal
import socket
import time
from typing import TYPE_CHECKING, Final

import anyio
import anyio.lowlevel

from tempmail import config as config_module
from tempmail import logs, metrics, publish, watch, window
from tempmail.connection import CloseReason, SocketmapConnection
from tempmail.errors import ConfigError, ServerError
from tempmail.handler import Handler, HandlerRef
from tempmail.stats import Stats
from tempmail.systemd import Notifier

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable

    from tempmail.config import Config
    from tempmail.listeners import Bound

log = logging.getLogger(__name__)

#: At the connection cap, a connection idle at least this long is closed to make room.
EVICT_IDLE_AFTER: Final = 1.0
#: At shutdown, how long to wait for replies that are being written before closing anyway.
SHUTDOWN_TIMEOUT: Final = 5.0
#: How long before local midnight the next day's table is built (in a worker thread).
PREPARE_AHEAD: Final = 60.0
#: The housekeeping period, in seconds: how late an idle timeout, a day change or a changed
#: file may be noticed (shorter when idle_timeout is short).
TICK: Final = 1.0
#: What all connections together may hold (unanswered requests, unsent replies) before the
#: ones holding the most are closed. Postfix holds a few hundred bytes per connection.
MAX_HELD_BYTES: Final = 16 * 1024 * 1024
#: After an eviction for memory, what remains held: room before the next eviction round.
HELD_AFTER_EVICTION: Final = MAX_HELD_BYTES * 3 // 4
#: accept() failures that mean "out of a resource": back off and try again.
_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() errors about the one client being accepted (it left, or its handshake failed):
#: the next client is accepted at once. Any other error backs off, like a resource error.
_CLIENT_ERRORS: Final = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
#: Connections accepted per wake-up of an accept loop, at most (then the loop yields).
ACCEPT_BATCH: Final = 256
#: At shutdown, how many times the listen backlog is emptied, at most, before the listener
#: closes (a unix socket's backlog is found empty after one or two; see _stop_listening).
SHUTDOWN_ACCEPT_PASSES: Final = 8
#: Back-off after a resource error in accept(): from the first to the longest delay.
ACCEPT_BACKOFF: Final = (0.01, 1.0)
#: A repeated warning (accept errors, evictions) is logged at most once per this many seconds.
WARN_INTERVAL: Final = 10.0

#: What a reload cannot change in a running server: the README lists exactly these.
NEEDS_RESTART: Final = ("socket", "server.user", "server.event_loop", "metrics")


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
        log_level: str | None = None,
    ) -> None:
        self._bound = bound
        self._notifier = notifier or Notifier(None)
        self._loader = loader or functools.partial(config_module.load, config.path)
        self._clock = clock
        self._monotonic = monotonic
        self._log_level = log_level  # the command line's --log-level, which beats the config
        now = clock()
        self.stats = Stats(started=now, config_loaded_at=now)
        self.ref = HandlerRef(Handler(config, now, self.stats))
        self._connections: set[SocketmapConnection] = set()
        self._counted: set[SocketmapConnection] = set()  # those holding a max_connections token
        self._held: dict[SocketmapConnection, int] = {}
        self._held_total = 0
        self._files = watch.ChangeDetector(watch.signatures(config.files))
        self._published_at = float("-inf")  # when today's addresses were last published
        self._next_publish = float("-inf")  # when they change next (a local midnight)
        self._drained: anyio.Event | None = None  # set when the last connection ends at shutdown
        self._stop_requested = False
        self._last_warning: dict[str, float] = {}
        self.metrics_address: str | None = None  # http://HOST:PORT/metrics once serving
        # Event-loop objects: created in run(), inside the loop.
        self._accepting: anyio.CancelScope | None = None
        self._stop_event: anyio.Event | None = None
        self._limiter: anyio.CapacityLimiter | None = None  # one token per counted connection
        self._reloading: anyio.Lock | None = None
        self._accepted_all: anyio.Event | None = None  # set when the accept loops have ended

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

    @property
    def held_bytes(self) -> int:
        """What all connections hold now (unanswered requests, unsent replies), exactly."""
        return sum(connection.held for connection in self._connections)

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
        self._reloading = anyio.Lock()
        self._accepted_all = anyio.Event()
        if self._stop_requested:
            self._stop_event.set()
        for bound in self._bound:
            bound.sock.setblocking(False)  # noqa: FBT003 - socket API
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._accept_all)
                tg.start_soon(self._housekeeping)
                if handle_signals:  # before announcing readiness: an early SIGHUP must reload
                    await tg.start(self._handle_signals)
                if self.config.metrics.enabled:
                    self.metrics_address = await tg.start(
                        functools.partial(
                            metrics.serve, self.config.metrics, self.metrics_body, self.stats
                        )
                    )
                if self.config.metrics.summary_interval > 0:
                    tg.start_soon(self._log_summaries, self.config.metrics.summary_interval)
                for warning in self.config.warnings:
                    log.warning("%s", warning)
                await self._publish(at_start=True)
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

    # --- reloads --------------------------------------------------------------------------------

    async def reload(self, *, trigger: str = "signal") -> bool:
        """Load the configuration again; keep the current one if the new one is broken.

        Reading files happens in a worker thread and the new day's table is built before the
        switch, so lookups never wait for a reload. ``trigger`` (``signal``, ``file``) is
        logged. Reloads never overlap.
        """
        assert self._reloading is not None  # noqa: S101 - created in run()
        async with self._reloading:
            return await self._reload(trigger)

    async def _reload(self, trigger: str) -> bool:
        self._notifier.reloading()
        watched = self.config.files
        before = dict(zip(watched, watch.signatures(watched), strict=True))
        try:
            handler = await anyio.to_thread.run_sync(self._load_handler)
        except Exception as exc:  # a reload never ends the service that is running
            if isinstance(exc, ConfigError):
                reason = "; ".join(exc.problems)
            else:
                log.exception("unexpected error while reloading (a bug)")
                reason = f"unexpected error: {type(exc).__name__} (a bug; see the log)"
            self._files.rebase(tuple(before.values()))  # retried when the files change again
            self.stats.reloads_failed += 1
            self.stats.last_reload_ok = False
            self.stats.last_reload_error = reason
            log.error(  # noqa: TRY400 - the message is the whole story; no traceback wanted
                "reload failed (%s), still serving the previous configuration: %s",
                trigger,
                reason,
            )
            self._notifier.ready("reload failed; serving the previous configuration")
            return False
        old, new = self.config, handler.config
        # A file that changed while it was being read keeps its old signature here, so the
        # watcher sees the difference and loads it again.
        after = watch.signatures(new.files)
        self._files.rebase(
            tuple(before.get(path, sig) for path, sig in zip(new.files, after, strict=True))
        )
        changed = _changes_needing_restart(old, new)
        if changed:
            log.warning(
                "changes to %s take effect at the next restart; the running server keeps the "
                "previous values",
                ", ".join(changed),
            )
        # The level first: the handler, built in the worker thread, asks it only once.
        logs.set_level(self._log_level or new.server.log_level)
        handler.follow_log_level()
        self.ref.handler = handler
        if self._limiter is not None:
            self._limiter.total_tokens = new.server.max_connections
        self.stats.reloads_ok += 1
        self.stats.config_generation += 1
        self.stats.config_loaded_at = self._clock()
        self.stats.last_reload_ok = True
        self.stats.last_reload_error = ""
        for warning in new.warnings:
            log.warning("%s", warning)
        log.info(
            "configuration reloaded from %s (%s; generation %d)",
            new.path or "<config>",
            trigger,
            self.stats.config_generation,
        )
        await self._publish()
        self._notifier.ready(f"serving on {', '.join(self.addresses)}")
        return True

    def _load_handler(self) -> Handler:
        """In a worker thread: read the config and secrets and build today's table."""
        return Handler(self._loader(), self._clock(), self.stats)

    # --- metrics --------------------------------------------------------------------------------

    def metrics_body(self) -> bytes:
        """The current metrics in Prometheus text format."""
        now = self._clock()
        handler = self.ref.handler
        self.stats.forget_dates_before(oldest_valid_date(handler.config, now))
        return metrics.render(self.stats, len(handler.resolver.table(now)))

    async def _log_summaries(self, interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            self.stats.forget_dates_before(oldest_valid_date(self.config, self._clock()))
            log.info("summary %s", self.stats.summary())

    # --- accepting ------------------------------------------------------------------------------

    async def _accept_all(self) -> None:
        assert self._accepting is not None  # noqa: S101 - created in run()
        assert self._accepted_all is not None  # noqa: S101 - created in run()
        try:
            with self._accepting:
                async with anyio.create_task_group() as accepting:
                    for bound in self._bound:
                        accepting.start_soon(self._accept_loop, bound.sock)
        finally:
            self._accepted_all.set()  # every accepted socket is now owned by a connection

    async def _accept_loop(self, listening: socket.socket) -> None:
        """Accept every waiting connection per wake-up, within max_connections.

        What one wake-up accepted is set up together (``_serve_all``): one by one, each setup
        would cost a turn of the event loop, and under load a turn serves every busy
        connection once, so a crowd arriving at once would let later clients (a Postfix
        reconnecting) wait behind it for seconds.
        """
        limiter = self._limiter
        assert limiter is not None  # noqa: S101 - created in run()
        backoff = ACCEPT_BACKOFF[0]
        while True:
            await anyio.wait_readable(listening)
            accepted: list[tuple[socket.socket, SocketmapConnection]] = []
            for _attempt in range(ACCEPT_BATCH):  # attempts, not successes: errors end it too
                try:
                    sock, _ = listening.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    self.stats.accept_errors += 1
                    if exc.errno in _CLIENT_ERRORS:
                        continue
                    # Out of descriptors or memory, or anything unexpected: never die of it,
                    # and never spin. Clients wait in the listen backlog meanwhile.
                    self._warn("accept", "cannot accept connections: %s; retrying", exc.strerror)
                    await self._serve_all(accepted)
                    accepted = []
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, ACCEPT_BACKOFF[1])
                    break
                backoff = ACCEPT_BACKOFF[0]
                connection = self._new_connection()
                # The token is taken after accept(): a loop waiting in accept() must not hold
                # capacity another listener's clients need. At the cap, this accepted client
                # waits unserved (and this loop accepts nothing more) until a token frees.
                try:
                    limiter.acquire_on_behalf_of_nowait(connection)  # no yield when there is room
                except anyio.WouldBlock:
                    await self._serve_all(accepted)
                    accepted = []
                    self._make_room()
                    try:
                        await limiter.acquire_on_behalf_of(connection)
                    except anyio.get_cancelled_exc_class():
                        # Stopping: answer what this client sent, uncounted.
                        await self._serve(sock, self._new_connection(draining=True))
                        raise
                self._counted.add(connection)
                accepted.append((sock, connection))
            await self._serve_all(accepted)

    def _new_connection(self, *, draining: bool = False) -> SocketmapConnection:
        return SocketmapConnection(self, self.ref, self._clock, self._monotonic, draining=draining)

    async def _serve_all(self, accepted: list[tuple[socket.socket, SocketmapConnection]]) -> None:
        """Set up the transports of accepted sockets, all in the same turns of the loop."""
        if len(accepted) == 1:  # the common case: no task to create
            await self._serve(*accepted[0])
        elif accepted:
            with anyio.CancelScope(shield=True):  # each socket must end up owned by a transport
                await asyncio.gather(*(self._serve(sock, conn) for sock, conn in accepted))

    async def _serve(self, sock: socket.socket, connection: SocketmapConnection) -> None:
        """Hand an accepted socket to its protocol; it lives until the connection ends."""
        sock.setblocking(False)  # noqa: FBT003 - socket API
        try:
            with anyio.CancelScope(shield=True):  # the socket must end up owned by a transport
                await asyncio.get_running_loop().connect_accepted_socket(
                    lambda: connection, sock=sock
                )
        except OSError as exc:  # the client vanished before the transport was set up
            log.debug("connection lost while setting it up: %s", exc)
            sock.close()
            self._release(connection)

    # --- what connections report ----------------------------------------------------------------

    def connection_opened(self, connection: SocketmapConnection) -> None:
        """A connection's transport is ready."""
        self._connections.add(connection)
        self.stats.connections_total += 1
        self.stats.connections_open += 1

    def held_changed(self, connection: SocketmapConnection, held: int) -> None:
        """A connection holds notably more or less; close the biggest when all hold too much."""
        self._held_total += held - self._held.get(connection, 0)
        self._held[connection] = held
        if self._held_total > MAX_HELD_BYTES:
            self._relieve_memory()

    def connection_closed(self, connection: SocketmapConnection) -> None:
        """A connection ended, whoever closed it."""
        self._connections.discard(connection)
        self._held_total -= self._held.pop(connection, 0)
        self.stats.connections_open -= 1
        reason = connection.close_reason
        if reason is CloseReason.IDLE:
            self.stats.connections_idle_closed += 1
        elif reason is CloseReason.EVICTED_IDLE:
            self.stats.connections_evicted += 1
        elif reason is CloseReason.EVICTED_HELD:
            self.stats.connections_evicted_held += 1
        self._release(connection)
        if self._drained is not None and not self._connections:
            self._drained.set()

    def _release(self, connection: SocketmapConnection) -> None:
        if connection in self._counted:
            self._counted.discard(connection)
            assert self._limiter is not None  # noqa: S101 - counted connections exist in run()
            self._limiter.release_on_behalf_of(connection)

    # --- making room ----------------------------------------------------------------------------

    def _make_room(self) -> None:
        """At the cap: close the connection idle longest, else the biggest that does not read."""
        open_ = [c for c in self._connections if c.close_reason is None]
        idle = [c for c in open_ if c.idle]
        if idle:
            idlest = min(idle, key=lambda c: c.last_active)
            if self._monotonic() - idlest.last_active >= EVICT_IDLE_AFTER:
                idlest.evict(CloseReason.EVICTED_IDLE)
                log.info("at max_connections: closed the connection idle longest to make room")
                return
        not_reading = [c for c in open_ if not c.reading_replies]
        if not_reading:
            max(not_reading, key=lambda c: c.held).evict(CloseReason.EVICTED_HELD)
            log.info("at max_connections: closed a connection that does not read its replies")

    def _relieve_memory(self) -> None:
        """Close the connections holding the most until the rest hold HELD_AFTER_EVICTION."""
        # Exact again (reports may lag behind drained buffers), and each connection's next
        # report counts from here.
        held = {c: c.measure_held() for c in self._connections if c.close_reason is None}
        self._held = dict(held)
        self._held_total = sum(held.values())
        evicted = 0
        for connection in sorted(held, key=held.__getitem__, reverse=True):
            if self._held_total <= HELD_AFTER_EVICTION:
                break
            self._held_total -= self._held.pop(connection)
            connection.evict(CloseReason.EVICTED_HELD)
            evicted += 1
        if evicted:
            self._warn(
                "memory",
                "connections held more than %d bytes: closed the %d holding the most",
                MAX_HELD_BYTES,
                evicted,
            )

    def _warn(self, topic: str, message: str, *args: object) -> None:
        """Log a warning, at most once per WARN_INTERVAL for each topic."""
        now = self._monotonic()
        if now - self._last_warning.get(topic, -WARN_INTERVAL) >= WARN_INTERVAL:
            self._last_warning[topic] = now
            log.warning(message, *args)

    # --- housekeeping ---------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Idle timeouts, room at the cap, the next day's table, changed files: every tick."""
        while True:
            await anyio.sleep(min(TICK, self.config.server.idle_timeout / 4))
            for step in (
                self._sweep_idle,
                self._prepare_next_day,
                self._publish_if_due,
                self._watch_files,
            ):
                try:
                    await step()
                except Exception:  # housekeeping must never take the lookup service down
                    log.exception("error in housekeeping (%s); serving goes on", step.__name__)

    async def _sweep_idle(self) -> None:
        deadline = self._monotonic() - self.config.server.idle_timeout
        for connection in list(self._connections):
            if connection.last_active < deadline:
                log.debug("closing a connection that made no progress for the idle timeout")
                connection.expire()
        limiter = self._limiter
        if limiter is not None and limiter.statistics().tasks_waiting:
            self._make_room()  # someone waits at the cap: make room if we can

    async def _prepare_next_day(self) -> None:
        """Shortly before local midnight, build the next day's table in a worker thread."""
        now = self._clock()
        resolver = self.ref.handler.resolver
        until = resolver.table(now).valid_until
        if until - now <= PREPARE_AHEAD and not resolver.prepared_for(until):
            await anyio.to_thread.run_sync(resolver.prepare, until)

    async def _publish_if_due(self) -> None:
        """After a local midnight (or a clock stepped back), publish the new addresses."""
        now = self._clock()
        if now >= self._next_publish or now < self._published_at:
            await self._publish()

    async def _publish(self, *, at_start: bool = False) -> None:
        """Write the [publish] files in a worker thread; at start a failure stops the start."""
        config = self.config
        if config.publish.file is None and config.publish.json is None:
            self._next_publish = float("inf")
            return
        now = self._clock()
        try:
            await anyio.to_thread.run_sync(publish.publish, config.publish, config, now)
        except ServerError as exc:
            if at_start:
                raise
            self.stats.publish_failures += 1
            self._warn("publish", "cannot publish today's addresses (retrying): %s", exc)
            return  # retried at the next tick
        self._published_at = now
        self._next_publish = publish.next_change(config, now)
        log.info("published today's addresses (%d identities)", len(config.identities))

    async def _watch_files(self) -> None:
        if not self.config.server.reload_on_change:
            return
        current = await anyio.to_thread.run_sync(watch.signatures, self.config.files)
        if self._files.poll(current):
            log.info("the configuration or a secret file changed: reloading")
            await self.reload(trigger="file")

    # --- signals and shutdown -------------------------------------------------------------------

    async def _handle_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            # Reloads run beside this loop, so that a SIGTERM is never kept waiting behind a
            # slow one (they still run one at a time: reload() holds a lock).
            async with anyio.create_task_group() as reloads:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.info("received SIGHUP: reloading the configuration")
                        reloads.start_soon(functools.partial(self.reload, trigger="signal"))
                    else:
                        log.info("received %s: shutting down", signal.Signals(signum).name)
                        self.stop()

    async def _shut_down(self) -> None:
        await self._stop_listening()
        # Each connection answers what has arrived (what it buffered and what the kernel holds
        # for it), then closes itself; one that does not read its replies is aborted after
        # SHUTDOWN_TIMEOUT.
        for connection in list(self._connections):
            connection.begin_shutdown()
        # Only now: the set may have been empty for a moment while the listeners stopped, and
        # an event set then would end the wait before the connections accepted last.
        self._drained = anyio.Event()
        if self._connections:
            with anyio.move_on_after(SHUTDOWN_TIMEOUT):
                await self._drained.wait()
        for connection in list(self._connections):
            connection.abort()
        with anyio.move_on_after(1.0):  # transports report connection_lost on the next turn
            while self._connections:
                await anyio.lowlevel.checkpoint()

    async def _stop_listening(self) -> None:
        assert self._accepting is not None  # noqa: S101 - created in run()
        assert self._accepted_all is not None  # noqa: S101 - created in run()
        self._accepting.cancel()
        # An accept loop may hold a client it accepted while waiting at the cap: it hands
        # that client to a draining connection as it ends. Wait for that, not for a while.
        await self._accepted_all.wait()
        for bound in self._bound:
            bound.unlink()  # first: new clients now fail fast (and Postfix retries later)
        # Clients already in the listen backlog have connected and may have sent a request:
        # accept them too, answer what they sent, then close. Until the backlog is found
        # empty: a connect() under way when the name went may complete while we serve.
        # A bounded number of passes: a TCP or systemd socket keeps its name, so clients may
        # go on connecting for as long as we accept them.
        for bound in self._bound:
            for _pass in range(SHUTDOWN_ACCEPT_PASSES):
                pending = bound.accept_pending(limit=socket.SOMAXCONN)
                if not pending:
                    break
                for sock in pending:
                    await self._serve(sock, self._new_connection(draining=True))
            bound.close()  # the rest, if any, get a reset: Postfix retries them


def oldest_valid_date(config: Config, now: float) -> dt.date:
    """The oldest local date whose addresses (tagged or not) are still valid at ``now``."""
    return min(
        window.span_at(now, i.timezone, max(i.window, i.tag_window if i.tags else 0)).dates[-1]
        for i in config.identities
    )


def _changes_needing_restart(old: Config, new: Config) -> list[str]:
    """The settings of NEEDS_RESTART that differ between ``old`` and ``new``."""
    values = {
        "socket": (old.socket, new.socket),
        "server.user": (old.server.user, new.server.user),
        "server.event_loop": (old.server.event_loop, new.server.event_loop),
        "metrics": (old.metrics, new.metrics),
    }
    return [key for key in NEEDS_RESTART if values[key][0] != values[key][1]]
