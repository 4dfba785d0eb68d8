"""``tempmail query``: ask a running server, as Postfix does; probes for health checks."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, Final

from tempmail.cli._common import (
    EX_DATAERR,
    EX_NOTFOUND,
    EX_OK,
    EX_PROTOCOL,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    error,
    load_config,
    positive_seconds,
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
            "With --self-test, ask the server to look up today's address of every identity of "
            "the configuration it serves and exit 0 only if each maps to its recipient (a "
            "readiness probe; with --socket it reads no config file and prints no address). "
            "With --ping, exit 0 if the server answers a lookup at all (a liveness probe). With "
            "--status, print what the server serves (JSON)."
        ),
    )
    query.add_argument("key", nargs="?", help="the address to look up")
    query.add_argument(
        "--socket", metavar="unix:PATH|inet:HOST:PORT", help="server (default: from the config)"
    )
    query.add_argument("--map", metavar="NAME", help="socketmap name (default: from the config)")
    query.add_argument("--timeout", type=positive_seconds, default=5.0, help="seconds (default: 5)")
    query.add_argument(
        "--self-test",
        action="store_true",
        help="the server checks today's address of every identity it serves (a readiness "
        "probe; with --socket no config is read; --map, when given, must be the served map)",
    )
    query.add_argument(
        "--status", action="store_true", help="print the server's status report (JSON)"
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
    modes = (args.key is not None, args.self_test, args.ping, args.status)
    if sum(modes) != 1:
        raise UsageError("give a KEY, --self-test, --status or --ping")
    # Health probes name the socket and read no config: a broken file on disk must not fail
    # a server that keeps serving the configuration it loaded.
    health = args.self_test or args.status
    config = None
    if not args.socket or not (health or args.map):
        config = load_config(args)
    target = args.socket or (config.socket.describe() if config else "")
    map_name = args.map or (config.server.map_name if config and not health else None)
    if args.status:
        return _ask(target, args.timeout, _print_status)
    if args.self_test:
        return _ask(target, args.timeout, lambda c: _self_test(c, map_name))
    assert map_name is not None  # noqa: S101 - from --map or the config, loaded above
    if args.ping:
        return _ask(target, args.timeout, lambda c: _pong(c.query(map_name, PING_KEY)))
    return _ask(target, args.timeout, lambda c: _report(c.query(map_name, args.key)))


def ask_status(connection: Client) -> dict[str, Any]:
    """The server's status report; raises ProtocolError when the server gives none."""
    from tempmail import status  # noqa: PLC0415
    from tempmail.errors import ProtocolError  # noqa: PLC0415

    reply = connection.query(status.STATUS_MAP, "status")
    try:
        return status.parse(reply)
    except ValueError as exc:
        raise ProtocolError(f"no status report ({exc}); is this tempmail 2.0 or later?") from None


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


def _self_test(connection: Client, map_name: str | None) -> int:
    report = ask_status(connection)
    if map_name is not None and report["map_name"] != map_name:
        error(
            f"self-test failed: the server answers map {report['map_name']!r}, not "
            f"{map_name!r} (check --map and virtual_alias_maps)"
        )
        return EX_UNAVAILABLE
    failed = [i["name"] for i in report["identities"] if i["self_test"] != "ok"]
    if failed:
        names = ", ".join(repr(name) for name in failed)
        error(
            f"self-test failed: today's address of identity {names} does not resolve to its "
            "recipient"
        )
        return EX_UNAVAILABLE
    reloads = report["reloads"]
    if not reloads["last_ok"]:
        error(
            "warning: the last reload failed; the previous configuration keeps serving: "
            f"{reloads['last_error']}"
        )
    count = len(report["identities"])
    generation = report["config"]["generation"]
    print(
        f"self-test passed: {count} identit{'y' if count == 1 else 'ies'} OK "
        f"(configuration generation {generation})"
    )
    return EX_OK


def _print_status(connection: Client) -> int:
    print(json.dumps(ask_status(connection), indent=2))
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
