"""``tempmail init`` and ``tempmail migrate``: write a new configuration (and secret).

Both validate first and write second: the settings go through ``config.parse`` exactly as the
server will load them (with the secret inline), and what is written is ``config.dump`` of the
result, plus the secret's place (its file, or the secret inline). The files are created by
``_files`` (never overwriting, never following links).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tempmail import version
from tempmail.cli._common import EX_NOINPUT, EX_OK, PROG, error
from tempmail.cli._files import Access, create, directory, refuse_existing, remove
from tempmail.errors import CannotCreate, ConfigError, UsageError
from tempmail.secret import Permissions

if TYPE_CHECKING:
    import grp
    import pwd

    from tempmail.cli import Commands

#: The group Postfix's daemons run as on Debian: the socket's group in a host config.
HOST_SOCKET_GROUP: Final = "postfix"


def register(commands: Commands, parent: argparse.ArgumentParser) -> None:
    """Add the ``init`` and ``migrate`` commands."""
    init = commands.add_parser(
        "init",
        parents=[parent],
        help="write a new config with a strong random secret",
        description=(
            "Write a new configuration with a strong random secret (256 bits). Refuses to "
            "overwrite an existing file and creates a missing config directory. Files are "
            "created with mode 0600, or 0640 for the group of --user."
        ),
    )
    init.add_argument("path", nargs="?", help="where to write (default: the config path)")
    init.add_argument("--domain", help="domain of the temporary addresses")
    init.add_argument("--recipient", help="permanent address that receives the mail")
    init.add_argument("--secret-file", metavar="PATH", help="write the secret to this file instead")
    init.add_argument(
        "--user",
        metavar="NAME",
        help=(
            "the unprivileged user the server switches to when started as root "
            "(server.user); the config, the secret and a new config directory become "
            "readable by its group, so that reloads work after the switch"
        ),
    )
    init.add_argument(
        "--socket-group",
        metavar="GROUP",
        help=f"group of the unix socket (default: {HOST_SOCKET_GROUP}; none with --dev)",
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
    import secrets  # noqa: PLC0415

    from tempmail import config  # noqa: PLC0415

    path = (Path(args.path) if args.path else config.resolve_path(args.config)).absolute()
    secret_file = _secret_file(args.secret_file, path)
    user = _existing_user(args.user) if args.user else None
    data, notes = _init_settings(args)
    secret = secrets.token_urlsafe(32)  # 256 random bits
    data["identities"]["default"]["secret"] = secret
    checked = config.parse(data, path=path, environ={})
    access = Access(user.pw_gid, _group_name(user.pw_gid)) if user else Access()
    new = _toml(_with_secret(config.dump(checked), secret_file, secret))
    _write([*([(secret_file, secret + "\n")] if secret_file else []), (path, new)], access)
    written = f"{path}" + (f" and {secret_file}" if secret_file else "")
    if user:
        written += f", readable by group {access.group_name} (mode {access.file_mode:04o})"
        notes.extend(_unreachable(user, [path, *([secret_file] if secret_file else [])]))
    print(f"{PROG}: wrote {written}", file=sys.stderr)
    for note in notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    return EX_OK


def _init_settings(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The new config's data (without a secret) from the options, and notes for the operator."""
    import getpass  # noqa: PLC0415

    from tempmail import config  # noqa: PLC0415

    if args.dev:
        identity = {
            "domain": args.domain or "example.org",
            "recipient": args.recipient or "you@example.org",
        }
    elif args.domain and args.recipient:
        identity = {"domain": args.domain, "recipient": args.recipient}
    else:
        raise UsageError(
            "--domain and --recipient are required (or --dev for a local trial config)"
        )
    notes = []
    socket_group = args.socket_group or (None if args.dev else HOST_SOCKET_GROUP)
    if args.socket_group:
        _existing_group(args.socket_group)
    elif socket_group and _group(socket_group) is None:
        notes.append(
            f"socket.group = {socket_group!r}, a group this system does not have (yet): the "
            "server needs it when it starts (install Postfix first, or use --socket-group)"
        )
    server: dict[str, Any] = {}
    if args.dev or args.user:
        # Stated explicitly: a start as root without server.user is refused.
        server["user"] = args.user or getpass.getuser()
    if args.user:
        # 0640 for the user's group: the server re-reads both files at each reload.
        server["secret_permissions"] = Permissions.GROUP.value
    socket: dict[str, Any] = {
        "type": "unix",
        # Written out in the file, so that the operator sees where the socket is.
        "path": "tempmail.sock" if args.dev else str(config.SocketSettings().path),
        "mode": "0660",
    }
    if socket_group:
        # A number is a gid, as in the config file; a string of digits would be a name.
        numeric = socket_group.isascii() and socket_group.isdigit()
        socket["group"] = int(socket_group) if numeric else socket_group
    identity["scheme"] = "hmac"
    return {"server": server, "socket": socket, "identities": {"default": identity}}, notes


