"""``tempmail serve``: bind, drop privileges, run the server until a signal stops it."""

from __future__ import annotations

import functools
import importlib.util
import logging
from typing import TYPE_CHECKING

import anyio

from tempmail import config as config_module
from tempmail import listeners
from tempmail.errors import ConfigError, TempmailError
from tempmail.privileges import check_switch, drop_privileges
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


def run_server(config: Config, environ: Mapping[str, str], *, log_level: str | None = None) -> None:
    """Serve ``config`` in the foreground; returns after SIGTERM or SIGINT.

    ``log_level`` is the command line's ``--log-level``: it beats ``server.log_level``, also
    after a reload. Every failure ends as one :class:`TempmailError` (see ``_one_error``).
    """
    check_switch(config.server.user)
    bound = listeners.inherited(environ)
    if bound:
        log.info("using %d socket(s) from systemd; [socket] is not used", len(bound))
    else:
        bound = [listeners.bind(config.socket, service_user=config.server.user, environ=environ)]
        if config.socket.type == "unix":
            problem = listeners.postfix_access_problem(config.socket.path)
            if problem is not None:
                log.warning("Postfix cannot connect to the socket: %s", problem)
    loader = functools.partial(config_module.load, config.path, environ)

    async def main() -> None:
        # Drop root inside the running loop, after the socket is bound and set up.
        drop_privileges(config.server.user)
        notifier = Notifier.from_environ(environ)
        server = Server(config, bound, loader=loader, notifier=notifier, log_level=log_level)
        await server.run()

    try:
        anyio.run(main, backend="asyncio", backend_options={"use_uvloop": use_uvloop(config)})
    except BaseExceptionGroup as group:
        raise _one_error(group, config.server.user) from None
    finally:
        for b in bound:  # normally done by the server already; this covers failed starts
            b.close()


def _one_error(group: BaseExceptionGroup[BaseException], user: str | None) -> BaseException:
    """What escaped the server's task group, as the one error the command line reports.

    anyio raises everything from inside a task group as an exception group; an operator must
    see the cause in one line with its documented exit status, not a traceback: tempmail's own
    errors as they are, a module that cannot be imported after the switch to ``server.user``
    as a config error, anything else as an internal error whose traceback is logged at debug.
    """
    leaves = _leaves(group)
    for leaf in leaves:
        if isinstance(leaf, TempmailError | KeyboardInterrupt | SystemExit):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, ImportError):
            return ConfigError(
                f"server.user: after switching to {user!r} the server cannot import "
                f"{leaf.name or 'a module'} ({leaf}); install tempmail where that user can "
                "read it, e.g. 'python3 -m venv /opt/tempmail'"
            )
    first = leaves[0]
    log.debug("the server stopped on an unexpected error", exc_info=first)
    return InternalError(
        f"the server stopped on an unexpected error: {type(first).__name__}: {first} "
        "(a bug: please report it; --log-level debug shows where)"
    )


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found


class InternalError(TempmailError):
    """Something tempmail did not expect; exit status EX_SOFTWARE (70)."""
