"""Configuration: TOML in, frozen and validated dataclasses out.

Every problem names the file and the dotted key, and all problems are reported at once.
``config.toml.example`` documents each key; a test loads it. The schema has one table per
identity (``[identities.NAME]``) so that several identities and key rotation fit without any
change to existing files.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tempmail import schemes
from tempmail.errors import ConfigError
from tempmail.netstring import HARD_LIMIT
from tempmail.secret import (
    Permissions,
    Secret,
    check_permissions,
    parse_secret_text,
    read_secret_file,
)

DEFAULT_PATH: Final = Path("/etc/tempmail/config.toml")
CONFIG_ENV: Final = "TEMPMAIL_CONFIG"
SECRET_ENV: Final = "TEMPMAIL_SECRET"  # noqa: S105 - the variable's name, not a secret

#: Below this many bytes a secret can be guessed offline from one published address.
WEAK_SECRET_BYTES: Final = 16
#: Below this many hex digits a code can be guessed by sending mail.
WEAK_CODE_LENGTH: Final = 6
#: sun_path holds 108 bytes including the terminating NUL (unix(7)).
MAX_UNIX_PATH: Final = 107
#: The longest address SMTP allows in a path (RFC 5321 4.5.3.1.3, 256 octets with brackets).
MAX_ADDRESS_LENGTH: Final = 254

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
_LOCAL = re.compile(r"[^\s@,<>()\[\]\\;:\"]+")
_MODE = re.compile(r"0?[0-7]{3}")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class SocketSettings:
    """Where the server listens: a unix socket (default) or TCP."""

    type: Literal["unix", "inet"] = "unix"
    path: Path = Path("/var/spool/postfix/tempmail/socket")
    owner: str | int | None = None
    group: str | int | None = None
    mode: int = 0o660
    host: str = "127.0.0.1"
    port: int = 10000

    def describe(self) -> str:
        """The address in ``tempmail query --socket`` syntax."""
        if self.type == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"inet:{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """How the server behaves, independent of any identity."""

    map_name: str = "tempmail"
    max_query_length: int = 512
    idle_timeout: float = 60.0
    max_connections: int = 1000
    user: str | None = None
    recipient_delimiter: str = "+"
    secret_permissions: Permissions = Permissions.PRIVATE
    log_level: str = "info"
    event_loop: str = "auto"  # uvloop when installed, else asyncio's own loop
    reload_on_change: bool = True  # watch the config and secret files; no signal needed


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """One owner: their domains, permanent recipient, secrets and address rules."""

    name: str
    domains: tuple[str, ...]
    recipient: str
    secrets: tuple[Secret, ...]  # the first generates; all are accepted (key rotation)
    scheme: schemes.Scheme
    accept: tuple[schemes.Scheme, ...]
    length: int
    window: int
    timezone: ZoneInfo
    tags: bool
    tag_window: int
    tag_delimiter: str
    revoked_tags: frozenset[str]

    @property
    def domain(self) -> str:
        """The domain that generated addresses use."""
        return self.domains[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSettings:
    """The optional Prometheus endpoint (off unless ``enabled``)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9143
    summary_interval: float = 300.0  # seconds between one-line summaries in the log; 0 = never


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """A loaded, validated configuration."""

    path: Path | None
    server: ServerSettings
    socket: SocketSettings
    identities: tuple[Identity, ...]
    metrics: MetricsSettings = MetricsSettings()
    warnings: tuple[str, ...] = ()
    #: The files this configuration was read from: the config file (when loaded from one)
    #: and every secret file, as absolute paths. A reload watches them for changes.
    files: tuple[Path, ...] = ()

    def identity(self, name: str | None) -> Identity:
        """The named identity, or the first when ``name`` is None."""
        if name is None:
            return self.identities[0]
        for identity in self.identities:
            if identity.name == name:
                return identity
        known = ", ".join(i.name for i in self.identities)
        raise ConfigError(f"no identity named {name!r} (configured: {known})")


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
        hint = " (create one with 'tempmail init')" if isinstance(exc, FileNotFoundError) else ""
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
    reader = _Reader(str(path) if path else "<config>", (path or Path("x")).absolute().parent)
    top = _Table(reader, data, "")
    server = _server(top.table("server"))
    socket = _socket(top.table("socket"))
    metrics = _metrics(top.table("metrics"))
    identities = _identities(top.table("identities"), server, environ)
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


