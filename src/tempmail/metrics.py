"""Prometheus metrics: the server's counters exposed exactly, on a listener that spares lookups.

Two parts:

* **The exposition.** :func:`render` hands the shared :class:`~tempmail.stats.Stats` to
  prometheus_client through a collector of our own, in a registry of our own (never the global
  one), and returns the text format: exact numbers (``12345678``, ``1764403512.25``), escaped
  label values, and :data:`CONTENT_TYPE` to match. Which Stats field becomes which metric is
  the table :data:`FAMILIES`: a new counter is one entry.
* **The listener.** :func:`serve` answers ``GET`` and ``HEAD /metrics`` on a TCP port. It runs
  in the event loop that answers Postfix, so nothing a client of it does may cost the lookups
  more than a bounded share of that loop, or kill it:

  - at most :attr:`Limits.max_concurrent` connections are served at once. Beyond that the
    listener does not accept: clients wait in a listen backlog of :attr:`Limits.backlog`
    (kernel memory: no file descriptor of ours, no event-loop time), and the kernel drops
    further connection attempts until there is room. Accepting and closing at once instead
    would spend a descriptor and event-loop time on every connection of a flood and would
    not let a legitimate scraper in any sooner (see SECURITY.md);
  - at most :attr:`Limits.max_rate` connections are accepted a second (in bursts of
    ``max_concurrent``), so that a client scraping in a loop cannot take the event loop from
    the lookups;
  - ``accept()`` failures (EMFILE, ENFILE, ENOBUFS, ENOMEM and anything else) never end the
    listener: it backs off, with a growing delay up to :data:`BACKOFF_MAX`, and logs at most
    one line per :data:`LOG_INTERVAL`;
  - every connection has a deadline for its request head and one for the whole exchange; at
    most :attr:`Limits.max_head` bytes of request are read, from the socket itself (no
    buffering beyond the kernel's);
  - one request per connection, then close.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import resource
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

import anyio
from anyio.abc import SocketAttribute
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from tempmail import version
from tempmail.errors import ServerError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from tempmail.config import MetricsSettings
    from tempmail.stats import Stats

log = logging.getLogger(__name__)

#: The content type of :func:`render`'s output (the Prometheus text format).
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# --- the exposition ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family and the Stats field(s) it is read from.

    ``fields`` is a Stats field name, or, for a family with one label, a mapping from each
    label value to a field. Counters are named without ``_total``: prometheus_client adds it.
    """

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    fields: str | Mapping[str, str]
    label: str = ""

    def build(self, stats: Stats) -> Metric:
        """The family with the current values of ``stats``."""
        family: CounterMetricFamily | GaugeMetricFamily
        if isinstance(self.fields, str):
            value = _number(stats, self.fields)
            if self.kind == "counter":
                return CounterMetricFamily(self.name, self.help, value=value)
            return GaugeMetricFamily(self.name, self.help, value=value)
        if self.kind == "counter":
            family = CounterMetricFamily(self.name, self.help, labels=[self.label])
        else:
            family = GaugeMetricFamily(self.name, self.help, labels=[self.label])
        for label_value, name in self.fields.items():
            family.add_metric([label_value], _number(stats, name))
        return family


def _number(stats: Stats, name: str) -> float:
    value = getattr(stats, name)
    # bool is an int: True/False become 1/0, as Prometheus's own ..._successful gauges
    return float(value)


