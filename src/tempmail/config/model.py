"""What a configuration is: its frozen dataclasses, its limits and the syntax of its values."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from zoneinfo import ZoneInfo

from tempmail import schemes
from tempmail.errors import ConfigError
from tempmail.secret import (
    Permissions,
    Secret,
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

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DOMAIN = re.compile(rf"(?=.{{1,253}}$){LABEL}(?:\.{LABEL})*")
MODE = re.compile(r"0?[0-7]{3}")
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
ACCOUNT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?")
#: A host name, IPv4 or IPv6 address (with an optional %zone), as getaddrinfo(3) takes it.
HOST = re.compile(r"[A-Za-z0-9_.:%-]{1,253}")
#: Characters that have a meaning where Postfix names the socket in main.cf
#: (virtual_alias_maps = socketmap:unix:PATH:NAME): spaces and ',' separate list items, '$'
#: expands a parameter, '{' and '}' group (pipemap:{...}), control characters end lines.
POSTFIX_PATH_SPECIALS = re.compile(r"[\s,${}\x00-\x1f\x7f]")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


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
