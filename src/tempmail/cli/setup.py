"""``tempmail init`` and ``tempmail migrate``: write a new configuration (and secret)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tempmail import __version__
from tempmail.cli._common import EX_NOINPUT, EX_OK, PROG, error
from tempmail.errors import CannotCreate, UsageError

if TYPE_CHECKING:
    from tempmail.cli import Commands


def register(commands: Commands, parent: argparse.ArgumentParser) -> None:
    """Add the ``init`` and ``migrate`` commands."""
    init = commands.add_parser(
        "init",
        parents=[parent],
        help="write a new config with a strong random secret",
        description=(
            "Write a new configuration with a strong random secret (256 bits). Refuses to "
            "overwrite an existing file. The file is created with mode 0600."
        ),
    )
    init.add_argument("path", nargs="?", help="where to write (default: the config path)")
    init.add_argument("--domain", help="domain of the temporary addresses")
    init.add_argument("--recipient", help="permanent address that receives the mail")
    init.add_argument(
        "--secret-file", metavar="PATH", help="write the secret to this file (0600) instead"
    )
    init.add_argument(
        "--dev",
        action="store_true",
        help="a local trial config: example.org, socket next to the config file",
    )
    init.set_defaults(func=run_init)

    migrate = commands.add_parser(
        "migrate",
        parents=[parent],
        help="convert an original postfix-tempmail config (tempmail.cf) to TOML",
        description=(
            "Convert the bash config of the original postfix-tempmail (tempmail.cf) into "
            "TOML. The old file is parsed as data, never executed."
        ),
    )
    migrate.add_argument("old_file", metavar="OLD_FILE", help="e.g. /etc/postfix/tempmail.cf")
    migrate.add_argument(
        "-o", "--output", metavar="PATH", help="write here (mode 0600) instead of stdout"
    )
    migrate.add_argument(
        "--secret-file", metavar="PATH", help="write SHARED_SECRET to this file (0600) instead"
    )
    migrate.add_argument("--timezone", help="the old host's time zone (default: this host's)")
    migrate.set_defaults(func=run_migrate)


def run_init(args: argparse.Namespace) -> int:
    """Write a new config (and secret file)."""
    import getpass  # noqa: PLC0415
    import secrets  # noqa: PLC0415

    from tempmail import config  # noqa: PLC0415

    path = Path(args.path) if args.path else config.resolve_path(args.config)
    if args.dev:
        domain = args.domain or "example.org"
        recipient = args.recipient or "you@example.org"
    elif not (args.domain and args.recipient):
        raise UsageError(
            "--domain and --recipient are required (or --dev for a local trial config)"
        )
    else:
        domain, recipient = args.domain, args.recipient
    secret = secrets.token_urlsafe(32)  # 256 random bits
    identity: dict[str, Any] = {"domain": domain, "recipient": recipient, "scheme": "hmac"}
    identity |= {"length": 8, "window": 2, "timezone": "UTC"}
    data: dict[str, Any] = {}
    if args.dev:
        # The socket next to the config file; the current user, stated explicitly (a root
        # start without server.user is refused).
        data["server"] = {"user": getpass.getuser()}
        data["socket"] = {"type": "unix", "path": "tempmail.sock", "mode": "0660"}
    data["identities"] = {"default": identity}
    # What we write must load: validate it with the secret inline before touching the disk.
    config.parse({**data, "identities": {"default": {**identity, "secret": secret}}}, path=path)
    secret_file = Path(args.secret_file).absolute() if args.secret_file else None
    targets = [path] + ([secret_file] if secret_file else [])
    for target in targets:
        if target.exists():
            raise CannotCreate(f"{target} exists; refusing to overwrite it")
    if secret_file is not None:
        identity["secret_file"] = str(secret_file)
        _write_private(secret_file, secret + "\n")
    else:
        identity["secret"] = secret
    _write_private(path, _toml(data))
    print(f"{PROG}: wrote {path}" + (f" and {secret_file}" if secret_file else ""), file=sys.stderr)
    return EX_OK


def run_migrate(args: argparse.Namespace) -> int:
    """Convert an original postfix-tempmail config."""
    from tempmail import config, migrate  # noqa: PLC0415

    old = Path(args.old_file)
    try:
        text = old.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        error(f"{old}: cannot read: {getattr(exc, 'strerror', None) or exc}")
        return EX_NOINPUT
    variables, notes = migrate.parse_shell_assignments(text, str(old))
    timezone = args.timezone or migrate.detect_timezone()
    secret_file = Path(args.secret_file).absolute() if args.secret_file else None
    migration = migrate.convert(variables, timezone=timezone, secret_file=secret_file)
    # Validate the result as the server will load it (with the secret inline).
    check = json.loads(json.dumps(migration.data))
    identity = check["identities"][migrate.IDENTITY_NAME]
    identity.pop("secret_file", None)
    if "SHARED_SECRET" in variables:
        identity["secret"] = variables["SHARED_SECRET"]
    config.parse(check, path=Path(args.output).absolute() if args.output else old, environ={})
    for target in [Path(args.output) if args.output else None, secret_file]:
        if target is not None and target.exists():
            raise CannotCreate(f"{target} exists; refusing to overwrite it")
    if secret_file is not None:
        _write_private(secret_file, variables.get("SHARED_SECRET", "") + "\n")
    for note in notes + migration.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    if args.output:
        _write_private(Path(args.output), _toml(migration.data))
        print(f"{PROG}: wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(_toml(migration.data))
    return EX_OK


def _toml(data: dict[str, Any]) -> str:
    import tomli_w  # noqa: PLC0415

    header = f"# tempmail configuration, written by tempmail {__version__}.\n"
    header += "# Every key is documented in config.toml.example.\n\n"
    return header + tomli_w.dumps(data)


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600; never overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise CannotCreate(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
