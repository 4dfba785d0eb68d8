"""Shared fixtures: config files, a fixed clock, and a real server on a real socket.

The server runs in its own event-loop thread (an anyio blocking portal), so tests talk to it
with ordinary blocking sockets, as Postfix would.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
import tomli_w

from tempmail import config as config_module
from tempmail import listeners
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


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for unix sockets (AF_UNIX paths are limited to about 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="tm-") as name:
        yield Path(name)


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


@pytest.fixture
def start_server(short_dir: Path) -> Iterator[StartServer]:
    """Start servers from config dicts; all are stopped at the end of the test."""
    running: list[tuple[RunningServer, Any]] = []
    with anyio.from_thread.start_blocking_portal(backend="asyncio") as portal:

        def start(
            data: dict[str, Any] | None = None,
            *,
            clock: Callable[[], float] | None = None,
            monotonic: Callable[[], float] | None = None,
            environ: dict[str, str] | None = None,
        ) -> RunningServer:
            data = copy.deepcopy(data or config_data())
            socket_table = data.setdefault("socket", {})
            if socket_table.get("type", "unix") == "unix":
                socket_table.setdefault("path", str(short_dir / f"s{len(running)}.sock"))
            else:
                socket_table.setdefault("port", _free_port())
            path = write_config(short_dir / f"config{len(running)}.toml", data)
            env = environ if environ is not None else {}
            config = config_module.load(path, env)
            bound = [listeners.bind(config.socket)]
            kwargs: dict[str, Any] = {"loader": partial(config_module.load, path, env)}
            if clock is not None:
                kwargs["clock"] = clock
            if monotonic is not None:
                kwargs["monotonic"] = monotonic
            server = Server(config, bound, **kwargs)
            future, addresses = portal.start_task(partial(server.run, handle_signals=False))
            handle = RunningServer(server, addresses[0], portal, path, config.server.map_name)
            running.append((handle, future))
            return handle

        yield start
        for handle, future in running:
            portal.call(handle.server.stop)
            future.result(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require_tool(name: str, package: str) -> str:
    """The path of ``name``; skip locally, fail in CI (TEMPMAIL_REQUIRE_ALL=1) when missing."""
    import shutil  # noqa: PLC0415

    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found:
        return found
    message = f"{name} not found: install Debian's {package} package"
    if os.environ.get("TEMPMAIL_REQUIRE_ALL") == "1":
        pytest.fail(message + " (TEMPMAIL_REQUIRE_ALL=1: nothing may be skipped)")
    pytest.skip(message)
