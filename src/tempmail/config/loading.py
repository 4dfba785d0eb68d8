"""Loading and parsing: a TOML file to a validated :class:`Config`, every problem at once."""

from __future__ import annotations

import importlib.util
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

from tempmail import runtime
from tempmail.config.identities import parse_identities
from tempmail.config.model import (
    ACCOUNT,
    CONFIG_ENV,
    DEFAULT_PATH,
    DELIMITERS,
    LOG_LEVELS,
    MAX_UNIX_PATH,
    MODE,
    NAME,
    POSTFIX_PATH_SPECIALS,
    Config,
    MetricsSettings,
    PublishSettings,
    ServerSettings,
    SocketSettings,
)
from tempmail.config.tables import Reader, Table
from tempmail.errors import ConfigError
from tempmail.secret import (
    Permissions,
    check_permissions,
)
from tempmail.socketmap import MAX_REPLY_LENGTH


def resolve_path(path: str | Path | None, environ: Mapping[str, str] = os.environ) -> Path:
    """The config file to use: ``--config``, else ``$TEMPMAIL_CONFIG``, else the default."""
    if path:
        return Path(path)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return DEFAULT_PATH


def load(path: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    """Read, parse and validate a config file (and the secrets it names)."""
    file = resolve_path(path, environ)
    try:
        raw = file.read_bytes()
        mode = file.stat().st_mode
    except OSError as exc:
        hint = ""
        if isinstance(exc, FileNotFoundError):
            hint = (
                f" (mount the directory that holds it at {file.parent}, e.g. "
                f"-v ./config:{file.parent}:ro; see docs/containers.md)"
                if runtime.in_container(environ)
                else " (create one with 'tempmail init')"
            )
        raise ConfigError(f"{file}: cannot read the configuration: {exc.strerror}{hint}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    return parse(data, path=file, file_mode=mode, environ=environ)


def parse(
    data: Mapping[str, Any],
    *,
    path: Path | None = None,
    file_mode: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Config:
    """Validate already-parsed TOML data. Relative paths are relative to the file's folder."""
    reader = Reader(str(path) if path else "<config>", (path or Path("x")).absolute().parent)
    top = Table(reader, data, "")
    server = _server(top.table("server"))
    socket = _socket(top.table("socket"))
    metrics = _metrics(top.table("metrics"))
    identities = parse_identities(top.table("identities"), server, environ)
    publish = _publish(top.table("publish"), [*([path] if path else []), *reader.files_read])
    top.done()
    if file_mode is not None and path is not None and _has_inline_secret(data):
        problem = check_permissions(path, file_mode, server.secret_permissions)
        if problem:
            reader.problem("", f"the file holds an inline secret and {problem}")
    reader.raise_problems()
    return Config(
        path=path,
        server=server,
        socket=socket,
        identities=identities,
        metrics=metrics,
        publish=publish,
        warnings=tuple(reader.warnings),
        files=tuple(dict.fromkeys([*([path.absolute()] if path else []), *reader.files_read])),
    )


def _has_inline_secret(data: Mapping[str, Any]) -> bool:
    identities = data.get("identities")
    if not isinstance(identities, dict):
        return False
    return any(
        isinstance(table, dict) and ("secret" in table or bool(table.get("previous_secrets")))
        for table in identities.values()
    )


# --- sections -------------------------------------------------------------------------------


def _server(table: Table) -> ServerSettings:
    default = ServerSettings()
    map_name = table.get("map_name", str, default.map_name)
    if not NAME.fullmatch(map_name):
        table.problem("map_name", "use letters, digits, '_', '.' or '-' (at most 64)")
    delimiter = table.get("recipient_delimiter", str, default.recipient_delimiter)
    if any(c not in DELIMITERS for c in delimiter):
        table.problem(
            "recipient_delimiter",
            f"each character must be one of {' '.join(DELIMITERS)} (others change how Postfix "
            f"reads addresses), got {delimiter!r}",
        )
    permissions = table.choice(
        "secret_permissions", [p.value for p in Permissions], default.secret_permissions.value
    )
    user = table.get("user", str, "")
    if user and not ACCOUNT.fullmatch(user):
        table.problem("user", f"expected a user name or a numeric uid, got {user!r}")
    settings = ServerSettings(
        map_name=map_name,
        max_query_length=table.integer(
            "max_query_length", default.max_query_length, 64, MAX_REPLY_LENGTH
        ),
        idle_timeout=table.number("idle_timeout", default.idle_timeout, 0.1, 86400),
        max_connections=table.integer("max_connections", default.max_connections, 1, 1_000_000),
        user=user or None,
        recipient_delimiter=delimiter,
        secret_permissions=Permissions(permissions),
        log_level=table.choice("log_level", list(LOG_LEVELS), default.log_level),
        event_loop=_event_loop(table, default.event_loop),
        reload_on_change=table.get("reload_on_change", bool, default.reload_on_change),
    )
    table.done()
    return settings


def _event_loop(table: Table, default: str) -> str:
    choice = table.choice("event_loop", ["auto", "asyncio", "uvloop"], default)
    if choice == "uvloop" and importlib.util.find_spec("uvloop") is None:
        table.problem("event_loop", "uvloop is not installed (pip install uvloop)")
    return choice


def _socket(table: Table) -> SocketSettings:
    default = SocketSettings()
    kind = table.choice("type", ["unix", "inet"], default.type)
    path = table.path("path") or default.path
    if POSTFIX_PATH_SPECIALS.search(str(path)):
        table.problem(
            "path",
            f"{str(path)!r} holds a space, ',', '$', '{{', '}}' or a control character, which "
            "mean something where main.cf names the socket: choose a path without them",
        )
    elif len(os.fsencode(path)) > MAX_UNIX_PATH:
        table.problem(
            "path",
            f"{path} is {len(os.fsencode(path))} bytes long; unix socket paths are limited to "
            f"{MAX_UNIX_PATH} bytes (too long for the kernel)",
        )
    mode_text = table.get("mode", str, f"{default.mode:04o}")
    if not MODE.fullmatch(mode_text):
        table.problem("mode", f'expected an octal mode like "0660", got {mode_text!r}')
        mode_text = "0660"
    settings = SocketSettings(
        type=cast("Literal['unix', 'inet']", kind),
        path=path,
        owner=table.user_or_id("owner"),
        group=table.user_or_id("group"),
        mode=int(mode_text, 8),
        host=table.host("host", default.host),
        port=table.integer("port", default.port, 0, 65535),  # 0: the kernel picks one
    )
    table.done()
    return settings


def _metrics(table: Table) -> MetricsSettings:
    default = MetricsSettings()
    settings = MetricsSettings(
        enabled=table.get("enabled", bool, default.enabled),
        host=table.host("host", default.host),
        port=table.integer("port", default.port, 0, 65535),  # 0: the kernel picks one
        summary_interval=table.number("summary_interval", default.summary_interval, 0, 86400),
    )
    table.done()
    return settings


def _publish(table: Table, protected: list[Path]) -> PublishSettings:
    """[publish]: paths relative to the config file, a mode that lets nobody else write."""
    default = PublishSettings()
    mode_text = table.get("mode", str, f"{default.mode:04o}")
    mode = default.mode
    if not MODE.fullmatch(mode_text):
        table.problem("mode", f'expected an octal mode like "0644", got {mode_text!r}')
    elif int(mode_text, 8) & 0o022:
        # Whoever can rewrite the file decides which address the website shows.
        table.problem(
            "mode", f"{mode_text} lets other users rewrite the published file; use 0644 or 0640"
        )
    else:
        mode = int(mode_text, 8)
    # Writing over the configuration or a secret would lose it (and publish nothing useful).
    # realpath: a symlink or ".." does not hide that two names are one file. Not
    # Path.resolve(), which raises on a symlink loop or one that vanishes while it is followed.
    taken = {_real(p): "the configuration file or a secret file" for p in protected}
    paths: dict[str, Path] = {}
    for key in ("file", "json"):
        path = table.path(key)
        if path is None:
            continue
        where = _real(path)
        if where in taken:
            table.problem(key, f"{path} is {taken[where]}; publish to a file of its own")
        else:
            paths[key] = path
            taken[where] = f"also publish.{key}"
    table.done()
    return PublishSettings(file=paths.get("file"), json=paths.get("json"), mode=mode)


def _real(path: Path) -> Path:
    """The path with every symlink and ".." followed as far as they lead; never raises.

    A link that changes while it is followed (realpath's lstat and readlink are two calls)
    leaves the path as written: this is a comparison, and publishing never follows a link.
    """
    try:
        return Path(os.path.realpath(path))
    except OSError:
        return path.absolute()