#: Every Stats field an operator can act on, as Prometheus metrics. ``last_reload_error`` is
#: left out on purpose: free text is no label value (its cardinality is unbounded and it can
#: name files); the status request (status.py) reports it. ``served_by_date`` is exposed per
#: date by the collector itself.
FAMILIES: Final = (
    Family(
        "tempmail_lookups",
        "counter",
        "Lookups answered, by result.",
        {"ok": "lookups_ok", "notfound": "lookups_notfound", "perm": "lookups_perm"},
        "result",
    ),
    Family(
        "tempmail_tagged_lookups",
        "counter",
        "Successful lookups of tagged addresses.",
        "lookups_tagged",
    ),
    Family(
        "tempmail_status_requests",
        "counter",
        "Status requests answered (health probes, tempmail reload).",
        "status_requests",
    ),
    Family(
        "tempmail_oversized_queries",
        "counter",
        "Requests longer than max_query_length, answered NOTFOUND unread.",
        "oversized_queries",
    ),
    Family(
        "tempmail_protocol_errors",
        "counter",
        "Malformed netstrings (answered PERM, connection closed).",
        "protocol_errors",
    ),
    Family("tempmail_connections", "counter", "Connections accepted.", "connections_total"),
    Family("tempmail_connections_open", "gauge", "Connections open now.", "connections_open"),
    Family(
        "tempmail_connections_idle_closed",
        "counter",
        "Connections closed after idle_timeout without a complete request.",
        "connections_idle_closed",
    ),
    Family(
        "tempmail_connections_evicted",
        "counter",
        "Idle connections closed to make room at max_connections.",
        "connections_evicted",
    ),
    Family(
        "tempmail_connections_evicted_held",
        "counter",
        "Connections closed because all connections together held too many unanswered "
        "request or unread reply bytes (the ones holding the most first).",
        "connections_evicted_held",
    ),
    Family(
        "tempmail_accept_errors",
        "counter",
        "accept() failures (EMFILE, ENFILE, ...) after which the listener backed off, by listener.",
        {"socketmap": "accept_errors", "metrics": "metrics_accept_errors"},
        "listener",
    ),
    Family(
        "tempmail_reloads",
        "counter",
        "Configuration reloads, by result.",
        {"ok": "reloads_ok", "failed": "reloads_failed"},
        "result",
    ),
    Family(
        "tempmail_config_generation",
        "gauge",
        "The configuration being served: 1 at start, +1 per successful reload.",
        "config_generation",
    ),
    Family(
        "tempmail_config_last_reload_success_timestamp_seconds",
        "gauge",
        "When the configuration being served was loaded, in seconds since the epoch.",
        "config_loaded_at",
    ),
    Family(
        "tempmail_config_last_reload_successful",
        "gauge",
        "Whether the last reload succeeded (1) or failed and the previous one serves (0).",
        "last_reload_ok",
    ),
    Family(
        "tempmail_publish_failures",
        "counter",
        "[publish] files that could not be written (logged; retried every second).",
        "publish_failures",
    ),
    Family(
        "tempmail_start_time_seconds",
        "gauge",
        "When the server started, in seconds since the epoch.",
        "started",
    ),
    Family(
        "tempmail_metrics_requests",
        "counter",
        "Requests to this metrics listener, by result: ok (GET/HEAD /metrics answered), "
        "rejected (400, 404, 405, 431), failed (500: rendering failed).",
        {"ok": "metrics_scrapes", "rejected": "metrics_rejected", "failed": "metrics_failed"},
        "result",
    ),
    Family(
        "tempmail_metrics_timeouts",
        "counter",
        "Metrics connections closed at a deadline (request head or whole exchange).",
        "metrics_timeouts",
    ),
)


class StatsCollector(Collector):
    """The server's counters at the moment of collection, as Prometheus metric families."""

    def __init__(self, stats: Stats, valid_addresses: int) -> None:
        self._stats = stats
        self._valid_addresses = valid_addresses

    def collect(self) -> Iterator[Metric]:
        """Every family of :data:`FAMILIES`, then the ones not read from a plain field."""
        for family in FAMILIES:
            yield family.build(self._stats)
        served = CounterMetricFamily(
            "tempmail_addresses_served",
            "Successful lookups by the local date of the address (dates still in a window).",
            labels=["date"],
        )
        for day, count in sorted(self._stats.served_by_date.items()):
            served.add_metric([day], count)
        yield served
        yield GaugeMetricFamily(
            "tempmail_addresses_valid",
            "Addresses valid right now (every identity, scheme, secret, date and domain).",
            value=self._valid_addresses,
        )
        build = GaugeMetricFamily("tempmail_build_info", "The running version.", labels=["version"])
        build.add_metric([version()], 1)
        yield build
        yield from _descriptors()


