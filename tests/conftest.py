"""Fixtures: a short directory for sockets and real servers on real sockets.

The server runs in its own event-loop thread (an anyio blocking portal), so tests talk to it
with ordinary blocking sockets, as Postfix would. Helpers that tests import are in helpers.py.
"""

from __future__ import annotations

import copy
import grp
import pwd
import secrets
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest

from helpers import (
    RunningServer,
    StartServer,
    config_data,
    require_root,
    require_tool,
    write_config,
)
from tempmail import config as config_module
from tempmail import listeners
from tempmail.server import Server

#: Fixtures of installed releases (the wheel in a fresh venv), for every test that needs one.
pytest_plugins = ["installs"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for unix sockets (AF_UNIX paths are limited to about 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="tm-") as name:
        yield Path(name)


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
            config_path: Path | None = None,
        ) -> RunningServer:
            """Serve ``data`` (written to a file of its own), or the file at ``config_path``."""
            if config_path is None:
                data = copy.deepcopy(data or config_data())
                socket_table = data.setdefault("socket", {})
                if socket_table.get("type", "unix") == "unix":
                    socket_table.setdefault("path", str(short_dir / f"s{len(running)}.sock"))
                else:
                    socket_table.setdefault("port", 0)  # the kernel picks; the server reports it
                config_path = write_config(short_dir / f"config{len(running)}.toml", data)
            path = config_path
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
