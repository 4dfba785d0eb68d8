"""Fuzz a live server: mutated inputs over real connections while a canary keeps asking.

The server runs as in production (anyio on asyncio, a real unix socket) in a background
thread. Each input gets its own connection and is sent in fuzzer-chosen pieces; then the client
either half-closes and reads every reply to the end (which must parse as whole, valid replies),
or vanishes (close, with or without reading). Every 500 inputs a canary asks for today's
address on a persistent connection and on a new one; it must get OK every time. At the end
the server must have no connection, task or file descriptor left over.

    .venv/bin/python -m fuzz.fuzz_server --inputs 100000 [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path

from fuzz.make_seeds import seeds
from fuzz.random_fuzz import mutate
from fuzz.targets import _IDENTITY, NOW, VALID, _parse_replies
from harness import InProcessServers, RunningServer
from tempmail import netstring
from tempmail.client import Client


def _fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


async def _tasks() -> int:
    return len(asyncio.all_tasks())


def _send_in_pieces(client: Client, data: bytes, rng: random.Random) -> None:
    start = 0
    while start < len(data):
        size = rng.choice([1, 2, 7, 64, 1000, len(data)])
        client.send_raw(data[start : start + size])
        start += size


def one_client(target: str, raw: bytes, rng: random.Random) -> bool:
    """Send ``raw``; then read every reply to the end (True) or vanish (False)."""
    with Client(target, timeout=10) as client:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            _send_in_pieces(client, raw, rng)  # the server may close after a protocol error
        if rng.random() < 0.2:
            return False
        with contextlib.suppress(OSError):
            client.finish_sending()
        _parse_replies(client.read_to_end())  # only whole, valid replies
        return True


def check_canary(target: str, canary: Client) -> None:
    """Today's and yesterday's address, on the old connection and on a new one."""
    recipient = _IDENTITY["recipient"]
    if canary.query("tempmail", VALID[0]).data != recipient:
        raise AssertionError("the canary's persistent connection got a wrong answer")
    with Client(target, timeout=5) as fresh:
        if fresh.query("tempmail", VALID[1]).data != recipient:
            raise AssertionError("a new connection got a wrong answer")


def wait_for_no_leak(running: RunningServer, tasks: int, fds: int) -> None:
    """Connections, tasks and fds must return to their baselines."""
    server, portal = running.server, running.portal
    deadline = time.monotonic() + 10
    while (server.open_connections, portal.call(_tasks), _fds()) != (0, tasks, fds):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"LEAK: connections {server.open_connections}, tasks "
                f"{portal.call(_tasks)} (was {tasks}), fds {_fds()} (was {fds})"
            )
        time.sleep(0.01)


def main() -> int:
    """Run the server and the fuzzing clients."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    corpus = seeds()
    data = {
        "server": {"max_query_length": 128, "idle_timeout": 2.0, "max_connections": 100},
        "identities": {"default": _IDENTITY},
    }
    with (
        tempfile.TemporaryDirectory(prefix="tm-fuzz-") as directory,
        InProcessServers(Path(directory)) as servers,
    ):
        running = servers.start(data, clock=lambda: NOW)
        target = running.target
        tasks, fds = running.portal.call(_tasks), _fds()
        canary = Client(target, timeout=5)
        started = time.monotonic()
        read_to_end = 0
        for index in range(1, args.inputs + 1):
            raw = mutate(rng, corpus)[4:]  # no header: the stream goes to the server as is
            if rng.random() < 0.3:
                raw = netstring.encode(b"tempmail " + raw)
            read_to_end += one_client(target, raw, rng)
            if index % 500 == 0:
                check_canary(target, canary)
            if index % 10_000 == 0:
                rate = index / (time.monotonic() - started)
                print(f"{index} inputs ({rate:.0f}/s)", flush=True)
        canary.close()
        wait_for_no_leak(running, tasks, fds)
        stats = running.server.stats
    elapsed = time.monotonic() - started
    print(
        f"done: {args.inputs} inputs in {elapsed:.1f} s ({args.inputs / elapsed:.0f}/s); "
        f"{read_to_end} read to the end, {args.inputs - read_to_end} vanished; server: "
        f"{stats.connections_total} connections, {stats.lookups} lookups, "
        f"{stats.protocol_errors} protocol errors, {stats.oversized_queries} oversized; "
        "canary always answered; no connection, task or fd left"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
