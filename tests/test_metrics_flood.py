"""The metrics listener under a flood, with the real ``tempmail serve`` and a low open-file limit.

Regression tests for issue 11, point 2: 1,100 connections to the metrics port (open-file limit
1,024) made ``accept()`` fail with EMFILE, the error escaped the task group, the server exited
1 and removed its socket. Here the limit is lowered (``RLIMIT_NOFILE`` in the child only) so
that a few hundred connections reach it: the server keeps answering lookups during the flood,
serves scrapes again after it, and exits 0 on SIGTERM.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import signal
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from harness import ServerProcess, serving_config, write_config
from helpers import SECRET, config_data, wait_until
from tempmail import schemes
from tempmail.client import Client
from tempmail.socketmap import Status

#: The server's open-file limit in the flood test, and the connections thrown at it.
FLOOD_LIMIT = 256
FLOOD_CONNECTIONS = 400
#: How long the flood is held open while lookups are measured.
FLOOD_SECONDS = 3.0
#: The server's open-file limit in the test that exhausts it with lookup connections.
EXHAUST_LIMIT = 64


def today_key() -> str:
    day = dt.datetime.now(dt.UTC).date()
    return f"{schemes.code(schemes.HMAC, day, SECRET.encode(), 8)}@example.org"


@dataclass
class Serving:
    """A ``tempmail serve`` child process and the port its metrics listener got."""

    server: ServerProcess
    metrics_port: int

    @property
    def target(self) -> str:
        return self.server.target

    @property
    def log(self) -> str:
        return self.server.log

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.server.pid}/fd"))  # noqa: PTH208 - names only


@contextmanager
def serve(
    short_dir: Path, open_files: int, *, measured: bool = True, **server: Any
) -> Iterator[Serving]:
    """Run ``tempmail serve`` with metrics on a port the kernel picks, at ``open_files``.

    ``measured=False``: not traced by coverage, for a test that asserts lookup latencies.
    """
    data = serving_config(config_data(), short_dir, "tm", as_process=True)
    data["metrics"] = {"enabled": True, "port": 0, "summary_interval": 0}
    data["server"].update(server)
    path = write_config(short_dir / "config.toml", data)
    with ServerProcess(path, open_files=open_files, measured=measured) as process:
        found = process.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")
        yield Serving(process, int(found[1]))


def stop(serving: Serving) -> int | None:
    """SIGTERM; the exit status (fails if the server takes more than 5 s)."""
    return serving.server.stop(signal.SIGTERM, timeout=5)


def scrape(port: int, timeout: float = 5) -> dict[str, float]:
    """GET /metrics; every sample as ``name{label="value"}`` -> value."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: tempmail\r\n\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n"), head
    values = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def measure_lookups(target: str, seconds: float) -> tuple[list[float], list[str]]:
    """Lookups of today's address, a new connection each (as ``postmap -q``), for ``seconds``.

    Returns each answered lookup's latency in seconds and each failure's description.
    """
    key = today_key()
    latencies: list[float] = []
    failures: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            with Client(target, timeout=5) as client:
                reply = client.query("tempmail", key)
        except OSError as exc:
            failures.append(repr(exc))
            time.sleep(0.01)
            continue
        if (reply.status, reply.data) != (Status.OK, "owner@example.net"):
            failures.append(repr(reply))
            continue
        latencies.append(time.monotonic() - started)
    return latencies, failures


def summary(latencies: list[float]) -> str:
    if len(latencies) < 2:
        return f"{len(latencies)} answered"
    ms = sorted(x * 1000 for x in latencies)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98]
    return f"{len(ms)} answered, p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms"


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100, method="inclusive")[98]


@contextmanager
def raised_own_limit(needed: int) -> Iterator[None]:
    """Let this test process hold ``needed`` more sockets (up to its hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(os.listdir("/proc/self/fd")) + needed + 64  # noqa: PTH208 - names only
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def flood(port: int, count: int, stack: ExitStack) -> int:
    """Open ``count`` connections to ``port`` without waiting for any; the number opened."""
    opened = 0
    for _ in range(count):
        sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.setblocking(False)
        # Non-blocking: the attempts beyond the server's backlog wait in SYN_SENT instead of
        # blocking this test; the ones within it complete, as a flooder's would.
        sock.connect_ex(("127.0.0.1", port))
        opened += 1
    return opened


def test_a_metrics_flood_beyond_the_open_file_limit_does_not_hurt_lookups(
    short_dir: Path,
) -> None:
    """400 metrics connections at a 256-file limit: lookups go on, scrapes resume, exit 0."""
    flooded = serve(short_dir, FLOOD_LIMIT, measured=False)
    with raised_own_limit(FLOOD_CONNECTIONS), flooded as serving:
        baseline, failures = measure_lookups(serving.target, 1.0)
        assert failures == [], failures
        with ExitStack() as flooding:
            opened = flood(serving.metrics_port, FLOOD_CONNECTIONS, flooding)
            during, failures = measure_lookups(serving.target, FLOOD_SECONDS)
            fds_during = serving.open_fds()
        print(
            f"\nbaseline: {summary(baseline)}\nflood of {opened} metrics connections (server "
            f"limit {FLOOD_LIMIT} files, {fds_during} open at the end of the flood): "
            f"{summary(during)}, {len(failures)} failed"
        )
        assert failures == [], f"first failure: {failures[0]}; server log:\n{serving.log}"
        closed_at = time.monotonic()
        values = scrape(serving.metrics_port)
        print(f"first scrape after the flood answered in {time.monotonic() - closed_at:.3f} s")
        status = stop(serving)
    assert len(during) >= 100, summary(during)
    assert p99(during) < 0.1, summary(during)
    assert fds_during < FLOOD_LIMIT
    assert values['tempmail_lookups_total{result="ok"}'] == len(baseline) + len(during)
    assert values["process_max_fds"] == FLOOD_LIMIT
    assert status == 0, serving.log
    assert "Traceback" not in serving.log
    assert not (short_dir / "tm.sock").exists()


def test_metrics_accept_survives_emfile(short_dir: Path) -> None:
    """With every descriptor taken by lookup clients, a scrape waits, then is answered."""
    with serve(short_dir, EXHAUST_LIMIT) as serving, ExitStack() as lookup_clients:
        path = serving.target.removeprefix("unix:")
        for _ in range(EXHAUST_LIMIT + 16):  # more than the server can accept
            lookup_clients.enter_context(socket.socket(socket.AF_UNIX)).connect(path)
        wait_until(lambda: serving.open_fds() >= EXHAUST_LIMIT)
        with socket.create_connection(("127.0.0.1", serving.metrics_port), timeout=15) as scraper:
            scraper.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            serving.server.wait_for("metrics: cannot accept a connection: Too many open files")
            lookup_clients.close()  # the server's descriptors come free
            response = b""
            while chunk := scraper.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.0 200 OK\r\n")
        values = scrape(serving.metrics_port)
        assert values['tempmail_accept_errors_total{listener="metrics"}'] >= 1
        with Client(serving.target, timeout=5) as client:
            assert client.query("tempmail", today_key()).data == "owner@example.net"
        status = stop(serving)
    assert status == 0, serving.log
    assert serving.log.count("metrics: cannot accept a connection") == 1, serving.log
    assert "Traceback" not in serving.log
