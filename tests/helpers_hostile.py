"""Helpers for the hostile-input, hostile-client and property tests.

Raw sockets, exact reply bytes, and counters of the server's tasks and this process's file
descriptors, so that each test can state precisely what it expects.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers import FakeClock, config_data
from tempmail import generate, netstring, socketmap
from tempmail.config import Identity, parse

if TYPE_CHECKING:
    from harness import RunningServer
    from tempmail.client import Client

#: The fixed instant every hostile test runs at (a Friday noon, UTC).
NOW = FakeClock().now


def request(key: bytes | str, map_name: bytes = b"tempmail") -> bytes:
    """The netstring Postfix sends for ``key``."""
    raw = key.encode() if isinstance(key, str) else key
    return netstring.encode(map_name + b" " + raw)


def reply_wire(text: str) -> bytes:
    """The exact bytes of a reply payload such as ``"NOTFOUND "`` or ``"OK a@b"``."""
    return netstring.encode(text.encode())


NOTFOUND = reply_wire("NOTFOUND ")


def ok(recipient: str) -> bytes:
    return reply_wire(f"OK {recipient}")


def perm_malformed(reason: str) -> bytes:
    return reply_wire(f"PERM malformed netstring: {reason}")


def identity(**overrides: Any) -> Identity:
    return parse(config_data(**overrides)).identities[0]


def addresses(ident: Identity, now: float = NOW) -> list[str]:
    """The valid addresses at ``now``, today's first (generating scheme)."""
    return [str(a) for a in generate.current_addresses(ident, now)]


def address_on(ident: Identity, day: dt.date, scheme: str | None = None) -> str:
    from tempmail import schemes  # noqa: PLC0415

    chosen = schemes.SCHEMES[scheme] if scheme else None
    return str(generate.address_on(ident, day, scheme=chosen))


def today(now: float = NOW) -> dt.date:
    return dt.datetime.fromtimestamp(now, dt.UTC).date()


def still_open(client: Client, ident: Identity) -> bool:
    """Whether the server still answers on ``client`` (a valid lookup must come back OK)."""
    client.send_raw(request(addresses(ident)[0]))
    expected = ok(ident.recipient)
    return client.read_exactly(len(expected)) == expected


def task_count(running: RunningServer) -> int:
    """Tasks alive in the server's event loop (must run inside the loop thread)."""
    return running.portal.call(_all_tasks)


async def _all_tasks() -> int:
    return len(asyncio.all_tasks())


def fd_count() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def baseline(running: RunningServer) -> tuple[int, int]:
    """The server's tasks and this process's fds, before a test opens anything.

    Garbage is collected first: an earlier test's unreferenced socket or pipe would otherwise
    be counted now and closed by the collector later, during the test.
    """
    gc.collect()
    return task_count(running), fd_count()


def settled(running: RunningServer, tasks: int, fds: int) -> Callable[[], bool]:
    """A predicate: no connection left, and no task or fd beyond the baseline.

    "No more than" and not "exactly": the fd count is the whole process's, and the garbage
    collector may close someone else's descriptor while we wait (issue 9: an equality here
    made a test time out now and then).
    """

    def check() -> bool:
        return (
            running.server.open_connections == 0
            and running.server.stats.connections_open == 0
            and task_count(running) <= tasks
            and fd_count() <= fds
        )

    return check


def parse_replies(wire: bytes) -> list[socketmap.Reply]:
    """Split concatenated reply netstrings; fails on anything that is not a valid reply."""
    decoder = socketmap.decoder()
    decoder.feed(wire)
    decoder.feed(b"")
    replies: list[socketmap.Reply] = []
    while True:
        event = decoder.next_event()
        if event is netstring.END:
            return replies
        assert isinstance(event, bytes), event
        replies.append(socketmap.parse_reply(event))
