"""Fuzz a live server: mutated inputs over real connections while a canary keeps asking.

The server runs as in production (anyio on asyncio, a real unix socket) in a background
thread. Each input gets its own connection and is sent in fuzzer-chosen pieces; then the client
either half-closes and reads every reply to the end (which must parse as whole, valid replies),
or vanishes (close, with or without reading). Every 500 inputs a canary asks for today's
address on a persistent connection and on a new one; it must get OK every time. At the end
the server must have no connection, task or file descriptor left over.

    .venv/bin/python fuzz/fuzz_server.py --inputs 100000 [--seed N]
"""

# ruff: noqa: T201, INP001, S311 - a command-line script; randomness for fuzzing, not crypto

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import anyio
import anyio.from_thread
import tomli_w

sys.path.insert(0, str(Path(__file__).parent))
from make_seeds import seeds
from random_fuzz import mutate
from targets import _IDENTITY, NOW, VALID, _parse_replies

from tempmail import config, listeners, netstring
from tempmail.client import Client
from tempmail.server import Server


def _fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


async def _tasks() -> int:
    return len(asyncio.all_tasks())


def _send_in_pieces(sock: socket.socket, data: bytes, rng: random.Random) -> None:
    start = 0
    while start < len(data):
        size = rng.choice([1, 2, 7, 64, 1000, len(data)])
        sock.sendall(data[start : start + size])
        start += size


def one_client(target: str, raw: bytes, rng: random.Random) -> bool:
    """Send ``raw``; then read every reply to the end (True) or vanish (False)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(target.removeprefix("unix:"))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            _send_in_pieces(sock, raw, rng)  # the server may close after a protocol error
        if rng.random() < 0.2:
            return False
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
        _parse_replies(bytes(received))  # only whole, valid replies
        return True


def check_canary(target: str, canary: Client) -> None:
    """Today's and yesterday's address, on the old connection and on a new one."""
    recipient = _IDENTITY["recipient"]
    if canary.query("tempmail", VALID[0]).data != recipient:
        raise AssertionError("the canary's persistent connection got a wrong answer")
    with Client(target, timeout=5) as fresh:
        if fresh.query("tempmail", VALID[1]).data != recipient:
            raise AssertionError("a new connection got a wrong answer")


def wait_for_no_leak(
    server: Server, portal: anyio.from_thread.BlockingPortal, tasks: int, fds: int
) -> None:
    """Connections, tasks and fds must return to their baselines."""
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
    with tempfile.TemporaryDirectory(prefix="tm-fuzz-") as directory:
        path = Path(directory) / "c.toml"
        data = {
            "server": {"max_query_length": 128, "idle_timeout": 2.0, "max_connections": 100},
            "socket": {"path": str(Path(directory) / "s")},
            "identities": {"default": _IDENTITY},
        }
        path.write_text(tomli_w.dumps(data))
        path.chmod(0o600)
        loaded = config.load(path, {})
        server = Server(loaded, [listeners.bind(loaded.socket)], clock=lambda: NOW)
        with anyio.from_thread.start_blocking_portal(backend="asyncio") as portal:
            future, (target,) = portal.start_task(partial(server.run, handle_signals=False))
            tasks, fds = portal.call(_tasks), _fds()
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
            wait_for_no_leak(server, portal, tasks, fds)
            stats = server.stats
            portal.call(server.stop)
            future.result(timeout=10)
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
