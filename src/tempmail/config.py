"""Configuration: TOML in, frozen and validated dataclasses out.

Every problem names the file and the dotted key, and all problems are reported at once.
``config.toml.example`` documents each key; a test loads it. The schema has one table per
identity (``[identities.NAME]``) so that several identities and key rotation fit without any
change to existing files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import enum
import importlib.util
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tempmail import runtime, schemes
from tempmail.errors import ConfigError
from tempmail.secret import (
    Permissions,
    Secret,
    check_permissions,
    parse_secret_text,
    read_secret_file,
)
from tempmail.socketmap import MAX_REPLY_LENGTH

if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed import DataclassInstance

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
_MODE = re.compile(r"0?[0-7]{3}")
#: Postfix reads an ``OK`` reply of virtual_alias_maps as an RFC 822 address *list*
#: (virtual(5)): a ',' or a space makes it two recipients, quotes, '<', '(' and '\\' are
#: address syntax, and a NUL ends the C string early. A recipient is therefore one plain
#: address: its local part a dot-atom (RFC 5322) of letters, digits and these symbols, which
#: leave out '!' and '%' because Postfix routes by them (swap_bangpath, allow_percent_hack:
#: "you%evil.example@example.net" would be sent to evil.example).
LOCAL_PART_SYMBOLS: Final = "#$&'*+-/=?^_`{|}~"
#: What may start an address extension (server.recipient_delimiter) or join a tag to the
#: recipient (tag_delimiter). Each ends up in an address Postfix parses, and
#: recipient_delimiter also in main.cf (`tempmail postfix-config`), where '$' expands; a
#: letter or digit would cut codes and tags apart.
DELIMITERS: Final = "+-_=.~"
#: Login and group names as useradd(8) accepts them, or numeric ids. A NUL, a space or a
#: ':' would reach getpwnam(3) or chown(1)-style tools in ways nobody meant.
_ACCOUNT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?")
#: A host name, IPv4 or IPv6 address (with an optional %zone), as getaddrinfo(3) takes it.
_HOST = re.compile(r"[A-Za-z0-9_.:%-]{1,253}")
#: Characters that have a meaning where Postfix names the socket in main.cf
#: (virtual_alias_maps = socketmap:unix:PATH:NAME): spaces and ',' separate list items, '$'
#: expands a parameter, '{' and '}' group (pipemap:{...}), control characters end lines.
_POSTFIX_PATH_SPECIALS = re.compile(r"[\s,${}\x00-\x1f\x7f]")
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
    #: Where ``secrets`` came from, for ``dump()``: the file of the first secret (None when it
    #: is inline or from $TEMPMAIL_SECRET) and the files of the previous ones, all absolute.
    secret_file: Path | None = None
    previous_secret_files: tuple[Path, ...] = ()
    #: The last local date on which 1.x tagged addresses (``TAG.CODE`` without a day hint)
    #: were handed out; they are checked for the dates of the tag window up to this one.
    legacy_tags_until: dt.date | None = None

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
class PublishSettings:
    """Files that show today's addresses to a website, which then needs no secret."""

    file: Path | None = None  # today's address of each identity, one per line
    json: Path | None = None  # the same with date, end of validity and scheme, as JSON
    mode: int = 0o644


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """A loaded, validated configuration."""

    path: Path | None
    server: ServerSettings
    socket: SocketSettings
    identities: tuple[Identity, ...]
    metrics: MetricsSettings = MetricsSettings()
    publish: PublishSettings = PublishSettings()
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
    reader = _Reader(str(path) if path else "<config>", (path or Path("x")).absolute().parent)
    top = _Table(reader, data, "")
    server = _server(top.table("server"))
    socket = _socket(top.table("socket"))
    metrics = _metrics(top.table("metrics"))
    identities = _identities(top.table("identities"), server, environ)
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


