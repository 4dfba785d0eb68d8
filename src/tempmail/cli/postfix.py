"""``tempmail postfix-config`` and ``tempmail check``: Postfix's side of the configuration."""

from __future__ import annotations

import argparse
import sys
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Final

from tempmail.cli._common import EX_OK, PROG, error, load_config
from tempmail.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from tempmail.cli import Commands

#: ``tempmail check`` found at least one problem (each printed with its fix). Distinct from
#: 78 (tempmail's own configuration is broken) and 69 (Postfix's cannot be read).
EX_PROBLEMS: Final = 1

APPLY: Final = "tempmail postfix-config | xargs -r -d '\\n' postconf -e"


def register(commands: Commands, parent: argparse.ArgumentParser) -> None:
    """Add the ``postfix-config`` and ``check`` commands."""
    settings = commands.add_parser(
        "postfix-config",
        parents=[parent],
        help="print the main.cf settings that connect Postfix to this server",
        description=(
            "Print the main.cf settings for this configuration, one 'name = value' per line, "
            f"as postconf -e takes them: {APPLY}. virtual_alias_maps asks tempmail only about "
            "the temporary domains (Postfix 3.7 or later), so that a tempmail outage defers "
            "only their mail. With --merge, the settings main.cf already has are kept."
        ),
    )
    settings.add_argument(
        "--postfix-socket",
        metavar="PATH",
        type=_absolute,
        help="the socket's path as Postfix sees it, when it differs from [socket] path (a "
        "sidecar's /run/tempmail/socket is /var/spool/postfix/tempmail/socket in Postfix's "
        "container)",
    )
    settings.add_argument(
        "--queue-directory",
        metavar="DIR",
        type=_absolute,
        default=None,
        help="Postfix's queue_directory (default: /var/spool/postfix, or Postfix's with "
        "--merge); a socket inside it is named relative to it, which chrooted daemons need",
    )
    settings.add_argument(
        "--merge",
        action="store_true",
        help="combine with the virtual alias settings main.cf already has (read with postconf; "
        "--postfix-dir or $MAIL_CONFIG name its directory): keep their domains and tables, "
        "replace an earlier tempmail lookup of the same socket",
    )
    settings.add_argument(
        "--postfix-dir",
        metavar="DIR",
        help="with --merge: Postfix's configuration directory (default: $MAIL_CONFIG, else "
        "postconf's own, /etc/postfix)",
    )
    settings.set_defaults(func=run_postfix_config)

    check = commands.add_parser(
        "check",
        parents=[parent],
        help="check that Postfix reaches this server as it should (exit 0: all good)",
        description=(
            "Read Postfix's configuration with postconf and check virtual_alias_maps (this "
            "server's socket and map name, behind the guard), virtual_alias_domains, "
            "mydestination and recipient_delimiter; connect to the socket as Postfix's "
            "mail_owner, chrooted as master.cf says; and look up today's address of each "
            "identity with postmap as mail_owner. Each problem is printed with its fix. Exit "
            "status: 0 all passed, 1 problems found, 69 postconf cannot read Postfix's "
            "configuration, 78 tempmail's configuration is broken. Run it as root."
        ),
    )
    check.add_argument(
        "--postfix-dir",
        metavar="DIR",
        help="Postfix's configuration directory (default: $MAIL_CONFIG, else postconf's own "
        "default, /etc/postfix)",
    )
    check.set_defaults(func=run_check)


def _absolute(text: str) -> PurePosixPath:
    from tempmail import postfix  # noqa: PLC0415 - keeps the other commands fast

    path = PurePosixPath(text)
    problem = postfix.path_problem(path)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return path


def run_postfix_config(args: argparse.Namespace) -> int:
    """Print the settings; notes for the operator go to stderr."""
    from tempmail import postfix  # noqa: PLC0415

    config = load_config(args)
    if args.postfix_dir and not args.merge:
        raise UsageError("--postfix-dir is read only with --merge: add --merge or drop it")
    existing: dict[str, str] = {}
    queue = args.queue_directory or postfix.DEFAULT_QUEUE_DIRECTORY
    if args.merge:
        from tempmail import doctor  # noqa: PLC0415

        tools = doctor.Postfix.locate(args.postfix_dir)
        existing = tools.explicit(postfix.PARAMETERS)
        if args.queue_directory is None:
            queue = PurePosixPath(tools.parameters(["queue_directory"])["queue_directory"])
    try:
        rendered = postfix.settings(
            config, postfix_socket=args.postfix_socket, queue_directory=queue
        )
    except ValueError as exc:
        raise ConfigError(f"{config.path}: {exc}") from None
    if args.merge:
        rendered = postfix.merge(rendered, existing, queue)
    sys.stdout.write(rendered.text())
    for note in rendered.notes:
        error(f"note: {note}")
    return EX_OK


def run_check(args: argparse.Namespace) -> int:
    """Run every check; print one line per finding and a summary."""
    from tempmail import doctor  # noqa: PLC0415

    config = load_config(args)
    tools = doctor.Postfix.locate(args.postfix_dir)
    try:
        report = doctor.check(config, tools)
    except ValueError as exc:  # the socket cannot be named in main.cf, as postfix-config says
        raise ConfigError(f"{config.path}: {exc}") from None
    print(f"Postfix {report.postfix_version}, configuration in {report.config_directory}")
    for finding in report.findings:
        print(f"{'ok  ' if finding.passed else 'FAIL'}  {finding.text}")
    if report.problems:
        print(f"{PROG} check: {report.problems} problem{'s' if report.problems > 1 else ''}")
        return EX_PROBLEMS
    print(f"{PROG} check: all {len(report.findings)} checks passed")
    return EX_OK
