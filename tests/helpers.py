"""Helpers shared by the tests: config data, a fixed clock, a handle on a running server.

Fixtures live in conftest.py; everything a test module imports lives here (pytest discourages
importing from conftest).
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
import tomli_w

from tempmail.client import Client
from tempmail.server import Server
from tempmail.socketmap import Reply

#: A secret with spaces, a dollar and non-ASCII, so every test exercises the hard cases.
SECRET = "correct horse $battery staple ü"
DOMAIN = "example.org"
RECIPIENT = "owner@example.net"

IDENTITY: dict[str, Any] = {
    "domain": DOMAIN,
    "recipient": RECIPIENT,
    "secret": SECRET,
    "scheme": "hmac",
    "accept": ["hmac", "md5"],
    "length": 8,
    "window": 2,
    "timezone": "UTC",
}


def config_data(**identity: Any) -> dict[str, Any]:
    """A one-identity config dict; keyword arguments override identity keys (None removes)."""
    merged = {**IDENTITY, **identity}
    return {"identities": {"default": {k: v for k, v in merged.items() if v is not None}}}


def write_config(path: Path, data: dict[str, Any], mode: int = 0o600) -> Path:
    path.write_text(tomli_w.dumps(data))
    path.chmod(mode)
    return path


def at(text: str) -> float:
    """Epoch seconds of an ISO 8601 instant with offset, e.g. '2026-03-29T00:30:00+01:00'."""
    return dt.datetime.fromisoformat(text).timestamp()


@dataclass
class FakeClock:
    """A settable clock for the server (seconds since the epoch)."""

    now: float = field(default_factory=lambda: at("2026-11-27T12:00:00+00:00"))

    def __call__(self) -> float:
        return self.now


@dataclass
class RunningServer:
    server: Server
    target: str
    portal: anyio.from_thread.BlockingPortal
    config_path: Path
    map_name: str = "tempmail"

    def query(self, key: str, map_name: str | None = None) -> Reply:
        with Client(self.target, timeout=5) as client:
            return client.query(map_name or self.map_name, key)

    def connect(self) -> Client:
        return Client(self.target, timeout=5)

    def raw_socket(self) -> socket.socket:
        family = socket.AF_UNIX if self.target.startswith("unix:") else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(5)
        if family == socket.AF_UNIX:
            sock.connect(self.target.removeprefix("unix:"))
        else:
            host, _, port = self.target.removeprefix("inet:").rpartition(":")
            sock.connect((host, int(port)))
        return sock

    def reload(self) -> bool:
        return self.portal.call(self.server.reload)

    def rewrite_config(self, data: dict[str, Any]) -> None:
        write_config(self.config_path, data)


StartServer = Callable[..., RunningServer]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require_tool(name: str, package: str) -> str:
    """The path of ``name``; skip locally, fail in CI (TEMPMAIL_REQUIRE_ALL=1) when missing."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found:
        return found
    message = f"{name} not found: install Debian's {package} package"
    if os.environ.get("TEMPMAIL_REQUIRE_ALL") == "1":
        pytest.fail(message + " (TEMPMAIL_REQUIRE_ALL=1: nothing may be skipped)")
    pytest.skip(message)


def require_root() -> None:
    """Skip locally when not root; fail in CI, where nothing may skip."""
    if os.geteuid() == 0:
        return
    if os.environ.get("TEMPMAIL_REQUIRE_ALL") == "1":
        pytest.fail("needs root (TEMPMAIL_REQUIRE_ALL=1: nothing may skip)")
    pytest.skip("needs root")


def as_user(user: pwd.struct_passwd, *command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with the user's uid, gid and groups, as the server has them."""
    setpriv = require_tool("setpriv", "util-linux")
    return subprocess.run(
        [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", *command],
        capture_output=True,
        text=True,
        check=False,
    )


def serve_process(
    config: Path, *extra: str, command: Sequence[str | Path] | None = None
) -> tuple[subprocess.Popen[str], list[str]]:
    """``tempmail serve`` in a process of its own, once it listens: (process, log so far).

    If it exits before listening, it is reaped and the test fails with its output: a process
    handle left behind would be closed by the garbage collector during some later test.
    """
    argv = [*(command or [sys.executable, "-m", "tempmail"]), "-c", str(config), "serve", *extra]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines: list[str] = []
    while "listening on" not in (line := process.stderr.readline()):
        if not line:
            process.wait()
            process.stderr.close()
            message = f"the server exited ({process.returncode}) before listening:\n"
            raise AssertionError(message + "".join(lines))
        lines.append(line)
    lines.append(line)
    return process, lines
