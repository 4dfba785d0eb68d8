"""``tempmail reload``: reload a running server and report whether the reload succeeded.

A signal alone cannot say whether the new configuration was accepted, so ``systemctl reload``
reported success for broken files. This command sends SIGHUP and then asks the server, with
status requests on its socket, until the reload it caused is reported: exit 0 when it
succeeded, 78 (one line naming the cause) when the server refused the new configuration and
keeps serving the previous one.

Which process to signal: ``--pid`` (systemd passes ``$MAINPID``), else the PID the kernel
reports for the process listening on the unix socket (SO_PEERCRED), used only when the server
reports the same PID: a reply alone must never choose the process that root signals.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from typing import TYPE_CHECKING, Final

from tempmail.cli._common import EX_OK, load_config, positive_int, positive_seconds
from tempmail.cli.query import ask_status
from tempmail.errors import ConfigError, ProtocolError, ServerError, UsageError

if TYPE_CHECKING:
    from tempmail.cli import Commands

#: How often the server is asked whether the reload has finished.
POLL_INTERVAL: Final = 0.05


def register(commands: Commands, parent: argparse.ArgumentParser) -> None:
    """Add the ``reload`` command."""
    reload = commands.add_parser(
        "reload",
        parents=[parent],
        help="reload a running server; exit 0 only if the new configuration was accepted",
        description=(
            "Send SIGHUP to a running server and wait until it reports the result: exit 0 when "
            "the new configuration and secrets were loaded, 78 when they were refused (the "
            "previous configuration keeps serving), 75 when no result came within --timeout, "
            "69 when the server cannot be reached. For systemd's ExecReload=."
        ),
    )
    reload.add_argument(
        "--socket",
        metavar="unix:PATH|inet:HOST:PORT",
        help="the server's socket (default: from the config; give it when the config file "
        "may be broken)",
    )
    reload.add_argument(
        "--pid",
        type=positive_int,
        help="the server's PID (default: the process listening on the unix socket)",
    )
    reload.add_argument(
        "--timeout", type=positive_seconds, default=30.0, help="seconds to wait for the result (30)"
    )
    reload.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Reload and wait for the verdict."""
    from tempmail.client import Client  # noqa: PLC0415 - keeps the other commands fast

    target = args.socket or load_config(args).socket.describe()
    deadline = time.monotonic() + args.timeout
    try:
        with Client(target, timeout=args.timeout) as connection:
            before = ask_status(connection)
            pid = (
                args.pid
                if args.pid is not None
                else _listening_pid(connection.peer_pid(), before["pid"])
            )
            done = before["reloads"]["ok"] + before["reloads"]["failed"]
            _signal(pid)
            while True:
                report = ask_status(connection)
                reloads = report["reloads"]
                if reloads["ok"] + reloads["failed"] > done:
                    break
                if time.monotonic() > deadline:
                    raise _NoVerdict(
                        f"no reload reported within {args.timeout:g} s; see the server's log"
                    )
                time.sleep(POLL_INTERVAL)
    except ValueError as exc:
        raise UsageError(f"--socket: {exc}") from None
    except ProtocolError:
        raise
    except OSError as exc:
        raise _Unreachable(f"cannot reach the server at {target}: {exc.strerror or exc}") from None
    if not reloads["last_ok"]:
        raise ConfigError(
            f"reload failed, the previous configuration keeps serving: {reloads['last_error']}"
        )
    print(f"reloaded: configuration generation {report['config']['generation']}")
    return EX_OK


def _listening_pid(peer: int | None, reported: int) -> int:
    if peer is None or peer != reported:
        raise UsageError(
            "--pid is needed: the process listening on the socket is not the one that "
            "answers (socket activation, or a TCP socket); give the server's PID"
        )
    return peer


def _signal(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ServerError(f"--pid: no process {pid}") from None
    except PermissionError:
        raise ServerError(
            f"cannot signal process {pid}: permission denied (run as root or as the server's user)"
        ) from None


class _Unreachable(ServerError):
    exit_code = 69  # EX_UNAVAILABLE, as `tempmail query` when it cannot connect


class _NoVerdict(ServerError):
    exit_code = 75  # EX_TEMPFAIL: the reload may still finish; systemd may try again