def _server(table: _Table) -> ServerSettings:
    default = ServerSettings()
    map_name = table.get("map_name", str, default.map_name)
    if not _NAME.fullmatch(map_name):
        table.problem("map_name", "use letters, digits, '_', '.' or '-' (at most 64)")
    delimiter = table.get("recipient_delimiter", str, default.recipient_delimiter)
    if any(c.isspace() or c == "@" or not c.isprintable() or not c.isascii() for c in delimiter):
        table.problem(
            "recipient_delimiter", "ASCII characters only, and no '@', spaces or control characters"
        )
    permissions = table.choice(
        "secret_permissions", [p.value for p in Permissions], default.secret_permissions.value
    )
    user = table.get("user", str, "")
    settings = ServerSettings(
        map_name=map_name,
        max_query_length=table.integer(
            "max_query_length", default.max_query_length, 64, HARD_LIMIT
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


def _event_loop(table: _Table, default: str) -> str:
    choice = table.choice("event_loop", ["auto", "asyncio", "uvloop"], default)
    if choice == "uvloop" and importlib.util.find_spec("uvloop") is None:
        table.problem("event_loop", "uvloop is not installed (pip install uvloop)")
    return choice


def _socket(table: _Table) -> SocketSettings:
    default = SocketSettings()
    kind = table.choice("type", ["unix", "inet"], default.type)
    path = table.path("path") or default.path
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        table.problem(
            "path",
            f"{path} is {len(os.fsencode(path))} bytes long; unix socket paths are limited to "
            f"{MAX_UNIX_PATH} bytes (too long for the kernel)",
        )
    mode_text = table.get("mode", str, f"{default.mode:04o}")
    if not _MODE.fullmatch(mode_text):
        table.problem("mode", f'expected an octal mode like "0660", got {mode_text!r}')
        mode_text = "0660"
    host = table.get("host", str, default.host)
    if not host:
        table.problem("host", "must not be empty")
    settings = SocketSettings(
        type=cast("Literal['unix', 'inet']", kind),
        path=path,
        owner=table.user_or_id("owner"),
        group=table.user_or_id("group"),
        mode=int(mode_text, 8),
        host=host,
        port=table.integer("port", default.port, 1, 65535),
    )
    table.done()
    return settings


def _metrics(table: _Table) -> MetricsSettings:
    default = MetricsSettings()
    settings = MetricsSettings(
        enabled=table.get("enabled", bool, default.enabled),
        host=table.get("host", str, default.host),
        port=table.integer("port", default.port, 1, 65535),
        summary_interval=table.number("summary_interval", default.summary_interval, 0, 86400),
    )
    table.done()
    return settings


def _identities(
    table: _Table, server: ServerSettings, environ: Mapping[str, str]
) -> tuple[Identity, ...]:
    names = list(table.keys())
    if not names:
        table.problem(
            "", "no identity configured: add an [identities.NAME] table (see config.toml.example)"
        )
        return ()
    env_secret = environ.get(SECRET_ENV)
    if env_secret is not None and len(names) > 1:
        table.problem("", f"{SECRET_ENV} is set, but it can only stand in for a single identity")
        env_secret = None
    identities = []
    for name in names:
        if not _NAME.fullmatch(name):
            table.problem(name, "identity names use letters, digits, '_', '.' or '-'")
        identity = _identity(name, table.table(name), server, env_secret)
        if identity is not None:
            identities.append(identity)
    return tuple(identities)


def _identity(
    name: str, table: _Table, server: ServerSettings, env_secret: str | None
) -> Identity | None:
    domains = _domains(table)
    recipient = table.optional("recipient", str)
    if recipient is None:
        table.problem("recipient", "missing: the permanent address that receives the mail")
    elif not _valid_address(recipient):
        table.problem("recipient", f"{recipient!r} is not an e-mail address like user@example.org")
    scheme, accept = _schemes(table)
    length = table.integer("length", 8, 1, min(s.max_length for s in accept))
    window = table.integer("window", 2, 1, 366)
    zone = table.timezone("timezone", "UTC")
    tags = table.get("tags", bool, False)
    tag_window = table.integer("tag_window", window, 1, 366)
    tag_delimiter = table.get("tag_delimiter", str, "+")
    if len(tag_delimiter) > 1 or tag_delimiter.isspace() or tag_delimiter == "@":
        table.problem("tag_delimiter", "must be one character other than '@' or space, or empty")
    revoked = _revoked_tags(table)
    if tags and schemes.HMAC not in accept:
        table.problem("tags", "tagged addresses need the hmac scheme in 'accept'")
    secrets = _secrets(table, server, env_secret)
    if length < WEAK_CODE_LENGTH:
        table.warn("length", f"codes of {length} hex digits can be guessed by sending mail")
    table.done()
    if not domains or recipient is None or not secrets or table.reader.failed:
        return None
    return Identity(
        name=name,
        domains=domains,
        recipient=recipient,
        secrets=secrets,
        scheme=scheme,
        accept=accept,
        length=length,
        window=window,
        timezone=zone,
        tags=tags,
        tag_window=tag_window,
        tag_delimiter=tag_delimiter,
        revoked_tags=frozenset(revoked),
    )


def _schemes(table: _Table) -> tuple[schemes.Scheme, tuple[schemes.Scheme, ...]]:
    """The generating scheme and the accepted ones (which must include it)."""
    name = table.choice("scheme", list(schemes.SCHEMES), "hmac")
    accept: list[schemes.Scheme] = []
    for accepted in table.list_of("accept", str, [name]):
        if accepted not in schemes.SCHEMES:
            table.problem("accept", f"unknown scheme {accepted!r} (known: md5, hmac)")
        elif schemes.SCHEMES[accepted] not in accept:
            accept.append(schemes.SCHEMES[accepted])
    scheme = schemes.SCHEMES[name]
    if scheme not in accept:
        table.problem("accept", f"must include the generating scheme {name!r}")
        accept.append(scheme)
    return scheme, tuple(accept)


def _revoked_tags(table: _Table) -> list[str]:
    revoked = table.list_of("revoked_tags", str, [])
    for tag in revoked:
        if not schemes.TAG_PATTERN.fullmatch(tag):
            table.problem("revoked_tags", f"{tag!r} is not a tag (lowercase letters, digits, _ -)")
    return revoked


def _domains(table: _Table) -> tuple[str, ...]:
    single = table.optional("domain", str)
    several = table.optional_list("domains", str)
    if single is not None and several is not None:
        table.problem("domains", "give either 'domain' or 'domains', not both")
    given = [single] if single is not None else (several or [])
    if not given and single is None and several is None:
        table.problem("domain", "missing: the domain of the temporary addresses")
    domains: list[str] = []
    for raw in given:
        domain = raw.lower().removesuffix(".")
        if not _DOMAIN.fullmatch(domain) or ("." not in domain and domain != "localhost"):
            key = "domain" if single is not None else "domains"
            table.problem(key, f"{raw!r} is not a domain name (use the ASCII/punycode form)")
        elif domain not in domains:
            domains.append(domain)
    if several is not None and not several:
        table.problem("domains", "must list at least one domain")
    return tuple(domains)


def _valid_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return (
        bool(at)
        and len(address) <= MAX_ADDRESS_LENGTH
        and _LOCAL.fullmatch(local) is not None
        and _DOMAIN.fullmatch(domain.lower()) is not None
    )


def _secrets(table: _Table, server: ServerSettings, env_secret: str | None) -> tuple[Secret, ...]:
    inline = table.optional("secret", str)
    file = table.path("secret_file")
    found: list[Secret] = []
    if inline is not None and file is not None:
        table.problem("secret", "give either 'secret' or 'secret_file', not both")
    elif (inline is not None or file is not None) and env_secret is not None:
        key = "secret" if inline is not None else "secret_file"
        table.problem(key, f"also given in {SECRET_ENV}; remove one of the two")
    elif inline is not None:
        found.append(table.secret_text("secret", inline))
    elif file is not None:
        found.append(table.secret_file("secret_file", file, server.secret_permissions))
    elif env_secret is not None:
        try:
            # os.environ holds undecodable bytes as surrogates: keep them to report them.
            found.append(parse_secret_text(env_secret.encode(errors="surrogateescape"), SECRET_ENV))
        except ValueError as exc:
            table.reader.problem("", str(exc))
    else:
        table.problem(
            "secret_file",
            f"missing: set secret_file (recommended), secret, or the {SECRET_ENV} variable",
        )
    found.extend(
        table.secret_text("previous_secrets", text)
        for text in table.list_of("previous_secrets", str, [])
    )
    for raw_path in table.list_of("previous_secret_files", str, []):
        path = table.reader.resolve(raw_path)
        found.append(table.secret_file("previous_secret_files", path, server.secret_permissions))
    return tuple(found) if found and not table.reader.failed else ()


# --- reading helpers ------------------------------------------------------------------------


class _Reader:
    """Collects problems and warnings for one file."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.files_read: list[Path] = []  # secret files, absolute, in the order read

    @property
    def failed(self) -> bool:
        return bool(self.problems)

    def problem(self, key: str, message: str) -> None:
        where = f"{self.source}: {key}" if key else self.source
        self.problems.append(f"{where}: {message}")

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(f"{self.source}: {key}: {message}")

    def resolve(self, raw: str) -> Path:
        return self.base_dir / Path(raw).expanduser()

    def raise_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


_TYPE_NAMES: Final = {str: "a string", int: "an integer", bool: "a boolean", float: "a number"}


def _type_name(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class _Table:
    """One TOML table: typed getters that record problems and remember the keys they read."""

    def __init__(self, reader: _Reader, data: Mapping[str, Any], prefix: str) -> None:
        self.reader = reader
        self.data = data
        self.prefix = prefix
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix and name else self.prefix or name

    def problem(self, name: str, message: str) -> None:
        self.reader.problem(self.key(name), message)

    def warn(self, name: str, message: str) -> None:
        self.reader.warn(self.key(name), message)

    def keys(self) -> list[str]:
        self.seen.update(self.data)
        return list(self.data)

    def table(self, name: str) -> _Table:
        self.seen.add(name)
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            self.problem(name, f"expected a table, got {_type_name(value)}")
            value = {}
        return _Table(self.reader, value, self.key(name))

    def get(self, name: str, kind: type[T], default: T) -> T:
        value = self.optional(name, kind)
        return default if value is None else value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name, int, default)
        if not low <= value <= high:
            self.problem(name, f"must be between {low} and {high}, got {value}")
            return default
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        self.seen.add(name)
        value = self.data.get(name, default)
        if type(value) not in (int, float):
            self.problem(name, f"expected a number, got {_type_name(value)}")
            return default
        if not low <= value <= high:
            self.problem(name, f"must be between {low:g} and {high:g}, got {value}")
            return default
        return float(value)

    def choice(self, name: str, allowed: list[str], default: str) -> str:
        value = self.get(name, str, default)
        if value not in allowed:
            options = ", ".join(repr(a) for a in allowed)
            self.problem(name, f"must be one of {options}, got {value!r}")
            return default
        return value

    def list_of(self, name: str, kind: type[T], default: list[T]) -> list[T]:
        found = self.optional_list(name, kind)
        return default if found is None else found

    def optional_list(self, name: str, kind: type[T]) -> list[T] | None:
        self.seen.add(name)
        if name not in self.data:
            return None
        value = self.data[name]
        if not isinstance(value, list):
            self.problem(name, f"expected an array, got {_type_name(value)}")
            return None
        for index, item in enumerate(value):
            if type(item) is not kind:
                self.problem(
                    f"{name}[{index}]", f"expected {_TYPE_NAMES[kind]}, got {_type_name(item)}"
                )
                return None
        return value

    def optional(self, name: str, kind: type[T]) -> T | None:
        """The value, or None when absent or of the wrong type (a problem is recorded)."""
        self.seen.add(name)
        if name not in self.data:
            return None
        value = self.data[name]
        # TOML keeps booleans and integers apart; Python's bool is an int subclass, so check.
        if type(value) is not kind:
            self.problem(name, f"expected {_TYPE_NAMES[kind]}, got {_type_name(value)}")
            return None
        return value  # checked just above

    def path(self, name: str) -> Path | None:
        raw = self.optional(name, str)
        if raw is None:
            return None
        if not raw:
            self.problem(name, "must not be empty")
            return None
        return self.reader.resolve(raw)

    def user_or_id(self, name: str) -> str | int | None:
        self.seen.add(name)
        value = self.data.get(name)
        if value is None:
            return None
        if type(value) is int and value >= 0:
            return value
        if type(value) is str and value:
            return value
        self.problem(name, f"expected a name or a numeric id, got {_type_name(value)}")
        return None

    def timezone(self, name: str, default: str) -> ZoneInfo:
        text = self.get(name, str, default)
        try:
            return ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            self.problem(name, f"unknown IANA time zone {text!r} (for example 'Europe/Berlin')")
            return ZoneInfo(default)

    def secret_text(self, name: str, text: str) -> Secret:
        try:
            secret = parse_secret_text(text.encode(), self.key(name))
        except ValueError as exc:
            self.problem(name, str(exc).removeprefix(self.key(name) + " "))
            return Secret(b"-")
        self._warn_if_weak(name, secret)
        return secret

    def secret_file(self, name: str, path: Path, permissions: Permissions) -> Secret:
        self.reader.files_read.append(path.absolute())
        try:
            secret = read_secret_file(path, permissions)
        except ValueError as exc:
            self.problem(name, str(exc))
            return Secret(b"-")
        self._warn_if_weak(name, secret)
        return secret

    def _warn_if_weak(self, name: str, secret: Secret) -> None:
        if len(secret.reveal()) < WEAK_SECRET_BYTES:
            self.warn(
                name,
                f"the secret is shorter than {WEAK_SECRET_BYTES} bytes and can be guessed "
                "offline from one address; 'tempmail init' makes a strong one",
            )

    def done(self) -> None:
        """Report keys nobody asked for, with a suggestion when one is close."""
        for unknown in sorted(set(self.data) - self.seen):
            close = difflib.get_close_matches(unknown, sorted(self.seen), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.problem(unknown, f"unknown key{hint}")