def dump(config: Config) -> dict[str, Any]:
    """The TOML data of ``config``, the inverse of :func:`parse`.

    ``parse(dump(c), path=c.path)`` equals ``c`` when its secrets come from files (or from the
    same environment): secrets are never written. ``secret_file`` and
    ``previous_secret_files`` keep their (absolute) paths, an inline ``secret`` or
    ``previous_secrets`` is left out, and whoever means to write one adds it. Every setting
    is written, defaults included, so a generated file shows where the socket is and how
    addresses are made; only ``accept`` and ``tag_window`` are left out while they equal
    what they default to (``[scheme]``, ``window``). The result holds only dicts, lists,
    str, int, float, bool and dates, ready for tomli-w.
    """
    data: dict[str, Any] = {
        field.name: _dump_fields(getattr(config, field.name))  # [server], [socket], ...
        for field in dataclasses.fields(config)
        if field.name not in _NOT_SECTIONS
    }
    data["identities"] = {identity.name: _dump_identity(identity) for identity in config.identities}
    return data


#: Fields of Config that are not sections: where and how it was read, and the identities.
_NOT_SECTIONS: Final = frozenset({"path", "warnings", "files", "identities"})
#: Fields of Identity that are not keys of its table.
_NOT_IDENTITY_KEYS: Final = frozenset({"name", "secrets", "domains"})


def _dump_identity(identity: Identity) -> dict[str, Any]:
    table: dict[str, Any] = (
        {"domain": identity.domain}
        if len(identity.domains) == 1
        else {"domains": list(identity.domains)}
    )
    table |= _dump_fields(identity, skip=_NOT_IDENTITY_KEYS)
    # Keys whose default follows another key are left out while they follow it, so that they
    # keep following it when that key is edited later.
    if identity.accept == (identity.scheme,):
        del table["accept"]
    if identity.tag_window == identity.window:
        del table["tag_window"]
    return table


def _dump_fields(settings: DataclassInstance, skip: Collection[str] = ()) -> dict[str, Any]:
    """Each field of a settings dataclass as a TOML value; None (unset) is left out."""
    table = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name in _FILE_MODES:
            table[field.name] = f"{value:04o}"
        elif field.name not in skip and value is not None:
            table[field.name] = _toml_value(value, field.name)
    return table


#: Fields that hold a file mode: an int here, an octal string in the file ("0660").
_FILE_MODES: Final = frozenset({"mode"})


#: How values that TOML has no type for are written (parse() reads them back).
_TOML_FORMS: Final[tuple[tuple[type, Callable[[Any], str]], ...]] = (
    (Path, str),
    (enum.Enum, lambda member: member.value),
    (schemes.Scheme, lambda scheme: scheme.name),
    (ZoneInfo, lambda zone: zone.key),
)


def _toml_value(value: object, name: str) -> Any:  # noqa: ANN401 - any TOML value
    if isinstance(value, bool | int | float | str | dt.date):
        return value
    if isinstance(value, tuple | frozenset):
        items = [_toml_value(item, name) for item in value]
        return sorted(items) if isinstance(value, frozenset) else items
    for kind, form in _TOML_FORMS:
        if isinstance(value, kind):
            return form(value)
    # A new setting of a new type: say which, rather than write something parse() refuses.
    message = f"config.dump: no TOML form for {name} ({type(value).__name__})"
    raise TypeError(message)


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
    if user and not _ACCOUNT.fullmatch(user):
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


def _event_loop(table: _Table, default: str) -> str:
    choice = table.choice("event_loop", ["auto", "asyncio", "uvloop"], default)
    if choice == "uvloop" and importlib.util.find_spec("uvloop") is None:
        table.problem("event_loop", "uvloop is not installed (pip install uvloop)")
    return choice


def _socket(table: _Table) -> SocketSettings:
    default = SocketSettings()
    kind = table.choice("type", ["unix", "inet"], default.type)
    path = table.path("path") or default.path
    if _POSTFIX_PATH_SPECIALS.search(str(path)):
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
    if not _MODE.fullmatch(mode_text):
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


