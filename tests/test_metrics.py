"""The Prometheus exposition (exact values), the metrics listener's limits, the summary line."""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import functools
import logging
import os
import resource
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from helpers import SECRET, StartServer, config_data
from tempmail import __version__, metrics, schemes
from tempmail.config import MetricsSettings
from tempmail.errors import ServerError
from tempmail.stats import Stats

# --- the exposition ---------------------------------------------------------------------------


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, parsed as Prometheus parses it: (name, labels) -> value."""
    parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            assert isinstance(sample, Sample)
            parsed[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return parsed


def kinds(text: bytes) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(text.decode())}


def test_large_counters_and_fractional_timestamps_are_exact() -> None:
    """A counter of 12,345,678 and a start time of 1764403512.25 come back exactly."""
    stats = Stats(
        lookups_ok=12_345_678,
        lookups_notfound=9_007_199_254_740_993 // 1024,  # large, and exact as a float
        started=1_764_403_512.25,
        config_loaded_at=1_764_403_999.125,
        connections_open=2,
    )
    parsed = samples(metrics.render(stats, valid_addresses=4))
    assert parsed["tempmail_lookups_total", (("result", "ok"),)] == 12_345_678
    assert parsed["tempmail_lookups_total", (("result", "notfound"),)] == 8_796_093_022_208
    assert parsed["tempmail_start_time_seconds", ()] == 1_764_403_512.25
    assert parsed["tempmail_config_last_reload_success_timestamp_seconds", ()] == 1_764_403_999.125
    assert parsed["tempmail_connections_open", ()] == 2
    assert parsed["tempmail_addresses_valid", ()] == 4
    assert parsed["tempmail_build_info", (("version", __version__),)] == 1


def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in a label value survive the round trip."""
    stats = Stats(served_by_date={"2026-11-27": 3, 'a"b\\c\nd': 1})
    text = metrics.render(stats, valid_addresses=0)
    assert b'tempmail_addresses_served_total{date="a\\"b\\\\c\\nd"} 1.0\n' in text
    parsed = samples(text)
    assert parsed["tempmail_addresses_served_total", (("date", "2026-11-27"),)] == 3
    assert parsed["tempmail_addresses_served_total", (("date", 'a"b\\c\nd'),)] == 1


#: Stats fields that are not exposed, and why: free text is no label value.
NOT_EXPOSED = {"last_reload_error"}


def test_every_stats_field_is_exposed() -> None:
    """Each Stats field (but the reload error text) appears as a sample with its own value."""
    values: dict[str, Any] = {}
    for number, field in enumerate(dataclasses.fields(Stats), start=1):
        if field.name in NOT_EXPOSED or field.name == "served_by_date":
            continue
        values[field.name] = False if field.type == "bool" else number * 1000 + 0.5
    stats = Stats(**values, served_by_date={"2026-11-27": 7})
    parsed = samples(metrics.render(stats, valid_addresses=0))
    exposed = {
        name: (family.name, family.label)
        for family in metrics.FAMILIES
        for name in ([family.fields] if isinstance(family.fields, str) else family.fields.values())
    }
    assert set(values) == set(exposed), "a Stats field without a row in metrics.FAMILIES"
    for family in metrics.FAMILIES:
        suffix = "_total" if family.kind == "counter" else ""
        if isinstance(family.fields, str):
            assert parsed[family.name + suffix, ()] == values[family.fields], family.name
        else:
            for label_value, name in family.fields.items():
                key = (family.name + suffix, ((family.label, label_value),))
                assert parsed[key] == values[name], key
    assert parsed["tempmail_addresses_served_total", (("date", "2026-11-27"),)] == 7
    assert parsed["tempmail_config_last_reload_successful", ()] == 0


def test_metric_names_and_types() -> None:
    """The documented names keep their types; only our own families and two process gauges."""
    text = metrics.render(Stats(), valid_addresses=0)
    assert kinds(text) == {
        "tempmail_lookups": "counter",
        "tempmail_tagged_lookups": "counter",
        "tempmail_status_requests": "counter",
        "tempmail_oversized_queries": "counter",
        "tempmail_protocol_errors": "counter",
        "tempmail_connections": "counter",
        "tempmail_connections_open": "gauge",
        "tempmail_connections_idle_closed": "counter",
        "tempmail_connections_evicted": "counter",
        "tempmail_connections_evicted_held": "counter",
        "tempmail_accept_errors": "counter",
        "tempmail_reloads": "counter",
        "tempmail_config_generation": "gauge",
        "tempmail_config_last_reload_success_timestamp_seconds": "gauge",
        "tempmail_config_last_reload_successful": "gauge",
        "tempmail_publish_failures": "counter",
        "tempmail_start_time_seconds": "gauge",
        "tempmail_metrics_requests": "counter",
        "tempmail_metrics_timeouts": "counter",
        "tempmail_addresses_served": "counter",
        "tempmail_addresses_valid": "gauge",
        "tempmail_build_info": "gauge",
        "process_max_fds": "gauge",
        "process_open_fds": "gauge",
    }
    parsed = samples(text)
    assert parsed["process_max_fds", ()] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert 3 <= parsed["process_open_fds", ()] <= parsed["process_max_fds", ()]
    # prometheus_client's global registry (process, platform and gc collectors) stays out
    assert b"python_" not in text
    assert b"process_cpu" not in text


