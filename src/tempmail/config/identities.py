"""The [identities.NAME] tables: domains, recipient, schemes, windows, tags and secrets."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from tempmail import schemes
from tempmail.config.model import (
    DELIMITERS,
    DOMAIN,
    LOCAL_PART_SYMBOLS,
    MAX_ADDRESS_LENGTH,
    NAME,
    SECRET_ENV,
    WEAK_CODE_LENGTH,
    Identity,
    ServerSettings,
)
from tempmail.config.tables import Table
from tempmail.secret import (
    Secret,
    parse_secret_text,
)


def parse_identities(
    table: Table, server: ServerSettings, environ: Mapping[str, str]
) -> tuple[Identity, ...]:
    """Every [identities.NAME] table, in the order of the file."""
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
        if not NAME.fullmatch(name):
            table.problem(name, "identity names use letters, digits, '_', '.' or '-'")
        identity = _identity(name, table.table(name, label="[identities.NAME]"), server, env_secret)
        if identity is not None:
            identities.append(identity)
    return tuple(identities)


def _identity(
    name: str, table: Table, server: ServerSettings, env_secret: str | None
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


def _schemes(table: Table) -> tuple[schemes.Scheme, tuple[schemes.Scheme, ...]]:
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


def _revoked_tags(table: Table) -> list[str]:
    revoked = table.list_of("revoked_tags", str, [])
    for tag in revoked:
        if not schemes.TAG_PATTERN.fullmatch(tag):
            table.problem("revoked_tags", f"{tag!r} is not a tag (lowercase letters, digits, _ -)")
    return revoked


def _legacy_tags_until(
    table: Table, *, tags: bool, zone: ZoneInfo, tag_window: int
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


def _domains(table: Table) -> tuple[str, ...]:
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
        if not DOMAIN.fullmatch(domain) or ("." not in domain and domain != "localhost"):
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
    if not at or not DOMAIN.fullmatch(domain.lower()):
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


def _secrets(table: Table, server: ServerSettings, env_secret: str | None) -> _SecretSources:
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
    table: Table, server: ServerSettings, env_secret: str | None
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
    elif "secret_file" in table.data or "secret" in table.data:
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
