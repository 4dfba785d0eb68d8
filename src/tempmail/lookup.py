"""The lookup policy: a key and an instant in, a socketmap reply out. No I/O, no clock reads.

For each day the valid addresses of every identity are computed once into a table, so a
lookup is one hash and one dictionary probe. The table is keyed by a keyed BLAKE2b digest of
the normalised address (a random key per process): the probe compares digests, never the
attacker's bytes with a code, so its timing tells nothing about how close a guess was.

Tagged addresses ``TAG.CODE`` cannot be tabled (the tag is anyone's choice): the code carries
a day hint and a key id (schemes.tagged_code), so a tagged lookup computes one HMAC, whatever
``tag_window`` and the number of secrets; hints outside the window, unknown key ids and revoked
tags cost exactly the same. Only 1.x tagged codes (no hint) are tried for every date up to
``legacy_tags_until`` and every secret, a cost that shrinks to nothing as those dates expire.

What Postfix does *not* do for socketmap tables, the lookup does (see README, "Postfix facts"):
fold case, strip a recipient delimiter extension, answer bare domains and other non-address
keys with a fast NOTFOUND, and never map an address that could be a result (no loops).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tempmail import schemes, socketmap, window
from tempmail.socketmap import NOTFOUND, Reply

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable

    from tempmail.config import Identity
    from tempmail.secret import Secret

_DIGEST_SIZE: Final = 16
_HEX: Final = frozenset(b"0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Match:
    """Why an address is valid: for logs and metrics, never sent to a client."""

    identity: str
    day: dt.date
    scheme: str
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """A reply and, when the key was a valid address, what it matched."""

    reply: Reply
    match: Match | None = None


NOT_AN_ADDRESS: Final = Result(NOTFOUND)


class _TagRules:
    """How one identity's tagged codes are checked while one table is in use."""

    __slots__ = (
        "_any_secret",
        "_day_by_hint",
        "_identity",
        "_legacy_dates",
        "_secrets_by_key_id",
        "_today",
        "code_length",
        "legacy_code_length",
    )

    def __init__(self, identity: Identity, dates: tuple[dt.date, ...]) -> None:
        self._identity = identity
        self.code_length = schemes.TAG_PREFIX_DIGITS + identity.length
        # At most 366 dates, and hints repeat only every 4096 days: one date per hint.
        self._day_by_hint = {schemes.day_hint(day).encode(): day for day in dates}
        self._today = dates[0]
        by_key_id: dict[bytes, list[Secret]] = {}
        for secret in identity.secrets:
            by_key_id.setdefault(schemes.key_id(secret.reveal()).encode(), []).append(secret)
        self._secrets_by_key_id = {key: tuple(found) for key, found in by_key_id.items()}
        self._any_secret = identity.secrets[:1]
        until = identity.legacy_tags_until
        self._legacy_dates = tuple(d for d in dates if until is not None and d <= until)
        # 0 (no key is that long) once every 1.x date has left the window.
        self.legacy_code_length = identity.length if self._legacy_dates else 0

    def check(self, tag: str, code: bytes) -> Result | None:
        """The result for a code ``HINT KEYID MAC`` of this identity's length, or None."""
        identity = self._identity
        hint = code[: schemes.DAY_HINT_DIGITS]
        key_id = code[schemes.DAY_HINT_DIGITS : schemes.TAG_PREFIX_DIGITS]
        mac = code[schemes.TAG_PREFIX_DIGITS :]
        day = self._day_by_hint.get(hint)
        candidates = self._secrets_by_key_id.get(key_id)
        # The same work for every key: a hint outside the window, a key id of no secret and a
        # revoked tag each still cost one HMAC and one comparison, so timing tells none apart.
        # The verdict is combined without short cuts (`&`, `|=`), so the path taken does not
        # depend on which of its parts failed either.
        revoked = tag in identity.revoked_tags
        matched = False
        for secret in candidates or self._any_secret:
            expected = schemes.tag_mac(day or self._today, tag, secret.reveal(), identity.length)
            matched |= hmac.compare_digest(expected.encode(), mac)
        accepted = matched & (not revoked) & (candidates is not None)
        if not accepted or day is None:
            return None
        return _tagged_result(identity, day, tag)

    def check_legacy(self, tag: str, code: bytes) -> Result | None:
        """The result for a 1.x code (HMAC digits only), tried for every date and secret."""
        identity = self._identity
        revoked = tag in identity.revoked_tags
        found: dt.date | None = None
        for day in self._legacy_dates:
            for secret in identity.secrets:
                expected = schemes.legacy_tagged_code(day, tag, secret.reveal(), identity.length)
                if hmac.compare_digest(expected.encode(), code) and found is None:
                    found = day
        if found is None or revoked:
            return None
        return _tagged_result(identity, found, tag)


