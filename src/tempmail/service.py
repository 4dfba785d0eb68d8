"""``tempmail serve``: bind, drop privileges, run the server until a signal stops it."""

from __future__ import annotations

import functools
import importlib.util
import logging
from typing import TYPE_CHECKING

import anyio

from tempmail import config as config_module
from tempmail import listeners
from tempmail.privileges import drop_privileges
from tempmail.server import Server
from tempmail.systemd import Notifier

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tempmail.config import Config

log = logging.getLogger(__name__)


def use_uvloop(config: Config) -> bool:
    """Whether to run on uvloop: as configured, or with "auto" when it is installed.

    Measured: uvloop makes a lookup 15-45 % cheaper (docs/benchmarks.md).
    """
    if config.server.event_loop == "auto":
        return importlib.util.find_spec("uvloop") is not None
    return config.server.event_loop == "uvloop"


def run_server(config: Config, environ: Mapping[str, str]) -> None:
    """Serve ``config`` in the foreground; returns after SIGTERM or SIGINT."""
    bound = listeners.inherited(environ)
    if bound:
        log.info("using %d socket(s) from systemd; [socket] is not used", len(bound))
    else:
        bound = [listeners.bind(config.socket)]
    loader = functools.partial(config_module.load, config.path, environ)

    async def main() -> None:
        # Drop root inside the running loop: everything the loop needs is imported by now,
        # even where the Python installation is not readable by the service user.
        drop_privileges(config.server.user)
        notifier = Notifier.from_environ(environ)
        await Server(config, bound, loader=loader, notifier=notifier).run()

    try:
        anyio.run(main, backend="asyncio", backend_options={"use_uvloop": use_uvloop(config)})
    finally:
        for b in bound:  # normally done by the server already; this covers failed starts
            b.close()
