"""``tempmail query``: ask a running server, as Postfix does; probes for health checks."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Final

from tempmail.cli._common import (
    EX_DATAERR,
    EX_NOTFOUND,
    EX_OK,
    EX_PROTOCOL,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    error,
    load_config,
)
from tempmail.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from tempmail.cli import Commands
    from tempmail.client import Client
    from tempmail.socketmap import Reply

#: What --ping looks up: never a valid address (.invalid is reserved, RFC 2606).
PING_KEY: Final = "tempmail-ping@ping.invalid"


def register(commands: Commands, parent: argparse.ArgumentParser) -> None:
    """Add the ``query`` command."""
    query = commands.add_parser(
        "query",
        parents=[parent],
        help="ask a running server about KEY (exit 0: OK, 1: NOTFOUND)",
        description=(
            "Ask a running server about KEY, as Postfix does. Exit status: 0 OK (the result is "
            "printed), 1 NOTFOUND, 75 TEMP or TIMEOUT, 65 PERM, 69 cannot connect, 76 bad reply. "
            "With --self-test, look up today's address of every identity and exit 0 only if "
            "each maps to its recipient (a readiness probe). With --ping, exit 0 if the server "
            "answers a lookup at all (a liveness probe)."
        ),
    )
    query.add_argument("key", nargs="?", help="the address to look up")
    query.add_argument(
        "--socket", metavar="unix:PATH|inet:HOST:PORT", help="server (default: from the config)"
    )
    query.add_argument("--map", metavar="NAME", help="socketmap name (default: from the config)")
    query.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")
    query.add_argument(
        "--self-test", action="store_true", help="check today's address of every identity"
    )
    query.add_argument(
        "--ping",
        action="store_true",
        help="exit 0 if the server answers at all (a liveness probe; with --socket and --map "
        "it does not read the config)",
    )
    query.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Ask the server."""
    from tempmail import generate  # noqa: PLC0415 - keeps the other commands fast

    if sum((args.key is not None, args.self_test, args.ping)) != 1:
        raise UsageError("give a KEY, --self-test or --ping")
    config = load_config(args) if args.self_test or not (args.socket and args.map) else None
    target = args.socket or (config.socket.describe() if config else "")
    map_name = args.map or (config.server.map_name if config else "")
    if args.ping:
        return _ask(target, args.timeout, lambda c: _pong(c.query(map_name, PING_KEY)))
    if not args.self_test:
        return _ask(target, args.timeout, lambda c: _report(c.query(map_name, args.key)))
    assert config is not None  # noqa: S101 - loaded above for --self-test
    checks = [
        (str(generate.current_addresses(i, time.time())[0]), i.recipient) for i in config.identities
    ]
    return _ask(target, args.timeout, lambda c: _self_test(c, map_name, checks))


def _ask(target: str, timeout: float, conversation: Callable[[Client], int]) -> int:
    """Connect to ``target`` and run ``conversation``, mapping failures to exit codes."""
    from tempmail.client import Client  # noqa: PLC0415
    from tempmail.errors import ProtocolError  # noqa: PLC0415

    try:
        with Client(target, timeout=timeout) as connection:
            return conversation(connection)
    except ValueError as exc:
        raise UsageError(f"--socket: {exc}") from None
    except ProtocolError as exc:
        error(f"{target}: {exc}")
        return EX_PROTOCOL
    except OSError as exc:
        error(f"cannot query {target}: {exc.strerror or exc}")
        return EX_UNAVAILABLE


def _self_test(connection: Client, map_name: str, checks: list[tuple[str, str]]) -> int:
    from tempmail.socketmap import Status  # noqa: PLC0415

    for key, expected in checks:
        reply = connection.query(map_name, key)
        if reply.status is not Status.OK or reply.data != expected:
            error(f"self-test: {key} -> {reply.status.value} {reply.data}".rstrip())
            return EX_UNAVAILABLE
    print(f"self-test passed: {len(checks)} identit{'y' if len(checks) == 1 else 'ies'} OK")
    return EX_OK


def _pong(reply: Reply) -> int:
    """Alive: the server answered a lookup (any answer but a failure)."""
    from tempmail.socketmap import Status  # noqa: PLC0415

    if reply.status in (Status.OK, Status.NOTFOUND):
        print("alive")
        return EX_OK
    return _report(reply)


def _report(reply: Reply) -> int:
    from tempmail.socketmap import Status  # noqa: PLC0415

    if reply.status is Status.OK:
        print(reply.data)
        return EX_OK
    if reply.status is Status.NOTFOUND:
        return EX_NOTFOUND
    error(f"{reply.status.value} {reply.data}")
    return EX_DATAERR if reply.status is Status.PERM else EX_TEMPFAIL
