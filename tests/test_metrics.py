"""Counters, the Prometheus endpoint and the periodic summary line."""

from __future__ import annotations

import datetime as dt
import http.client
import logging
import socket
import time

import pytest

from helpers import SECRET, StartServer, config_data
from tempmail import __version__, metrics, schemes
from tempmail.stats import Stats


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def today_key() -> str:
    day = dt.datetime.now(dt.UTC).date()
    return f"{schemes.code(schemes.HMAC, day, SECRET.encode(), 8)}@example.org"


def test_render_prometheus_text() -> None:
    stats = Stats(
        lookups_ok=3, lookups_notfound=5, lookups_perm=1, connections_open=2, started=1.5e9
    )
    stats.served(dt.date(2026, 11, 27))
    text = metrics.render(stats, valid_addresses=4)
    assert "# TYPE tempmail_lookups_total counter\n" in text
    assert 'tempmail_lookups_total{result="ok"} 3\n' in text
    assert 'tempmail_lookups_total{result="notfound"} 5\n' in text
    assert 'tempmail_lookups_total{result="perm"} 1\n' in text
    assert 'tempmail_addresses_served_total{date="2026-11-27"} 1\n' in text
    assert "tempmail_addresses_valid 4\n" in text
    assert "tempmail_connections_open 2\n" in text
    assert "tempmail_start_time_seconds 1.5e+09\n" in text
    assert f'tempmail_build_info{{version="{__version__}"}} 1\n' in text
    for line in text.splitlines():  # every sample line is "name{labels} number"
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value)
            assert name.startswith("tempmail_")


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        connection.close()


def test_metrics_endpoint(start_server: StartServer) -> None:
    port = free_port()
    data = config_data()
    data["metrics"] = {"enabled": True, "port": port}
    running = start_server(data)
    assert running.server.metrics_address == f"http://127.0.0.1:{port}/metrics"
    running.query(today_key())
    running.query("nobody@example.org")
    running.query("nobody@example.org")
    status, kind, body = get(port, "/metrics")
    assert (status, kind) == (200, metrics.CONTENT_TYPE)
    assert 'tempmail_lookups_total{result="ok"} 1\n' in body
    assert 'tempmail_lookups_total{result="notfound"} 2\n' in body
    assert f'tempmail_addresses_served_total{{date="{dt.datetime.now(dt.UTC).date()}"}} 1' in body
    assert "tempmail_addresses_valid 4\n" in body  # 2 days x 2 schemes
    assert "tempmail_connections_total 3\n" in body
    assert get(port, "/")[0] == 404
    assert get(port, "/metrics", "POST")[0] == 405
    assert get(port, "/metrics", "HEAD")[::2] == (200, "")


def test_metrics_are_off_by_default(start_server: StartServer) -> None:
    assert start_server().server.metrics_address is None


def test_periodic_summary_line(start_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    data = config_data()
    data["metrics"] = {"summary_interval": 0.2}
    with caplog.at_level(logging.INFO, "tempmail.server"):
        running = start_server(data)
        running.query(today_key())
        deadline = time.monotonic() + 5
        while "summary lookups=1 ok=1" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