# --- the listener, in process -----------------------------------------------------------------

LOCAL = MetricsSettings(enabled=True, host="127.0.0.1", port=0)
BODY = b"# a body\n"


async def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a new connection and read until the server closes it (5 s at most)."""
    with anyio.fail_after(5):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(request)
            received = b""
            while True:
                try:
                    received += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return received


def parse_response(response: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *fields = head.decode().split("\r\n")
    headers = dict(field.split(": ", 1) for field in fields)
    return status, headers, body


async def start_listener(
    tg: anyio.abc.TaskGroup,
    stats: Stats,
    body: Callable[[], bytes] = lambda: BODY,
    limits: metrics.Limits = metrics.Limits(),  # noqa: B008 - frozen
) -> int:
    address: str = await tg.start(
        functools.partial(metrics.serve, LOCAL, body, stats, limits=limits)
    )
    prefix, _, rest = address.rpartition(":")
    assert prefix == "http://127.0.0.1"
    port, path = rest.split("/", 1)
    assert path == "metrics"
    return int(port)


async def test_get_and_head_metrics() -> None:
    """GET and HEAD /metrics (with a query string) answer the body in the exposition type."""
    stats = Stats()
    async with anyio.create_task_group() as tg:
        port = await start_listener(tg, stats)
        status, headers, body = parse_response(
            await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        )
        assert (status, body) == ("HTTP/1.0 200 OK", BODY)
        assert headers == {
            "Content-Type": CONTENT_TYPE_LATEST,
            "Content-Length": str(len(BODY)),
            "Connection": "close",
        }
        head = await exchange(port, b"HEAD /metrics?x=1 HTTP/1.0\nHost: a\n\n")
        assert parse_response(head) == ("HTTP/1.0 200 OK", headers, b"")
        assert (stats.metrics_scrapes, stats.metrics_rejected) == (2, 0)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("request_bytes", "status", "body"),
    [
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.0 404 Not Found", b"try /metrics\n", id="other-path"),
        pytest.param(b"GET /metricsx HTTP/1.1\r\n\r\n", "HTTP/1.0 404 Not Found", b"try /metrics\n", id="prefix"),
        pytest.param(b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "HTTP/1.0 405 Method Not Allowed", b"GET /metrics\n", id="post"),
        pytest.param(b"GET /metrics\r\n\r\n", "HTTP/1.0 400 Bad Request", b"not an HTTP request\n", id="http-0.9"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", "HTTP/1.0 400 Bad Request", b"not an HTTP request\n", id="tls-hello"),
        pytest.param(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n", "HTTP/1.0 431 Request Header Fields Too Large", b"too long\n", id="head-too-long"),
    ],
)  # fmt: skip
async def test_other_requests_are_rejected(request_bytes: bytes, status: str, body: bytes) -> None:
    """Anything but GET/HEAD /metrics gets a short error and counts as rejected."""
    stats = Stats()
    async with anyio.create_task_group() as tg:
        port = await start_listener(tg, stats)
        answer = parse_response(await exchange(port, request_bytes))
        assert answer[::2] == (status, body)
        if "405" in status:
            assert answer[1]["Allow"] == "GET, HEAD"
        assert (stats.metrics_scrapes, stats.metrics_rejected) == (0, 1)
        tg.cancel_scope.cancel()


async def test_a_failing_body_is_a_500_and_the_listener_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception while rendering answers 500, is logged, and the next scrape works."""
    calls: list[int] = []

    def body() -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return BODY

    stats = Stats()
    async with anyio.create_task_group() as tg:
        port = await start_listener(tg, stats, body)
        first = parse_response(await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n"))
        assert first[::2] == ("HTTP/1.0 500 Internal Server Error", b"see the server's log\n")
        second = parse_response(await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n"))
        assert second[::2] == ("HTTP/1.0 200 OK", BODY)
        assert (stats.metrics_failed, stats.metrics_scrapes) == (1, 1)
        tg.cancel_scope.cancel()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["metrics: cannot render the metrics"]


def test_a_port_in_use_is_a_server_error() -> None:
    """Binding a port in use fails at once with exit status 71 and the cause."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        settings = MetricsSettings(enabled=True, host="127.0.0.1", port=port)
        with pytest.raises(ServerError) as caught:
            anyio.run(metrics.serve, settings, lambda: BODY, Stats())
    assert str(caught.value) == (
        f"metrics.port: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert caught.value.exit_code == 71


def test_an_address_that_is_not_ours_is_a_server_error() -> None:
    """An address of no local interface fails at once and names metrics.host."""
    settings = MetricsSettings(enabled=True, host="192.0.2.1", port=9143)  # TEST-NET-1
    with pytest.raises(ServerError) as caught:
        anyio.run(metrics.serve, settings, lambda: BODY, Stats())
    assert str(caught.value) == (
        "metrics.host: cannot listen on 192.0.2.1:9143: Cannot assign requested address"
    )


SHORT = metrics.Limits(max_concurrent=2, backlog=2, head_timeout=0.3, exchange_timeout=0.6)


async def test_a_silent_client_is_closed_at_the_head_deadline() -> None:
    """A client that connects and sends nothing is closed after head_timeout."""
    stats = Stats()
    async with anyio.create_task_group() as tg:
        port = await start_listener(tg, stats, limits=SHORT)
        started = time.monotonic()
        assert await exchange(port, b"") == b""
        assert 0.25 <= time.monotonic() - started < 2
        assert stats.metrics_timeouts == 1
        tg.cancel_scope.cancel()


async def dribble(stream: anyio.abc.SocketStream, request: bytes) -> None:
    """Send ``request`` one byte per 50 ms, then wait for a response (5 s at most)."""
    with anyio.fail_after(5):
        for byte in request:
            await stream.send(bytes([byte]))
            await anyio.sleep(0.05)
        await stream.receive()


async def test_a_dribbling_client_is_closed_at_the_head_deadline() -> None:
    """A client that sends its request one byte at a time is closed at head_timeout anyway."""
    stats = Stats()
    async with anyio.create_task_group() as tg:
        port = await start_listener(tg, stats, limits=SHORT)
        started = time.monotonic()
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await dribble(stream, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert 0.25 <= time.monotonic() - started < 2
        assert (stats.metrics_timeouts, stats.metrics_scrapes) == (1, 0)
        tg.cancel_scope.cancel()


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (the listener offers no event to wait on), 5 s at most."""
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110 - polling a counter of the code under test
            await anyio.sleep(0.02)


async def test_a_client_that_never_reads_is_closed_at_the_exchange_deadline() -> None:
    """A scraper that never reads a large response frees its slot at exchange_timeout."""
    large = b"x" * (32 << 20)  # more than the socket buffers on both sides hold
    stats = Stats()
    async with anyio.create_task_group() as tg:
        port = await start_listener(tg, stats, lambda: large, SHORT)
        with socket.create_connection(("127.0.0.1", port)) as reader_that_never_reads:
            reader_that_never_reads.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            await wait_for(lambda: stats.metrics_timeouts == 1)
        assert stats.metrics_scrapes == 0
        tg.cancel_scope.cancel()


async def test_at_most_max_concurrent_connections_are_served() -> None:
    """With every slot held by silent clients, a scrape waits until a deadline frees one."""
    stats = Stats()
    async with anyio.create_task_group() as tg:
        port = await start_listener(tg, stats, limits=SHORT)
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        try:
            await anyio.sleep(0.1)  # both accepted: the slots are taken
            started = time.monotonic()
            status, _, body = parse_response(await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n"))
            waited = time.monotonic() - started
        finally:
            for sock in silent:
                sock.close()
        assert (status, body) == ("HTTP/1.0 200 OK", BODY)
        assert 0.15 <= waited < 2, waited  # served once the silent ones hit the 0.3 s deadline
        assert stats.metrics_timeouts == 2
        tg.cancel_scope.cancel()


async def test_connections_beyond_a_burst_are_accepted_at_max_rate() -> None:
    """A burst of max_concurrent is accepted at once, the rest at max_rate per second."""
    stats = Stats()
    paced = metrics.Limits(max_concurrent=2, max_rate=20)
    async with anyio.create_task_group() as tg:
        port = await start_listener(tg, stats, limits=paced)
        started = time.monotonic()
        for _ in range(2):
            await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        burst = time.monotonic() - started
        for _ in range(8):
            await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        paced_part = time.monotonic() - started - burst
        tg.cancel_scope.cancel()
    assert burst < 0.2, burst
    assert 0.35 <= paced_part < 2, paced_part  # 8 at 20 a second: 0.4 s
    assert stats.metrics_scrapes == 10


class FailingListener(socket.socket):
    """A listening socket whose next ``failures`` accept() calls fail with EMFILE."""

    failures = 0

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return super().accept()


@pytest.fixture
def failing_listener() -> Iterator[FailingListener]:
    with FailingListener(socket.AF_INET, socket.SOCK_STREAM) as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        listening.setblocking(False)
        yield listening


async def test_accept_failures_back_off_and_are_logged_once(
    failing_listener: FailingListener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """EMFILE from accept() backs off (growing, bounded), logs one line, then serves again."""
    monkeypatch.setattr(metrics, "BACKOFF_FIRST", 0.02)
    monkeypatch.setattr(metrics, "BACKOFF_MAX", 0.08)
    failing_listener.failures = 6  # pauses of 0.02, 0.04, 0.08, 0.08, 0.08, 0.08 s
    stats = Stats()
    state = metrics._Listener(
        lambda: BODY, stats, metrics.Limits(), anyio.Semaphore(8), metrics._Pace(100, 8)
    )
    port = failing_listener.getsockname()[1]
    async with anyio.create_task_group() as tg:
        tg.start_soon(state.accept_loop, failing_listener, tg)
        started = time.monotonic()
        response = await exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        waited = time.monotonic() - started
        tg.cancel_scope.cancel()
    assert parse_response(response)[::2] == ("HTTP/1.0 200 OK", BODY)
    assert stats.metrics_accept_errors == 6
    assert 0.38 <= waited < 2, waited
    assert [r.getMessage() for r in caplog.records] == [
        (
            "metrics: cannot accept a connection: Too many open files; backing off "
            "(up to 0.08 s between attempts); lookups are not affected"
        )
    ]


def test_throttled_log_says_how_many_lines_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    """One line per LOG_INTERVAL; the next one counts the lines left out meanwhile."""
    now = [100.0]
    throttled = metrics._Throttled(clock=lambda: now[0])
    for step in range(5):  # at 100, 120, 140, 160 and 180 s
        throttled.error("trouble %d", step)
        now[0] += 20
    assert [r.getMessage() for r in caplog.records] == [
        "trouble 0",
        "trouble 3 (2 more since the last message)",
    ]


# --- the endpoint of a running server ---------------------------------------------------------


def today_key() -> str:
    day = dt.datetime.now(dt.UTC).date()
    return f"{schemes.code(schemes.HMAC, day, SECRET.encode(), 8)}@example.org"


def http_get(address: str) -> tuple[str, dict[str, str], bytes]:
    host_port = address.removeprefix("http://").removesuffix("/metrics")
    host, _, port = host_port.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: tempmail\r\n\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return parse_response(response)


def test_metrics_endpoint_of_a_server(start_server: StartServer) -> None:
    """A running server exposes its own counts on the port the kernel chose."""
    data = config_data()
    data["metrics"] = {"enabled": True, "port": 0}
    running = start_server(data)
    address = running.server.metrics_address
    assert address is not None
    assert address.startswith("http://127.0.0.1:")
    running.query(today_key())
    running.query("nobody@example.org")
    running.query("nobody@example.org")
    status, headers, body = http_get(address)
    assert (status, headers["Content-Type"]) == ("HTTP/1.0 200 OK", CONTENT_TYPE_LATEST)
    parsed = samples(body)
    assert parsed["tempmail_lookups_total", (("result", "ok"),)] == 1
    assert parsed["tempmail_lookups_total", (("result", "notfound"),)] == 2
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert parsed["tempmail_addresses_served_total", (("date", today),)] == 1
    assert parsed["tempmail_addresses_valid", ()] == 4  # 2 days x 2 schemes
    assert parsed["tempmail_connections_total", ()] == 3
    assert parsed["tempmail_metrics_requests_total", (("result", "ok"),)] == 0  # counted after
    assert (
        samples(http_get(address)[2])["tempmail_metrics_requests_total", (("result", "ok"),)] == 1
    )


def test_metrics_are_off_by_default(start_server: StartServer) -> None:
    """Without [metrics] enabled, nothing listens."""
    assert start_server().server.metrics_address is None


def test_periodic_summary_line(start_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    """Every summary_interval seconds the server logs one summary line."""
    data = config_data()
    data["metrics"] = {"summary_interval": 0.2}
    with caplog.at_level(logging.INFO, "tempmail.server"):
        running = start_server(data)
        running.query(today_key())
        deadline = time.monotonic() + 5
        while "summary lookups=1 ok=1" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