class AddressTable:
    """Every valid address at one instant, usable until the next local midnight."""

    __slots__ = ("_by_digest", "_digest_key", "_domains", "_tags", "valid_from", "valid_until")

    def __init__(self, identities: Iterable[Identity], now: float, digest_key: bytes) -> None:
        self._digest_key = digest_key
        self._by_digest: dict[bytes, Result] = {}
        self._domains: set[bytes] = set()
        self._tags: dict[bytes, list[_TagRules]] = {}
        self.valid_from = float("-inf")
        self.valid_until = float("inf")
        for identity in identities:
            self._add(identity, now)

    def __len__(self) -> int:
        return len(self._by_digest)

    def _add(self, identity: Identity, now: float) -> None:
        span = window.span_at(now, identity.timezone, identity.window)
        self._narrow(span, identity)
        reply = socketmap.ok(identity.recipient)
        for domain in identity.domains:
            encoded_domain = domain.encode()
            self._domains.add(encoded_domain)
            for scheme in identity.accept:
                for secret in identity.secrets:
                    for day in span.dates:
                        local = schemes.code(scheme, day, secret.reveal(), identity.length)
                        digest = self._digest(local.encode(), encoded_domain)
                        # setdefault: on the (2^-4length) chance of two identities sharing a
                        # code and a domain, the first configured identity wins.
                        self._by_digest.setdefault(
                            digest, Result(reply, Match(identity.name, day, scheme.name))
                        )
        if identity.tags:
            tag_span = window.span_at(now, identity.timezone, identity.tag_window)
            self._narrow(tag_span, identity)
            rules = _TagRules(identity, tag_span.dates)
            for domain in identity.domains:
                self._tags.setdefault(domain.encode(), []).append(rules)

    def _narrow(self, span: window.Span, identity: Identity) -> None:
        """Shrink the table's lifetime to the current local day of ``identity``."""
        self.valid_until = min(self.valid_until, span.valid_until)
        self.valid_from = max(
            self.valid_from, window.start_of_day(span.dates[0], identity.timezone)
        )

    def _digest(self, local: bytes, domain: bytes) -> bytes:
        return hashlib.blake2b(
            local + b"@" + domain, key=self._digest_key, digest_size=_DIGEST_SIZE
        ).digest()

    def valid_at(self, now: float) -> bool:
        """Whether this table still describes ``now`` (midnight passed, clock stepped back)."""
        return self.valid_from <= now < self.valid_until

    def resolve(self, key: bytes, delimiters: bytes) -> Result:
        """Look up a request key (the address Postfix asks about)."""
        if not key.isascii():
            try:
                key = key.decode("utf-8").lower().encode("utf-8")
            except UnicodeDecodeError:
                return NOT_AN_ADDRESS  # no address we make is invalid UTF-8
        else:
            key = key.lower()
        local, at, domain = key.rpartition(b"@")
        # Bare domains (virtual_alias_domains probes), bare local parts and "@domain"
        # wildcard probes are never temporary addresses.
        if not local or not at or domain not in self._domains:
            return NOT_AN_ADDRESS
        found = self._by_digest.get(self._digest(_without_extension(local, delimiters), domain))
        if found is not None:
            return found
        rules = self._tags.get(domain)
        if rules is not None and b"." in local:
            return self._resolve_tagged(local, delimiters, rules)
        return NOT_AN_ADDRESS

    def _resolve_tagged(self, local: bytes, delimiters: bytes, rules: list[_TagRules]) -> Result:
        # A tag has no "." and a code no delimiter, so the first "." ends the tag (which may
        # hold a delimiter character: "news-letter" with recipient_delimiter "+-") and an
        # extension can only follow the code.
        tag_bytes, _, rest = local.partition(b".")
        code = _without_extension(rest, delimiters)
        if not tag_bytes.isascii() or not _HEX.issuperset(code):
            return NOT_AN_ADDRESS
        tag = tag_bytes.decode("ascii")
        if not schemes.TAG_PATTERN.fullmatch(tag):
            return NOT_AN_ADDRESS
        found = NOT_AN_ADDRESS
        for rule in rules:  # every identity on this domain is checked, whichever matches
            if len(code) == rule.code_length:
                result = rule.check(tag, code)
            elif len(code) == rule.legacy_code_length:
                result = rule.check_legacy(tag, code)
            else:
                continue
            if result is not None and found is NOT_AN_ADDRESS:
                found = result
        return found