def _metrics(table: _Table) -> MetricsSettings:
    default = MetricsSettings()
    settings = MetricsSettings(
        enabled=table.get("enabled", bool, default.enabled),
        host=table.host("host", default.host),
        port=table.integer("port", default.port, 0, 65535),  # 0: the kernel picks one
        summary_interval=table.number("summary_interval", default.summary_interval, 0, 86400),
    )
    table.done()
    return settings


def _publish(table: _Table, protected: list[Path]) -> PublishSettings:
    """[publish]: paths relative to the config file, a mode that lets nobody else write."""
    default = PublishSettings()
    mode_text = table.get("mode", str, f"{default.mode:04o}")
    mode = default.mode
    if not _MODE.fullmatch(mode_text):
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
        identity = _identity(name, table.table(name, label="[identities.NAME]"), server, env_secret)
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
    elif problem := _address_problem(recipient):
        table.problem("recipient", problem)
    scheme, accept = _schemes(table)
    length = table.integer("length", 8, 1, min(s.max_length for s in accept))
    window = table.integer("window", 2, 1, 366)
    zone = table.timezone("timezone", "UTC")
    tags = table.get("tags", bool, False)
    tag_window = table.integer("tag_window", window, 1, 366)
    tag_delimiter = table.get("tag_delimiter", str, "+")
    if len(tag_delimiter) > 1 or (tag_delimiter and tag_delimiter not in DELIMITERS):
        table.problem(
            "tag_delimiter",
            f'must be one of {" ".join(DELIMITERS)}, or "" for none (others change how '
            f"Postfix reads the reply), got {tag_delimiter!r}",
        )
    revoked = _revoked_tags(table)
    legacy_tags_until = _legacy_tags_until(table, tags=tags, zone=zone, tag_window=tag_window)
    if tags and schemes.HMAC not in accept:
        table.problem("tags", "tagged addresses need the hmac scheme in 'accept'")
    sources = _secrets(table, server, env_secret)
    if length < WEAK_CODE_LENGTH:
        table.warn("length", f"codes of {length} hex digits can be guessed by sending mail")
    table.done()
    if not domains or recipient is None or not sources.secrets or table.reader.failed:
        return None
    return Identity(
        name=name,
        domains=domains,
        recipient=recipient,
        secrets=sources.secrets,
        secret_file=sources.file,
        previous_secret_files=sources.previous_files,
        scheme=scheme,
        accept=accept,
        length=length,
        window=window,
        timezone=zone,
        tags=tags,
        tag_window=tag_window,
        tag_delimiter=tag_delimiter,
        revoked_tags=frozenset(revoked),
        legacy_tags_until=legacy_tags_until,
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


def _legacy_tags_until(
    table: _Table, *, tags: bool, zone: ZoneInfo, tag_window: int
) -> dt.date | None:
    """The upgrade day after which no 1.x tagged address was handed out (a TOML date)."""
    table.seen.add("legacy_tags_until")
    raw = table.data.get("legacy_tags_until")
    if raw is None:
        return None
    # A TOML date, or the same as a string; a date-time (a subclass of date) is refused.
    day = raw if type(raw) is dt.date else _iso_date(raw)
    if day is None:
        table.problem(
            "legacy_tags_until",
            "expected a date like 2026-11-27 (the day you upgraded from tempmail 1.x)",
        )
        return None
    if not tags:
        table.problem("legacy_tags_until", "only for tagged addresses: set tags = true")
        return None
    # The one check that depends on today: a date that has left the window is only clutter.
    oldest = dt.datetime.now(zone).date() - dt.timedelta(days=tag_window - 1)
    if day < oldest:
        table.warn(
            "legacy_tags_until",
            f"{day} is before every date of the tag window (tag_window = {tag_window}): "
            "every 1.x tagged address has expired; remove this key",
        )
    return day


def _iso_date(value: object) -> dt.date | None:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d\d-\d\d", value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:  # 2026-02-30
        return None


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


def _address_problem(address: str) -> str | None:
    """Why ``address`` is not one plain address Postfix reads as it is, or None."""
    local, at, domain = address.rpartition("@")
    if len(address) > MAX_ADDRESS_LENGTH:
        return f"longer than {MAX_ADDRESS_LENGTH} characters (SMTP's limit)"
    if not at or not _DOMAIN.fullmatch(domain.lower()):
        return f"{address!r} is not an e-mail address like user@example.org"
    if not all(atom and all(map(_atom_character, atom)) for atom in local.split(".")):
        return (
            f"{address!r} is not one plain address: before the @ use letters, digits, dots "
            f"between them and {LOCAL_PART_SYMBOLS} (no spaces, commas, quotes, brackets, "
            "control characters, '!' or '%', which Postfix reads as address syntax)"
        )
    return None


def _atom_character(char: str) -> bool:
    if char.isascii():
        return char.isalnum() or char in LOCAL_PART_SYMBOLS
    # UTF-8 local parts (RFC 6531): Postfix takes non-ASCII bytes as atom characters, but
    # invisible separators and C1 controls have no place in an address.
    return char.isprintable() and not char.isspace()


@dataclass(frozen=True, slots=True)
class _SecretSources:
    secrets: tuple[Secret, ...]
    file: Path | None
    previous_files: tuple[Path, ...]


def _secrets(table: _Table, server: ServerSettings, env_secret: str | None) -> _SecretSources:
    current, file = _current_secret(table, server, env_secret)
    found = [current] if current is not None else []
    found.extend(
        table.secret_text("previous_secrets", text)
        for text in table.list_of("previous_secrets", str, [])
    )
    previous_files = []
    for index, raw_path in enumerate(table.list_of("previous_secret_files", str, [])):
        key = f"previous_secret_files[{index}]"
        path = table.resolve(key, raw_path)
        if path is not None:
            previous_files.append(path)
            found.append(table.secret_file(key, path, server.secret_permissions))
    if not found or table.reader.failed:
        return _SecretSources((), None, ())
    return _SecretSources(tuple(found), file, tuple(previous_files))


def _current_secret(
    table: _Table, server: ServerSettings, env_secret: str | None
) -> tuple[Secret | None, Path | None]:
    """The secret that generates addresses, and its file when it comes from one."""
    inline = table.optional("secret", str)
    file = table.path("secret_file")
    if inline is not None and file is not None:
        table.problem("secret", "give either 'secret' or 'secret_file', not both")
    elif (inline is not None or file is not None) and env_secret is not None:
        key = "secret" if inline is not None else "secret_file"
        table.problem(key, f"also given in {SECRET_ENV}; remove one of the two")
    elif inline is not None:
        return table.secret_text("secret", inline), None
    elif file is not None:
        return table.secret_file("secret_file", file, server.secret_permissions), file
    elif "secret_file" in table.data:
        pass  # given, but unusable: that problem is recorded, "missing" would be wrong
    elif env_secret is not None:
        try:
            # os.environ holds undecodable bytes as surrogates: keep them to report them.
            secret = env_secret.encode(errors="surrogateescape")
            return parse_secret_text(secret, SECRET_ENV), None
        except ValueError as exc:
            table.reader.problem("", str(exc))
    else:
        table.problem(
            "secret_file",
            f"missing: set secret_file (recommended), secret, or the {SECRET_ENV} variable",
        )
    return None, None


# --- reading helpers ------------------------------------------------------------------------


class _Reader:
    """Collects problems and warnings for one file."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        # An unknown key is worded only at the end, when every table has said which keys it
        # reads: a key that belongs in another table is told where it belongs.
        self.problems: list[str | _UnknownKey] = []
        self.warnings: list[str] = []
        self.files_read: list[Path] = []  # secret files, absolute, in the order read
        self.tables: dict[str, set[str]] = {}  # table label -> the keys it reads

    @property
    def failed(self) -> bool:
        return bool(self.problems)

    def problem(self, key: str, message: str) -> None:
        where = f"{self.source}: {key}" if key else self.source
        self.problems.append(f"{where}: {message}")

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(f"{self.source}: {key}: {message}")

    def raise_problems(self) -> None:
        if self.problems:
            raise ConfigError([self._worded(problem) for problem in self.problems])

    def _worded(self, problem: str | _UnknownKey) -> str:
        if isinstance(problem, str):
            return problem
        homes = [
            label
            for label, keys in self.tables.items()
            if problem.name in keys and label != problem.table
        ]
        if homes:
            hint = f" (it belongs in {' or '.join(homes)})"
        elif problem.close_match:
            hint = f" (did you mean {problem.close_match!r}?)"
        else:
            hint = ""
        return f"{self.source}: {problem.key}: unknown key{hint}"


@dataclass(frozen=True, slots=True)
class _UnknownKey:
    key: str  # dotted, as reported
    name: str  # as written
    table: str  # the label of the table it was found in
    close_match: str | None  # a key of that table spelled alike


_TYPE_NAMES: Final = {str: "a string", int: "an integer", bool: "a boolean", float: "a number"}


def _type_name(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class _Table:
    """One TOML table: typed getters that record problems and remember the keys they read."""

    def __init__(
        self, reader: _Reader, data: Mapping[str, Any], prefix: str, label: str = "the top level"
    ) -> None:
        self.reader = reader
        self.data = data
        self.prefix = prefix
        self.label = label  # how a hint names this kind of table: "[server]", "[identities.NAME]"
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

    def table(self, name: str, label: str | None = None) -> _Table:
        """The sub-table ``name``; ``label`` names its kind in hints (default ``[KEY]``)."""
        self.seen.add(name)
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            self.problem(name, f"expected a table, got {_type_name(value)}")
            value = {}
        return _Table(self.reader, value, self.key(name), label or f"[{self.key(name)}]")

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
        return None if raw is None else self.resolve(name, raw)

    def resolve(self, name: str, raw: str) -> Path | None:
        """``raw`` as an absolute path, relative to the config file's folder.

        Problems never quote ``raw``: a secret pasted where its file's path belongs must not be
        printed at start or logged at every reload.
        """
        if not raw:
            self.problem(name, "must not be empty")
            return None
        if "\0" in raw:
            self.problem(name, "must not contain a NUL character")
            return None
        try:
            return self.reader.base_dir / Path(raw).expanduser()
        except RuntimeError:  # "~name/..." for a user this system does not have
            self.problem(name, "starts with '~' and a user name this system does not know")
            return None

    def host(self, name: str, default: str) -> str:
        host = self.get(name, str, default)
        if not host:
            self.problem(name, "must not be empty")
            return default
        if not _HOST.fullmatch(host):
            self.problem(name, f"expected a host name or IP address like ::1, got {host!r}")
            return default
        return host

    def user_or_id(self, name: str) -> str | int | None:
        self.seen.add(name)
        value = self.data.get(name)
        if value is None:
            return None
        if type(value) is int and value >= 0:
            return value
        if type(value) is str and _ACCOUNT.fullmatch(value):
            return value
        wrong = repr(value) if type(value) is str else _type_name(value)
        self.problem(name, f"expected a name or a numeric id, got {wrong}")
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
        """Report keys nobody asked for: where they belong, or a key spelled alike."""
        self.reader.tables.setdefault(self.label, set()).update(self.seen)
        for unknown in sorted(set(self.data) - self.seen):
            close = difflib.get_close_matches(unknown, sorted(self.seen), n=1)
            self.reader.problems.append(
                _UnknownKey(self.key(unknown), unknown, self.label, close[0] if close else None)
            )
