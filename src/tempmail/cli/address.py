"""``tempmail address``: the currently valid addresses of an identity."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from tempmail.cli._common import EX_OK, PROG, error, load_config
from tempmail.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from tempmail.cli import Commands


def register(commands: Commands, parent: argparse.ArgumentParser) -> None:
    """Add the ``address`` command."""
    address = commands.add_parser(
        "address",
        parents=[parent],
        help="print the currently valid addresses, today's first",
        description="Print the currently valid addresses, today's first, one per line.",
    )
    address.add_argument("--identity", metavar="NAME", help="identity (default: the first)")
    address.add_argument(
        "--scheme", choices=["md5", "hmac"], help="scheme (default: the identity's 'scheme')"
    )
    address.add_argument(
        "--date", type=_date, metavar="YYYY-MM-DD", help="only the address of this local date"
    )
    address.add_argument("--tag", help="a tagged address TAG.CODE (identities with tags = true)")
    address.add_argument("--json", action="store_true", help="print a JSON list of objects")
    address.set_defaults(func=run)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    """Print the addresses."""
    from tempmail import generate, schemes  # noqa: PLC0415 - keeps the other commands fast

    identity = load_config(args).identity(args.identity)
    scheme = schemes.SCHEMES[args.scheme] if args.scheme else None
    if scheme is not None and scheme not in identity.accept:
        error(
            f"note: identity {identity.name!r} does not accept {scheme.name} addresses "
            f"(accept = {[s.name for s in identity.accept]})"
        )
    if args.tag is not None:
        if not identity.tags:
            raise ConfigError(f"identity {identity.name!r} has tags = false; set tags = true")
        if not schemes.TAG_PATTERN.fullmatch(args.tag):
            raise UsageError(f"--tag: {args.tag!r} is not a tag (1-32 of a-z, 0-9, '_', '-')")
    if args.date is not None:
        found = [generate.address_on(identity, args.date, scheme=scheme, tag=args.tag)]
    else:
        found = generate.current_addresses(identity, time.time(), scheme=scheme, tag=args.tag)
    zone = str(identity.timezone)
    if args.json:
        rows: list[dict[str, Any]] = [
            {
                "address": str(a),
                "date": a.day.isoformat(),
                "scheme": a.scheme,
                "identity": a.identity,
                "timezone": zone,
                "tag": a.tag,
            }
            for a in found
        ]
        print(json.dumps(rows, indent=2))
    else:
        print("\n".join(str(a) for a in found))
        print(f"{PROG}: dates are local dates in {zone}", file=sys.stderr)
    return EX_OK