def _without_extension(local: bytes, delimiters: bytes) -> bytes:
    """``local`` up to its first recipient delimiter, as Postfix splits an extension off."""
    for delimiter in delimiters:
        cut = local.find(delimiter)
        if cut > 0:  # Postfix does not split "+foo": an extension needs a user before it
            local = local[:cut]
    return local


def _tagged_result(identity: Identity, day: dt.date, tag: str) -> Result:
    return Result(
        socketmap.ok(_with_extension(identity, tag)),
        Match(identity.name, day, schemes.HMAC.name, tag),
    )


def _with_extension(identity: Identity, tag: str) -> str:
    """The recipient with the tag as an address extension, so the owner sees who leaked."""
    if not identity.tag_delimiter:
        return identity.recipient
    local, _, domain = identity.recipient.rpartition("@")
    return f"{local}{identity.tag_delimiter}{tag}@{domain}"


class Resolver:
    """Holds the current table and rebuilds it when the local day changes."""

    __slots__ = ("_delimiters", "_digest_key", "_identities", "_prepared", "_table")

    def __init__(
        self,
        identities: tuple[Identity, ...],
        recipient_delimiter: str,
        now: float,
        digest_key: bytes | None = None,
    ) -> None:
        self._identities = identities
        self._delimiters = recipient_delimiter.encode()
        self._digest_key = digest_key or secrets.token_bytes(32)
        self._table = AddressTable(identities, now, self._digest_key)
        self._prepared: AddressTable | None = None

    def table(self, now: float) -> AddressTable:
        """The table valid at ``now``: the current one, the prepared one, or a new one."""
        table = self._table
        if not table.valid_at(now):
            prepared = self._prepared
            if prepared is not None and prepared.valid_at(now):
                table = prepared
            else:  # not prepared (or the clock jumped): build it now
                table = AddressTable(self._identities, now, self._digest_key)
            self._table, self._prepared = table, None
        return table

    def prepared_for(self, at: float) -> bool:
        """Whether the table valid at ``at`` has been built ahead of time."""
        prepared = self._prepared
        return prepared is not None and prepared.valid_at(at)

    def prepare(self, at: float) -> None:
        """Build the table valid at ``at`` ahead of time (safe in a worker thread)."""
        self._prepared = AddressTable(self._identities, at, self._digest_key)

    def resolve(self, key: bytes, now: float) -> Result:
        """Look up ``key`` as of ``now``."""
        return self.table(now).resolve(key, self._delimiters)
