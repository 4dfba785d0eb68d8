"""Helpers shared by the tests: config data, a fixed clock, required tools and users.

Fixtures live in conftest.py; everything a test module imports lives here (pytest discourages
importing from conftest), except how servers start: that is the repository's harness
(``from harness import ServerProcess, write_config``), which benchmarks and fuzzing use too.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness import RunningServer, identity, one_identity

T = TypeVar("T")

#: A secret with spaces, a dollar and non-ASCII, so every test exercises the hard cases.
SECRET = "correct horse $battery staple ü"
DOMAIN = "example.org"
RECIPIENT = "owner@example.net"

#: The harness's standard identity (example.org -> owner@example.net) with the test secret.
IDENTITY: dict[str, Any] = identity(SECRET)


def config_data(**keys: Any) -> dict[str, Any]:
    """A one-identity config dict; keyword arguments override identity keys (None removes)."""
    return one_identity(SECRET, **keys)


def at(text: str) -> float:
    """Epoch seconds of an ISO 8601 instant with offset, e.g. '2026-03-29T00:30:00+01:00'."""
    return dt.datetime.fromisoformat(text).timestamp()


@dataclass
class FakeClock:
    """A settable clock for the server (seconds since the epoch)."""

    now: float = field(default_factory=lambda: at("2026-11-27T12:00:00+00:00"))

    def __call__(self) -> float:
        return self.now


#: The type of the ``start_server`` fixture (conftest.py).
StartServer = Callable[..., RunningServer]


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


def wait_until(
    check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``check`` (a server's state, a container, a mailbox) until it returns something
    truthy; return that, or raise TimeoutError naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what or check}")
        time.sleep(interval)


#: What a scripted server does with each connection (what it returns is ignored).
Script = Callable[[socket.socket], object]


class ScriptedServers:
    """Unix sockets whose connections are handled by a script: for replies no tempmail sends
    (another server's, a broken one's). The ``scripted_server`` fixture closes them."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def start(self, script: Script) -> str:
        """A new socket whose every connection ``script`` handles, in turn; its target."""
        path = self._directory / f"scripted{len(self._listeners)}.sock"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.listen()
        self._listeners.append(listener)

        def serve() -> None:
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:  # closed by close()
                    return
                with connection:
                    script(connection)

        self._threads.append(threading.Thread(target=serve, daemon=True))
        self._threads[-1].start()
        return f"unix:{path}"

    def close(self) -> None:
        for listener in self._listeners:
            listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for thread in self._threads:
            thread.join(5)