def run_migrate(args: argparse.Namespace) -> int:
    """Convert an original postfix-tempmail config."""
    from tempmail import config, migrate  # noqa: PLC0415

    old = Path(args.old_file)
    try:
        # Bytes, then text: read_text() would turn "\r\n" into "\n", which bash does not.
        text = old.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        error(f"{old}: cannot read: {getattr(exc, 'strerror', None) or exc}")
        return EX_NOINPUT
    output = Path(args.output).absolute() if args.output else None
    secret_file = _secret_file(args.secret_file, output)
    variables, notes = migrate.parse_shell_assignments(text, str(old))
    if "SHARED_SECRET" not in variables:
        raise ConfigError(f"{old}: SHARED_SECRET is not set; the original needs one")
    secret = variables["SHARED_SECRET"]
    if "\n" in secret or "\r" in secret:
        # tempmail's secrets are one line (a secret file's line end is not part of it), so
        # such a secret would silently give other addresses than the original's.
        raise ConfigError(
            f"{old}: SHARED_SECRET holds a line break, which tempmail's secrets cannot; "
            "choose a new secret (every address changes), or remove the line break in the "
            "original first"
        )
    timezone = args.timezone or migrate.detect_timezone()
    migration = migrate.convert(variables, timezone=timezone, source=str(old))
    checked = config.parse(migration.data, path=output or old.absolute(), environ={})
    new = _toml(_with_secret(config.dump(checked), secret_file, secret))
    _write(
        [
            *([(secret_file, secret + "\n")] if secret_file else []),
            *([(output, new)] if output else []),
        ],
        Access(),
    )
    for note in notes + migration.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    if output is not None:
        print(f"{PROG}: wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(new)
    return EX_OK


def _secret_file(given: str | None, config_path: Path | None) -> Path | None:
    secret_file = Path(given).absolute() if given else None
    if secret_file is not None and secret_file == config_path:
        raise UsageError("--secret-file must name another file than the configuration")
    return secret_file


def _with_secret(data: dict[str, Any], secret_file: Path | None, secret: str) -> dict[str, Any]:
    """``data`` (from ``config.dump``, which writes no secret) with the secret's place.

    That is ``secret_file`` (the file is written by ``_write``) or the secret inline, right
    after ``recipient``.
    """
    ((name, table),) = data["identities"].items()
    entry = ("secret_file", str(secret_file)) if secret_file else ("secret", secret)
    items = list(table.items())
    after = [key for key, _ in items].index("recipient") + 1
    data["identities"][name] = dict([*items[:after], entry, *items[after:]])
    return data


def _write(files: list[tuple[Path, str]], access: Access) -> None:
    """Create each (path, text) in order; when one fails, remove those created before it."""
    refuse_existing(*(path for path, _ in files))
    with contextlib.ExitStack() as stack:
        created: list[tuple[int, Path]] = []
        try:
            for path, text in files:
                directory_fd = stack.enter_context(directory(path.parent, access))
                create(directory_fd, path, text, access)
                created.append((directory_fd, path))
        except CannotCreate:
            for directory_fd, path in created:
                remove(directory_fd, path)
            raise


def _existing_user(name: str) -> pwd.struct_passwd:
    import pwd  # noqa: PLC0415

    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError, OverflowError):  # ValueError: a NUL, or '²'.isdigit()
        raise UsageError(
            f"--user: no user {name!r} on this system; create it first "
            f"(for example: useradd --system {name})"
        ) from None


def _group(name: str) -> grp.struct_group | None:
    import grp  # noqa: PLC0415

    try:
        return grp.getgrgid(int(name)) if name.isdigit() else grp.getgrnam(name)
    except (KeyError, ValueError, OverflowError):
        return None


def _existing_group(name: str) -> None:
    if _group(name) is None:
        raise UsageError(
            f"--socket-group: no group {name!r} on this system (Postfix's is 'postfix')"
        )


def _group_name(gid: int) -> str:
    import grp  # noqa: PLC0415

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _unreachable(user: pwd.struct_passwd, files: list[Path]) -> list[str]:
    """A note for each directory on the way to ``files`` that ``user`` cannot enter.

    The server reads the config and secret again at every reload, after it switched to
    ``user``; init never changes an existing directory, so it says what to change.
    """
    if user.pw_uid == 0:
        return []
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    notes: list[str] = []
    checked: set[Path] = set()
    for file in files:
        for folder in reversed(file.parents):  # from "/" down
            if folder in checked:
                continue
            checked.add(folder)
            info = folder.stat()
            if info.st_uid == user.pw_uid:
                may_enter = info.st_mode & stat.S_IXUSR
            elif info.st_gid in groups:
                may_enter = info.st_mode & stat.S_IXGRP
            else:
                may_enter = info.st_mode & stat.S_IXOTH
            if not may_enter:
                notes.append(
                    f"user {user.pw_name} cannot enter {folder} (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}), so the server cannot read {file} "
                    f"after switching to it and every reload will fail; for example: "
                    f"chgrp {_group_name(user.pw_gid)} {folder} && chmod g+x {folder}"
                )
                break
    return notes


def _toml(data: dict[str, Any]) -> str:
    import tomli_w  # noqa: PLC0415

    header = f"# tempmail configuration, written by tempmail {version()}.\n"
    header += "# Every key is documented in config.toml.example.\n\n"
    return header + tomli_w.dumps(data)
