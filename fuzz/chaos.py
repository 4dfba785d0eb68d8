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

    .venv/bin/python fuzz/chaos.py [--reloads 300] [--restarts 30] [--kills 30] [--clients 4]
"""

# ruff: noqa: T201, INP001 - a command-line script that prints its figures

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import tomli_w

from tempmail import config, generate, netstring

SECRET = "chaos test secret, long enough to be strong"  # noqa: S105 - a test value
RECIPIENT = "owner@example.net"


def identity() -> dict[str, Any]:
    """The identity every config in this script uses."""
    return {
        "domain": "example.org",
        "recipient": RECIPIENT,
        "secret": SECRET,
        "scheme": "hmac",
        "length": 8,
        "window": 2,
        "timezone": "UTC",
    }


class Server:
    """A ``tempmail serve`` subprocess and a thread that counts its reload log lines."""

    def __init__(self, config_path: Path, socket_path: Path) -> None:
        self.config_path = config_path
        self.socket_path = socket_path
        self.process: subprocess.Popen[str] | None = None
        self.log = Counter[str]()
        self.changed = threading.Condition()

    def start(self) -> float:
        """Start the server; the seconds until it answers."""
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tempmail", "-c", str(self.config_path), "serve"],
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read_log, args=(self.process,), daemon=True).start()
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError("the server exited at start")
            time.sleep(0.005)
        return time.monotonic() - started

    def _answers(self) -> bool:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(self.socket_path))
            sock.sendall(netstring.encode(b"tempmail probe@example.org"))
            return sock.recv(64) == b"9:NOTFOUND ,"
        return False

    def _read_log(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None  # noqa: S101 - Popen(stderr=PIPE)
        for line in process.stderr:
            for needle in ("configuration reloaded", "reload failed", "Traceback", "ERROR"):
                if needle in line:
                    with self.changed:
                        self.log[needle] += 1
                        self.changed.notify_all()

    def wait_for(self, needle: str, count: int) -> None:
        """Until the log has shown ``needle`` ``count`` times."""
        with self.changed:
            if not self.changed.wait_for(lambda: self.log[needle] >= count, timeout=10):
                raise RuntimeError(f"the server did not log {needle!r} in time")

    def signal(self, signum: int) -> None:
        """Send a signal to the server."""
        assert self.process is not None  # noqa: S101 - started
        self.process.send_signal(signum)

    def wait(self) -> int:
        """Wait for the server to exit."""
        assert self.process is not None  # noqa: S101 - started
        return self.process.wait(timeout=10)


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
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                time.sleep(0.001)  # no server: Postfix defers; do not spin
                return "refused"
            try:
                sock.sendall(netstring.encode(f"tempmail {key}".encode()))
                reply = b""
                while not reply.endswith(b","):
                    chunk = sock.recv(256)
                    if not chunk:
                        return "in-flight"
                    reply += chunk
            except OSError:
                return "in-flight"
        if reply != netstring.encode(expected.encode()):
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
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.socket_path = directory / "s"
        self.config_path = directory / "c.toml"
        self.write(self.good(0))
        loaded = config.load(self.config_path, {})
        valid = str(generate.current_addresses(loaded.identities[0], time.time())[0])
        self.server = Server(self.config_path, self.socket_path)
        self.server.start()
        self.loads = [Load(self.socket_path, valid) for _ in range(clients)]
        for load in self.loads:
            load.start()

    def write(self, data: dict[str, Any] | str, mode: int = 0o600) -> None:
        """Replace the config file."""
        self.config_path.write_text(data if isinstance(data, str) else tomli_w.dumps(data))
        self.config_path.chmod(mode)

    def good(self, variant: int) -> dict[str, Any]:
        """A valid config; ``variant`` changes a harmless setting."""
        return {
            "server": {"user": self.user, "max_query_length": 256 + variant % 100},
            "socket": {"path": str(self.socket_path)},
            "identities": {"default": identity()},
        }

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
            self.server.signal(signum)
            status = self.server.wait()
            if signum is signal.SIGTERM and status != 0:
                raise RuntimeError(f"SIGTERM: exit status {status}")
            self.server.start()  # after SIGKILL the socket is stale: the new server replaces it
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
        self.server.signal(signal.SIGTERM)
        self.server.wait()


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
    tracebacks = scenario.server.log["Traceback"]
    print(f"wrong answers: {len(wrong)} {wrong[:5]}; tracebacks in the server log: {tracebacks}")
    failed = reloads["in-flight"] + reloads["refused"] + tracebacks
    return 1 if wrong or failed or restarts["wrong"] or kills["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
