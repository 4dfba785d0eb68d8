"""Operator and crash faults under load: SIGHUP reloads, SIGTERM restarts and SIGKILL crashes.

``tempmail serve`` runs as a subprocess on a unix socket while client threads look up a valid
and an invalid address without pause, each lookup on a new connection (as ``proxymap`` does
after an error). Three phases:

1. ``--reloads`` SIGHUPs, cycling through a changed valid config, broken TOML and a config
   whose inline secret is world-readable; each waits for the server's log line. Goal: every
   lookup answered correctly, none failed.
2. ``--restarts`` graceful restarts (SIGTERM, wait, start again). Requests on accepted
   connections are answered; connections refused while no server listens, and those still
   in the kernel's listen queue when the socket closes ("lost in flight"), are lookups that
   Postfix defers and retries. Goal: 0 wrong answers.
3. ``--kills`` crashes (SIGKILL, start again: the new server removes the stale socket).
   In-flight lookups may fail (Postfix defers them); goal: 0 wrong answers.

    .venv/bin/python -m benchmarks.chaos [--reloads 300] [--restarts 30] [--kills 30] [--clients 4]
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import ServerProcess, one_identity, serving_config, write_config
from tempmail import config, generate, netstring
from tempmail.client import Client
from tempmail.errors import ProtocolError

SECRET = "chaos test secret, long enough to be strong"  # noqa: S105 - a test value
RECIPIENT = "owner@example.net"


class Load(threading.Thread):
    """Looks up a valid and an invalid address, each on a new connection, until stopped."""

    def __init__(self, socket_path: Path, valid: str) -> None:
        super().__init__(daemon=True)
        self.socket_path = socket_path
        self.cases = [(valid, f"OK {RECIPIENT}"), ("nobody@example.org", "NOTFOUND ")]
        self.stop = threading.Event()
        self.outcomes = Counter[str]()
        self.wrong: list[str] = []

    def run(self) -> None:
        """Alternate the two lookups until stopped."""
        index = 0
        while not self.stop.is_set():
            key, expected = self.cases[index % 2]
            index += 1
            self.outcomes[self.lookup(key, expected)] += 1

    def lookup(self, key: str, expected: str) -> str:
        """One lookup: "ok", "wrong", "refused" (no server) or "in-flight" (sent, no reply)."""
        try:
            client = Client(f"unix:{self.socket_path}", timeout=5)
        except OSError:
            time.sleep(0.001)  # no server: Postfix defers; do not spin
            return "refused"
        with client:
            try:
                reply = client.query("tempmail", key)
            except (OSError, ProtocolError):  # closed or reset before a whole reply came
                return "in-flight"
        if reply.wire != netstring.encode(expected.encode()):
            self.wrong.append(f"{key} -> {reply!r}")
            return "wrong"
        return "ok"


def totals(loads: list[Load]) -> Counter[str]:
    """The sum of every client's outcomes."""
    total = Counter[str]()
    for load in loads:
        total.update(load.outcomes)
    return total


def phase(name: str, loads: list[Load], before: Counter[str], extra: str = "") -> dict[str, int]:
    """Print and return the outcomes of one phase."""
    now = totals(loads)
    delta = {k: now[k] - before[k] for k in ("ok", "wrong", "refused", "in-flight")}
    lookups = sum(delta.values())
    print(
        f"{name}: {lookups} lookups: {delta['ok']} answered correctly, {delta['wrong']} wrong, "
        f"{delta['in-flight']} lost in flight, {delta['refused']} refused (no server){extra}",
        flush=True,
    )
    return delta


