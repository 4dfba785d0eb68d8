"""Prometheus metrics: the text exposition format, and a minimal HTTP endpoint for it.

The endpoint is off by default (``[metrics] enabled``). It answers ``GET /metrics`` and
nothing else, reads at most a few kilobytes of request, and closes every connection after
one response, so it adds no attack surface worth the name to the lookup service.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import anyio

from tempmail import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import SocketStream

    from tempmail.stats import Stats

log = logging.getLogger(__name__)

#: Largest HTTP request head read from a scrape (a scraper sends a few hundred bytes).
MAX_REQUEST_HEAD: Final = 8192
#: Seconds a scraper has to send its request.
REQUEST_TIMEOUT: Final = 5.0
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def render(stats: Stats, valid_addresses: int) -> str:
    """The metrics in Prometheus text format."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    metric(
        "tempmail_lookups_total",
        "counter",
        "Lookups answered, by result.",
        [
            ('{result="ok"}', stats.lookups_ok),
            ('{result="notfound"}', stats.lookups_notfound),
            ('{result="perm"}', stats.lookups_perm),
        ],
    )
    metric(
        "tempmail_tagged_lookups_total",
        "counter",
        "Successful lookups of tagged addresses.",
        [("", stats.lookups_tagged)],
    )
    metric(
        "tempmail_addresses_served_total",
        "counter",
        "Successful lookups by the local date of the address (dates still in a window).",
        [(f'{{date="{day}"}}', count) for day, count in sorted(stats.served_by_date.items())],
    )
    metric(
        "tempmail_addresses_valid",
        "gauge",
        "Addresses valid right now (every identity, scheme, secret, date and domain).",
        [("", valid_addresses)],
    )
    metric(
        "tempmail_oversized_queries_total",
        "counter",
        "Requests longer than max_query_length, answered NOTFOUND unread.",
        [("", stats.oversized_queries)],
    )
    metric(
        "tempmail_protocol_errors_total",
        "counter",
        "Malformed netstrings (answered PERM, connection closed).",
        [("", stats.protocol_errors)],
    )
    metric(
        "tempmail_connections_total",
        "counter",
        "Connections accepted.",
        [("", stats.connections_total)],
    )
    metric(
        "tempmail_connections_open",
        "gauge",
        "Connections open now.",
        [("", stats.connections_open)],
    )
    metric(
        "tempmail_connections_idle_closed_total",
        "counter",
        "Connections closed after idle_timeout without a complete request.",
        [("", stats.connections_idle_closed)],
    )
    metric(
        "tempmail_connections_evicted_total",
        "counter",
        "Idle connections closed to make room at max_connections.",
        [("", stats.connections_evicted)],
    )
    metric(
        "tempmail_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP), by result.",
        [('{result="ok"}', stats.reloads_ok), ('{result="failed"}', stats.reloads_failed)],
    )
    metric(
        "tempmail_start_time_seconds",
        "gauge",
        "When the server started, in seconds since the epoch.",
        [("", stats.started)],
    )
    metric(
        "tempmail_build_info",
        "gauge",
        "The running version.",
        [(f'{{version="{__version__}"}}', 1)],
    )
    return "\n".join(lines) + "\n"


async def handle_scrape(stream: SocketStream, body: Callable[[], str]) -> None:
    """Answer one HTTP request on ``stream`` and close it."""
    async with stream:
        head = b""
        with anyio.move_on_after(REQUEST_TIMEOUT):
            while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < MAX_REQUEST_HEAD:
                try:
                    head += await stream.receive(MAX_REQUEST_HEAD - len(head))
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
        request_line = head.split(b"\n", 1)[0].strip().split()
        if len(request_line) < 2 or request_line[0] not in (b"GET", b"HEAD"):
            status, payload, kind = "405 Method Not Allowed", "only GET /metrics\n", "text/plain"
        elif request_line[1].split(b"?", 1)[0] != b"/metrics":
            status, payload, kind = "404 Not Found", "try /metrics\n", "text/plain"
        else:
            status, payload, kind = "200 OK", body(), CONTENT_TYPE
        data = payload.encode()
        response = (
            f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        if request_line[:1] != [b"HEAD"]:
            response += data
        try:
            await stream.send(response)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return