def _descriptors() -> Iterator[Metric]:
    """Open file descriptors and their limit, under the standard ``process_`` names.

    The headroom between the two is what a connection flood eats (EMFILE). prometheus_client's
    ProcessCollector is not used: it reports nothing at all where /proc/stat is hidden (the
    systemd unit's ProcSubset=pid), while /proc/self/fd stays readable there.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = math.inf if soft == resource.RLIM_INFINITY else float(soft)
    yield GaugeMetricFamily("process_max_fds", "Maximum number of open file descriptors.", limit)
    try:
        # The count includes the descriptor that lists the directory, as ProcessCollector's.
        open_fds = len(os.listdir("/proc/self/fd"))  # noqa: PTH208 - names only, no Paths
    except OSError:  # out of descriptors right now, or no /proc: leave the sample out
        return
    yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", open_fds)


def render(stats: Stats, valid_addresses: int) -> bytes:
    """The metrics in the Prometheus text format (:data:`CONTENT_TYPE`)."""
    registry = CollectorRegistry(auto_describe=False)  # ours: nothing global leaks in
    registry.register(StatsCollector(stats, valid_addresses))
    return generate_latest(registry)


# --- the listener -----------------------------------------------------------------------------

#: The first pause after a failed accept(); it doubles with each failure in a row.
BACKOFF_FIRST: Final = 0.05
#: The longest pause between accept() attempts while they keep failing.
BACKOFF_MAX: Final = 1.0
#: At most one log line per this many seconds about failing accepts or scrapes.
LOG_INTERVAL: Final = 60.0
#: After the response, how long to read (and drop) what the client still sends, so that
#: closing does not reset the connection before the client has read the response.
LINGER: Final = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What one metrics client may cost; the defaults suit Prometheus (tests shorten them)."""

    #: Connections served at once. Prometheus scrapes one at a time per target; a few more
    #: leave room for a second Prometheus and a curl.
    max_concurrent: int = 8
    #: Connections the kernel keeps waiting for us; further connection attempts are dropped
    #: by the kernel (the client retries its SYN) until there is room.
    backlog: int = 8
    #: Seconds from accept to the end of the request head (Prometheus sends it at once).
    head_timeout: float = 5.0
    #: Seconds from accept to the end of the response (Prometheus' default scrape_timeout is
    #: 10 s; a response of a few kilobytes fits in the socket buffer at once).
    exchange_timeout: float = 10.0
    #: Bytes of request head read at most (a scrape sends a few hundred).
    max_head: int = 4096
    #: Connections accepted per second, in bursts of up to ``max_concurrent``. Each one costs
    #: the event loop that answers Postfix 0.3 ms (a 404) to 1 ms (a scrape), and up to 1.9 ms
    #: at this pace (cold caches): unpaced, one local client scraping in a loop raised the
    #: lookups' p50 from 0.24 to 1.3 ms (measured). 10 a second is at most 2 % of the loop,
    #: and far more than Prometheus needs (one scrape per 15 to 60 s).
    max_rate: float = 10.0


class _Throttled:
    """Logs an error at most once per LOG_INTERVAL, saying how many were left out."""

    __slots__ = ("_clock", "_last", "_left_out")

    def __init__(self, clock: Callable[[], float] = anyio.current_time) -> None:
        self._clock = clock
        self._last = -math.inf
        self._left_out = 0

    def error(self, message: str, *args: object, exc_info: BaseException | None = None) -> None:
        """Log ``message`` unless a line was logged less than LOG_INTERVAL ago."""
        now = self._clock()
        if now - self._last < LOG_INTERVAL:
            self._left_out += 1
            return
        if self._left_out:
            message += f" ({self._left_out} more since the last message)"
        self._last, self._left_out = now, 0
        log.error(message, *args, exc_info=exc_info)


#: How a request counts: tempmail_metrics_requests_total{result=...}.
_Result = Literal["ok", "rejected", "failed"]


class _Pace:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = -math.inf

    async def take(self) -> None:
        """Wait until a token is there, and take it."""
        while True:
            now = anyio.current_time()
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await anyio.sleep((1 - self._tokens) / self._rate)


@dataclass(slots=True)
class _Listener:
    """The state shared by the accept loops of one :func:`serve`."""

    body: Callable[[], bytes]
    stats: Stats
    limits: Limits
    slots: anyio.Semaphore
    pace: _Pace
    throttled: _Throttled = field(default_factory=_Throttled)

    async def accept_loop(self, listening: socket.socket, tg: anyio.abc.TaskGroup) -> None:
        """Accept while there is a free slot; back off while accept() fails."""
        delay = 0.0
        while True:
            await self.pace.take()
            await self.slots.acquire()
            try:
                connection = await _accept(listening)
            except OSError as exc:
                self.slots.release()
                self.stats.metrics_accept_errors += 1
                delay = min(BACKOFF_MAX, max(BACKOFF_FIRST, delay * 2))
                self.throttled.error(
                    "metrics: cannot accept a connection: %s; backing off (up to %g s between "
                    "attempts); lookups are not affected",
                    exc.strerror or exc,
                    BACKOFF_MAX,
                )
                await anyio.sleep(delay)
                continue
            except BaseException:
                self.slots.release()
                raise
            delay = 0.0
            tg.start_soon(self.exchange, connection)

    async def exchange(self, connection: socket.socket) -> None:
        """One request and its response within the deadlines; then close and free the slot."""
        answered = False
        try:
            with connection, anyio.move_on_after(self.limits.exchange_timeout) as whole:
                with anyio.move_on_after(self.limits.head_timeout) as head_wait:
                    head = await _read_head(connection, self.limits.max_head)
                if head_wait.cancelled_caught:
                    self.stats.metrics_timeouts += 1
                    return
                if head is None:  # the client left before finishing its request
                    return
                response, result = self._respond(head)
                await _send_all(connection, response)
                self._count(result)
                answered = True
                await _linger(connection, self.limits.max_head)
            if whole.cancelled_caught and not answered:
                self.stats.metrics_timeouts += 1
        except OSError:  # the client reset the connection: nothing to answer
            pass
        except Exception as exc:  # noqa: BLE001 - a scrape must never end the listener
            self.throttled.error("metrics: error while answering a request", exc_info=exc)
        finally:
            self.slots.release()

    def _respond(self, head: bytes) -> tuple[bytes, _Result]:
        """The response to a request head, and how it counts."""
        if len(head) > self.limits.max_head:
            return _response("431 Request Header Fields Too Large", b"too long\n"), "rejected"
        request_line = head.split(b"\n", 1)[0].rstrip(b"\r").split(b" ")
        if len(request_line) != 3 or not request_line[2].startswith(b"HTTP/"):
            return _response("400 Bad Request", b"not an HTTP request\n"), "rejected"
        method, target, _ = request_line
        if method not in {b"GET", b"HEAD"}:
            allow = "Allow: GET, HEAD\r\n"
            return _response("405 Method Not Allowed", b"GET /metrics\n", extra=allow), "rejected"
        if target.split(b"?", 1)[0] != b"/metrics":
            return _response("404 Not Found", b"try /metrics\n"), "rejected"
        try:
            payload = self.body()
        except Exception as exc:  # noqa: BLE001 - answer 500 and log, never end the listener
            self.throttled.error("metrics: cannot render the metrics", exc_info=exc)
            return _response("500 Internal Server Error", b"see the server's log\n"), "failed"
        return _response("200 OK", payload, CONTENT_TYPE, head_only=method == b"HEAD"), "ok"

    def _count(self, result: _Result) -> None:
        if result == "ok":
            self.stats.metrics_scrapes += 1
        elif result == "rejected":
            self.stats.metrics_rejected += 1
        else:
            self.stats.metrics_failed += 1


