"""The ``tempmail`` command line: one module per command, this one the boundary.

``main()`` builds the parser from each command module's ``register()`` and turns every
error tempmail raises into one line on stderr and the exit status its class documents
(tempmail.errors). Each command imports only what it needs, so ``tempmail address`` starts
fast (no event loop is imported).
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from typing import TYPE_CHECKING, TypeAlias

from tempmail import version
from tempmail.cli import address, postfix, query, reload, serve, setup
from tempmail.cli._common import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_DATAERR,
    EX_NOINPUT,
    EX_NOTFOUND,
    EX_OK,
    EX_OSERR,
    EX_PROTOCOL,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
    PROG,
    config_option,
    error,
)
from tempmail.errors import ConfigError, TempmailError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: The subparsers action that each command module adds its parser to.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # noqa: SLF001 - argparse has no public name for it

__all__ = [
    "EX_CANTCREAT",
    "EX_CONFIG",
    "EX_DATAERR",
    "EX_NOINPUT",
    "EX_NOTFOUND",
    "EX_OK",
    "EX_OSERR",
    "EX_PROTOCOL",
    "EX_SOFTWARE",
    "EX_TEMPFAIL",
    "EX_UNAVAILABLE",
    "EX_USAGE",
    "main",
]

#: Every command module, in the order of ``tempmail --help``.
COMMANDS = (address, serve, query, reload, setup, postfix)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        status = command(args)
        sys.stdout.flush()  # here, where a reader that went away is handled, not at exit
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        # `tempmail address | head -n 1`: the reader took what it wanted and left; that is no
        # error of ours. Whatever is still buffered goes nowhere, so that the interpreter's
        # last flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_OK
    except ConfigError as exc:
        for problem in exc.problems:
            error(problem)
        return exc.exit_code
    except TempmailError as exc:
        error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return status


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe that nobody reads any more (poll says POLLERR)."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # replaced, closed or not a file
        return False
    poller = select.poll()
    poller.register(descriptor, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


class _Version(argparse.Action):
    """``--version``: the version is read only when asked for (see tempmail.version)."""

    def __init__(self, option_strings: list[str], dest: str, help: str) -> None:  # noqa: A002
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,  # noqa: ARG002
        values: object,  # noqa: ARG002
        option_string: str | None = None,  # noqa: ARG002
    ) -> None:
        print(f"{PROG} {version()}")  # on stdout, as argparse's own version action does
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Postfix socketmap lookup service for temporary e-mail addresses.",
        epilog=(
            "The config file is --config, else $TEMPMAIL_CONFIG, else /etc/tempmail/config.toml."
        ),
        parents=[config_option(suppress_default=False)],
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    after_command = config_option(suppress_default=True)
    for module in COMMANDS:
        module.register(commands, after_command)
    return parser
