"""Fixtures: a short directory for sockets and real servers on real sockets.

Servers start through the repository's harness (harness/): in this process, in an event-loop
thread of their own, so tests talk to them with ordinary blocking sockets, as Postfix would.
Helpers that tests import are in helpers.py.
"""

from __future__ import annotations

import grp
import logging
import pwd
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import InProcessServers, RunningServer
from helpers import ScriptedServers, StartServer, config_data, require_root, require_tool

#: Fixtures of installed releases (the wheel in a fresh venv), for every test that needs one.
pytest_plugins = ["installs"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def restore_tempmail_logger() -> Iterator[None]:
    """Tests that run `tempmail serve` in process reconfigure the 'tempmail' logger (level,
    handler, propagation): put it back, so that no test sees another's logging."""
    logger = logging.getLogger("tempmail")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for unix sockets (AF_UNIX paths are limited to about 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="tm-") as name:
        yield Path(name)


@pytest.fixture
def scripted_server(short_dir: Path) -> Iterator[ScriptedServers]:
    """Fake servers on unix sockets, each connection handled by a script (helpers.py)."""
    servers = ScriptedServers(short_dir)
    yield servers
    servers.close()


@pytest.fixture
def start_server(short_dir: Path) -> Iterator[StartServer]:
    """Start servers from config dicts (the test identity by default); all stop at the end.

    Keyword arguments are those of ``harness.InProcessServers.start``: ``config_path``,
    ``clock``, ``monotonic``, ``environ``, ``bound``.
    """
    with InProcessServers(short_dir) as servers:

        def start(data: dict[str, Any] | None = None, **options: Any) -> RunningServer:
            return servers.start(data or config_data(), **options)

        yield start


@pytest.fixture
def service_user() -> Iterator[pwd.struct_passwd]:
    """A new system user with its own group, removed again afterwards."""
    require_root()
    useradd = require_tool("useradd", "passwd")
    userdel = require_tool("userdel", "passwd")
    name = f"tm-test-{secrets.token_hex(4)}"
    subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        check=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run([userdel, name], check=True)
        try:
            grp.getgrnam(name)
        except KeyError:
            pass
        else:
            subprocess.run([require_tool("groupdel", "passwd"), name], check=True)
