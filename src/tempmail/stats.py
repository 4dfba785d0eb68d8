"""Counters of what the server did, shared by the handler, the server and the metrics endpoint.

Plain integers in one object: the event loop is single-threaded, so no locks are needed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(slots=True)
class Stats:
    """Monotonic counters, the open-connection gauge, and per-date lookup counts."""

    lookups_ok: int = 0
    lookups_notfound: int = 0
    lookups_perm: int = 0
    lookups_tagged: int = 0  # of lookups_ok, those that matched a tagged address
    status_requests: int = 0  # health probes and `tempmail reload` asking what is served
    oversized_queries: int = 0  # answered NOTFOUND without being read
    protocol_errors: int = 0  # malformed netstrings: PERM, then the connection is closed
    connections_total: int = 0
    connections_open: int = 0
    connections_idle_closed: int = 0
    connections_evicted: int = 0  # idle connections closed to make room at max_connections
    # Connections closed because all connections together held too many unanswered request
    # or unread reply bytes: the ones holding the most go first.
    connections_evicted_held: int = 0
    accept_errors: int = 0  # accept() failures on the socketmap listeners (EMFILE, ENFILE, ...)
    reloads_ok: int = 0
    reloads_failed: int = 0
    # The configuration being served: 1 for the one loaded at start, +1 per successful reload.
    config_generation: int = 1
    config_loaded_at: float = 0.0  # epoch seconds when that configuration was loaded
    # Whether the most recent reload (SIGHUP or a changed file) succeeded; when it failed, the
    # previous configuration keeps serving and last_reload_error says why (no secret, no path
    # given for a secret: see config/identities.py).
    last_reload_ok: bool = True
    last_reload_error: str = ""
    publish_failures: int = 0  # [publish] files that could not be written (retried each tick)
    # Distinct dates whose address was looked up successfully today (key: ISO date), so an
    # operator sees whether yesterday's address is still in use.
    served_by_date: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    # The metrics listener's own counts (metrics.py).
    metrics_scrapes: int = 0  # GET or HEAD /metrics answered
    metrics_rejected: int = 0  # other requests, answered 400, 404, 405 or 431
    metrics_failed: int = 0  # rendering failed: answered 500 and logged
    metrics_timeouts: int = 0  # closed at a deadline (request head or whole exchange)
    metrics_accept_errors: int = 0  # accept() failures (EMFILE, ENFILE, ...): backed off

    @property
    def lookups(self) -> int:
        """All answered lookups."""
        return self.lookups_ok + self.lookups_notfound + self.lookups_perm

    def served(self, day: dt.date) -> None:
        """Count a successful lookup of the address of ``day``."""
        key = day.isoformat()
        self.served_by_date[key] = self.served_by_date.get(key, 0) + 1

    def forget_dates_before(self, oldest: dt.date) -> None:
        """Drop per-date counts that left every window (keeps the dict small)."""
        cutoff = oldest.isoformat()
        for key in [k for k in self.served_by_date if k < cutoff]:
            del self.served_by_date[key]

    def summary(self) -> str:
        """One log line."""
        return (
            f"lookups={self.lookups} ok={self.lookups_ok} notfound={self.lookups_notfound} "
            f"perm={self.lookups_perm} tagged={self.lookups_tagged} "
            f"oversized={self.oversized_queries} protocol_errors={self.protocol_errors} "
            f"connections_open={self.connections_open} connections_total={self.connections_total} "
            f"evicted={self.connections_evicted} "
            f"reloads={self.reloads_ok} reload_failures={self.reloads_failed}"
        )
