"""What every command shares: the program name, exit codes, error lines, the config option."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from tempmail.config import Config

PROG: Final = "tempmail"

# Exit codes, as in sysexits(3). Errors carry theirs (tempmail.errors); these are the
# statuses commands return for results that are not errors.
EX_OK: Final = 0
EX_NOTFOUND: Final = 1  # `tempmail query`: the key is not a valid address
EX_USAGE: Final = 2  # argparse's status for usage errors (errors.UsageError)
EX_DATAERR: Final = 65
EX_NOINPUT: Final = 66
EX_UNAVAILABLE: Final = 69
EX_SOFTWARE: Final = 70
EX_OSERR: Final = 71
EX_CANTCREAT: Final = 73
EX_TEMPFAIL: Final = 75
EX_PROTOCOL: Final = 76
EX_CONFIG: Final = 78


def error(message: str) -> None:
    """One line on stderr, prefixed with the program's name."""
    print(f"{PROG}: {message}", file=sys.stderr)


def config_option(*, suppress_default: bool) -> argparse.ArgumentParser:
    """A parent parser with ``-c/--config``, accepted before and after the command.

    The command's copy must not have a default: argparse would let it overwrite a value
    given before the command.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help="configuration file (TOML)",
        default=argparse.SUPPRESS if suppress_default else None,
    )
    return parent


def load_config(args: argparse.Namespace) -> Config:
    """The configuration named by ``--config``, ``$TEMPMAIL_CONFIG`` or the default path."""
    from tempmail import config  # noqa: PLC0415 - imported per command to keep startup fast

    return config.load(args.config)


def positive_int(text: str) -> int:
    """An argparse type: a whole number above 0 (a PID: 0 and -1 would signal groups)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0, at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 86400:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 86400, got {text}")
    return value
