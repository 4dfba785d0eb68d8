"""``tempmail serve``: the socketmap server in the foreground."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from tempmail.cli._common import EX_OK, load_config

if TYPE_CHECKING:
    from tempmail.cli import Commands


def register(commands: Commands, parent: argparse.ArgumentParser) -> None:
    """Add the ``serve`` command."""
    serve = commands.add_parser(
        "serve",
        parents=[parent],
        help="run the socketmap server in the foreground (logs to stderr)",
    )
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override log_level"
    )
    serve.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT."""
    from tempmail import logs  # noqa: PLC0415 - keeps the other commands fast

    logs.configure(args.log_level or "info")
    config = load_config(args)
    logs.configure(args.log_level or config.server.log_level)
    from tempmail.service import run_server  # noqa: PLC0415

    run_server(config, os.environ, log_level=args.log_level)
    return EX_OK
