"""The ``tempmail`` command line: address, serve, query, init, migrate.

Exit codes follow sysexits(3); errors go to stderr as one line each. Each command imports
only what it needs, so ``tempmail address`` starts fast (no event loop is imported).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tempmail import __version__
from tempmail.errors import ConfigError, TempmailError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from tempmail.client import Client
    from tempmail.config import Config
    from tempmail.socketmap import Reply

# Exit codes, as in sysexits(3).
EX_OK: Final = 0
EX_NOTFOUND: Final = 1  # `tempmail query`: the key is not a valid address
EX_USAGE: Final = 64
EX_DATAERR: Final = 65
EX_NOINPUT: Final = 66
EX_UNAVAILABLE: Final = 69
EX_SOFTWARE: Final = 70
EX_OSERR: Final = 71
EX_CANTCREAT: Final = 73
EX_TEMPFAIL: Final = 75
EX_PROTOCOL: Final = 76
EX_CONFIG: Final = 78

PROG: Final = "tempmail"
#: What --ping looks up: never a valid address (.invalid is reserved, RFC 2606).
PING_KEY: Final = "tempmail-ping@ping.invalid"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except ConfigError as exc:
        for problem in exc.problems:
            _error(problem)
        return EX_CONFIG
    except _CannotCreate as exc:
        _error(str(exc))
        return EX_CANTCREAT
    except TempmailError as exc:
        _error(str(exc))
        return EX_OSERR
    except KeyboardInterrupt:
        return 130


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Postfix socketmap lookup service for temporary e-mail addresses.",
        epilog=(
            "The config file is --config, else $TEMPMAIL_CONFIG, else /etc/tempmail/config.toml."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-c", "--config", metavar="PATH", help="configuration file (TOML)")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    address = commands.add_parser(
        "address",
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
    address.set_defaults(func=_address)

    serve = commands.add_parser(
        "serve", help="run the socketmap server in the foreground (logs to stderr)"
    )
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override log_level"
    )
    serve.set_defaults(func=_serve)

    query = commands.add_parser(
        "query",
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
    query.set_defaults(func=_query)

    init = commands.add_parser(
        "init",
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
    init.set_defaults(func=_init)

    migrate = commands.add_parser(
        "migrate",
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
    migrate.set_defaults(func=_migrate)
    return parser


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def _load(args: argparse.Namespace) -> Config:
    from tempmail import config  # noqa: PLC0415 - imported per command to keep startup fast

    return config.load(args.config)


# --- address --------------------------------------------------------------------------------


def _address(args: argparse.Namespace) -> int:
    from tempmail import generate, schemes  # noqa: PLC0415

    identity = _load(args).identity(args.identity)
    scheme = schemes.SCHEMES[args.scheme] if args.scheme else None
    if scheme is not None and scheme not in identity.accept:
        _error(
            f"note: identity {identity.name!r} does not accept {scheme.name} addresses "
            f"(accept = {[s.name for s in identity.accept]})"
        )
    if args.tag is not None:
        if not identity.tags:
            raise ConfigError(f"identity {identity.name!r} has tags = false; set tags = true")
        if not schemes.TAG_PATTERN.fullmatch(args.tag):
            _error(f"--tag: {args.tag!r} is not a tag (1-32 of a-z, 0-9, '_', '-')")
            return EX_USAGE
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


# --- serve ----------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from tempmail import logs  # noqa: PLC0415

    logs.configure(args.log_level or "info")
    config = _load(args)
    logs.configure(args.log_level or config.server.log_level)
    from tempmail.service import run_server  # noqa: PLC0415

    run_server(config, os.environ)
    return EX_OK


# --- query ----------------------------------------------------------------------------------


def _query(args: argparse.Namespace) -> int:
    from tempmail import generate  # noqa: PLC0415

    if sum((args.key is not None, args.self_test, args.ping)) != 1:
        _error("give a KEY, --self-test or --ping")
        return EX_USAGE
    config = _load(args) if args.self_test or not (args.socket and args.map) else None
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
        _error(f"--socket: {exc}")
        return EX_USAGE
    except ProtocolError as exc:
        _error(f"{target}: {exc}")
        return EX_PROTOCOL
    except OSError as exc:
        _error(f"cannot query {target}: {exc.strerror or exc}")
        return EX_UNAVAILABLE


def _self_test(connection: Client, map_name: str, checks: list[tuple[str, str]]) -> int:
    from tempmail.socketmap import Status  # noqa: PLC0415

    for key, expected in checks:
        reply = connection.query(map_name, key)
        if reply.status is not Status.OK or reply.data != expected:
            _error(f"self-test: {key} -> {reply.status.value} {reply.data}".rstrip())
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
    _error(f"{reply.status.value} {reply.data}")
    return EX_DATAERR if reply.status is Status.PERM else EX_TEMPFAIL


# --- init and migrate -----------------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    import getpass  # noqa: PLC0415
    import secrets  # noqa: PLC0415

    from tempmail import config  # noqa: PLC0415

    path = Path(args.path) if args.path else config.resolve_path(args.config)
    if args.dev:
        domain = args.domain or "example.org"
        recipient = args.recipient or "you@example.org"
    elif not (args.domain and args.recipient):
        _error("--domain and --recipient are required (or --dev for a local trial config)")
        return EX_USAGE
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
            _error(f"{target} exists; refusing to overwrite it")
            return EX_CANTCREAT
    if secret_file is not None:
        identity["secret_file"] = str(secret_file)
        _write_private(secret_file, secret + "\n")
    else:
        identity["secret"] = secret
    _write_private(path, _toml(data))
    print(f"{PROG}: wrote {path}" + (f" and {secret_file}" if secret_file else ""), file=sys.stderr)
    return EX_OK


def _migrate(args: argparse.Namespace) -> int:
    from tempmail import config, migrate  # noqa: PLC0415

    old = Path(args.old_file)
    try:
        text = old.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _error(f"{old}: cannot read: {getattr(exc, 'strerror', None) or exc}")
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
            _error(f"{target} exists; refusing to overwrite it")
            return EX_CANTCREAT
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
        raise _CannotCreate(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


class _CannotCreate(TempmailError):
    pass