def _response(
    status: str,
    payload: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    extra: str = "",
    head_only: bool = False,
) -> bytes:
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(payload)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + payload


async def _accept(listening: socket.socket) -> socket.socket:
    while True:
        await anyio.wait_readable(listening)
        try:
            connection, _ = listening.accept()
        except (BlockingIOError, InterruptedError):  # another loop or a vanished client
            continue
        connection.setblocking(False)  # noqa: FBT003 - socket API
        return connection


async def _recv(connection: socket.socket, size: int) -> bytes:
    while True:
        try:
            return connection.recv(size)
        except (BlockingIOError, InterruptedError):
            await anyio.wait_readable(connection)


async def _read_head(connection: socket.socket, max_head: int) -> bytes | None:
    """The request head (up to its blank line), or None if the client closed first.

    Returns more than ``max_head`` bytes (at most one more) when the head is longer, and reads
    from the socket only what it returns: nothing is buffered beyond the kernel's buffer.
    """
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) <= max_head:
        chunk = await _recv(connection, max_head + 1 - len(head))
        if not chunk:
            return None
        head += chunk
    return head


async def _send_all(connection: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[connection.send(view) :]
        except (BlockingIOError, InterruptedError):
            await anyio.wait_writable(connection)


async def _linger(connection: socket.socket, max_bytes: int) -> None:
    """Half-close, then drop up to ``max_bytes`` the client still sends, for up to LINGER."""
    connection.shutdown(socket.SHUT_WR)
    with anyio.move_on_after(LINGER):
        while max_bytes > 0:
            chunk = await _recv(connection, max_bytes)
            if not chunk:
                return
            max_bytes -= len(chunk)


async def serve(
    settings: MetricsSettings,
    body: Callable[[], bytes],
    stats: Stats,
    *,
    limits: Limits = Limits(),  # frozen: one shared default is safe
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``body()`` at ``/metrics`` until cancelled; never fails once listening.

    ``task_status.started`` reports ``http://HOST:PORT/metrics`` with the bound port (the
    configured one, or the one the kernel chose for port 0). Raises :class:`ServerError` only
    when the address cannot be bound.
    """
    try:
        listener = await anyio.create_tcp_listener(
            local_host=settings.host, local_port=settings.port, backlog=limits.backlog
        )
    except OSError as exc:
        key = (
            "metrics.host"
            if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL
            else "metrics.port"
        )
        raise ServerError(
            f"{key}: cannot listen on {_host(settings.host)}:{settings.port}: {exc.strerror or exc}"
        ) from None
    port = listener.listeners[0].extra(SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
    address = f"http://{_host(settings.host)}:{port}/metrics"
    slots = anyio.Semaphore(limits.max_concurrent)
    state = _Listener(body, stats, limits, slots, _Pace(limits.max_rate, limits.max_concurrent))
    async with listener, anyio.create_task_group() as tg:
        for each in listener.listeners:
            raw = each.extra(SocketAttribute.raw_socket)  # noqa: S610 - anyio, not Django
            tg.start_soon(state.accept_loop, raw, tg)
        log.info("metrics on %s", address)
        task_status.started(address)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
