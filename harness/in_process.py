"""Servers in this process: ``tempmail.server.Server`` in an event-loop thread of its own.

The loop runs in an anyio blocking portal, so the caller talks to the server with ordinary
blocking sockets, as Postfix would, and reaches into it (stats, open connections, the loop's
tasks) with ``portal.call``. Clocks are injectable, which a process cannot offer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Self

import anyio.from_thread

from harness.configs import serving_config, write_config
from tempmail import config as config_module
from tempmail import listeners
from tempmail.client import Client
from tempmail.server import Server

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from concurrent.futures import Future
    from pathlib import Path

    from tempmail.listeners import Bound
    from tempmail.socketmap import Reply

#: How long a stopping server may take before the harness reports it as hanging.
STOP_TIMEOUT = 10.0


@dataclass
class RunningServer:
    """A server running in the harness's event-loop thread, and where it listens."""

    server: Server
    target: str  # the first listening address: unix:PATH or inet:HOST:PORT
    portal: anyio.from_thread.BlockingPortal
    task: Future[None]  # the server's run(): done once it has stopped (or crashed)
    config_path: Path
    map_name: str = "tempmail"

    def query(self, key: str, map_name: str | None = None) -> Reply:
        """One lookup on a new connection."""
        with Client(self.target, timeout=5) as client:
            return client.query(map_name or self.map_name, key)

    def connect(self, timeout: float = 5.0) -> Client:
        """A new connection to the server."""
        return Client(self.target, timeout=timeout)

    def reload(self) -> bool:
        """Reload the configuration file, as SIGHUP does; whether the new one was taken."""
        return self.portal.call(self.server.reload)

    def rewrite_config(self, data: dict[str, Any]) -> None:
        """Replace the configuration file (a reload or the file watcher applies it)."""
        write_config(self.config_path, data)


class InProcessServers:
    """Starts servers in one event-loop thread; all are stopped when the context ends."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory  # config files and unix sockets: keep it short
        self._exit = contextlib.ExitStack()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._running: list[RunningServer] = []

    def __enter__(self) -> Self:
        self._portal = self._exit.enter_context(
            anyio.from_thread.start_blocking_portal(backend="asyncio")
        )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            self._exit.close()

    def start(  # noqa: PLR0913 - every collaborator of a Server can be injected
        self,
        data: dict[str, Any] | None = None,
        *,
        config_path: Path | None = None,
        clock: Callable[[], float] | None = None,
        monotonic: Callable[[], float] | None = None,
        environ: Mapping[str, str] | None = None,
        bound: list[Bound] | None = None,
    ) -> RunningServer:
        """Serve ``data`` (written to a file of its own), or the file at ``config_path``.

        ``bound``: listening sockets made by the caller (as systemd passes them), instead of
        the configured socket.
        """
        if self._portal is None:
            raise RuntimeError("use InProcessServers as a context manager")
        number = len(self._running)
        if config_path is None:
            served = serving_config(data or {}, self._directory, f"s{number}")
            config_path = write_config(self._directory / f"config{number}.toml", served)
        env = dict(environ or {})
        config = config_module.load(config_path, env)
        kwargs: dict[str, Any] = {"loader": partial(config_module.load, config_path, env)}
        if clock is not None:
            kwargs["clock"] = clock
        if monotonic is not None:
            kwargs["monotonic"] = monotonic
        server = Server(config, bound or [listeners.bind(config.socket)], **kwargs)
        future, addresses = self._portal.start_task(partial(server.run, handle_signals=False))
        running = RunningServer(
            server, addresses[0], self._portal, future, config_path, config.server.map_name
        )
        self._running.append(running)
        return running

    def stop_all(self) -> None:
        """Stop every server started here, gracefully; a server's crash is raised here."""
        running, self._running = self._running, []
        for handle in running:
            handle.portal.call(handle.server.stop)
        for handle in running:
            handle.task.result(timeout=STOP_TIMEOUT)