class Scenario:
    """The config file, the server and the clients of one run."""

    def __init__(self, directory: Path, clients: int) -> None:
        self.directory = directory
        self.socket_path = directory / "s.sock"
        self.tracebacks = 0  # in the logs of every server started so far
        self.config_path = directory / "c.toml"
        self.write(self.good(0))
        loaded = config.load(self.config_path, {})
        valid = str(generate.current_addresses(loaded.identities[0], time.time())[0])
        self.server = self.start_server()
        self.loads = [Load(self.socket_path, valid) for _ in range(clients)]
        for load in self.loads:
            load.start()

    def start_server(self) -> ServerProcess:
        """``tempmail serve`` on the config file; after a crash it replaces the stale socket."""
        return ServerProcess(self.config_path, new_session=True).start()

    def write(self, data: dict[str, Any] | str, mode: int = 0o600) -> None:
        """Replace the config file."""
        if isinstance(data, str):
            self.config_path.write_text(data)
            self.config_path.chmod(mode)
        else:
            write_config(self.config_path, data, mode)

    def good(self, variant: int) -> dict[str, Any]:
        """A valid config; ``variant`` changes a harmless setting."""
        data = {
            "server": {"max_query_length": 256 + variant % 100},
            **one_identity(SECRET, recipient=RECIPIENT),
        }
        return serving_config(data, self.directory, "s", as_process=True)

    def reloads(self, count: int) -> dict[str, int]:
        """SIGHUP ``count`` times: a changed config, broken TOML, a too-open inline secret."""
        before = totals(self.loads)
        started = time.monotonic()
        applied = refused = 0
        for index in range(count):
            if index % 3 == 0:
                self.write(self.good(index))
                applied += 1
            elif index % 3 == 1:
                self.write("[identities.default\nsecret = ")
                refused += 1
            else:
                self.write(self.good(index), mode=0o644)  # inline secret readable by others
                refused += 1
            self.server.signal(signal.SIGHUP)
            if index % 3 == 0:
                self.server.wait_for("configuration reloaded", applied)
            else:
                self.server.wait_for("reload failed", refused)
        self.write(self.good(0))
        extra = f"; {applied} applied, {refused} refused in {time.monotonic() - started:.1f} s"
        return phase(f"{count} reloads", self.loads, before, extra)

    def restarts(self, count: int, signum: signal.Signals) -> dict[str, int]:
        """Stop the server with ``signum`` and start it again, ``count`` times."""
        before = totals(self.loads)
        downtime = []
        for _ in range(count):
            stopped = time.monotonic()
            status = self.server.stop(signum)
            if signum is signal.SIGTERM and status != 0:
                raise RuntimeError(f"SIGTERM: exit status {status}")
            self.tracebacks += self.server.count("Traceback")
            self.server = self.start_server()  # after SIGKILL the socket is stale: replaced
            downtime.append(time.monotonic() - stopped)
        median = sorted(downtime)[len(downtime) // 2]
        extra = f"; downtime median {median:.2f} s, max {max(downtime):.2f} s"
        return phase(f"{count} {signum.name} restarts", self.loads, before, extra)

    def stop(self) -> None:
        """Stop the clients and the server."""
        for load in self.loads:
            load.stop.set()
        for load in self.loads:
            load.join(timeout=10)
        self.server.stop()
        self.tracebacks += self.server.count("Traceback")


def main() -> int:
    """Run the three phases; exit 1 on a wrong answer, a failed lookup during reloads or a crash."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reloads", type=int, default=300)
    parser.add_argument("--restarts", type=int, default=30)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tm-chaos-") as directory:
        scenario = Scenario(Path(directory), args.clients)
        try:
            reloads = scenario.reloads(args.reloads)
            restarts = scenario.restarts(args.restarts, signal.SIGTERM)
            kills = scenario.restarts(args.kills, signal.SIGKILL)
        finally:
            scenario.stop()
    wrong = [w for load in scenario.loads for w in load.wrong]
    tracebacks = scenario.tracebacks
    print(f"wrong answers: {len(wrong)} {wrong[:5]}; tracebacks in the server log: {tracebacks}")
    failed = reloads["in-flight"] + reloads["refused"] + tracebacks
    return 1 if wrong or failed or restarts["wrong"] or kills["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
