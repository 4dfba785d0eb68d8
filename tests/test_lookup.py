"""The lookup policy: keys in, replies out, with an injected instant."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from helpers import IDENTITY, RECIPIENT, SECRET, at, config_data
from tempmail import schemes
from tempmail.config import Identity, parse
from tempmail.lookup import AddressTable, Resolver
from tempmail.socketmap import NOTFOUND, Status

NOW = at("2026-11-27T12:00:00+00:00")
TODAY, YESTERDAY = dt.date(2026, 11, 27), dt.date(2026, 11, 26)


def identities(data: dict[str, Any] | None = None, **identity: Any) -> tuple[Identity, ...]:
    return parse(data or config_data(**identity), environ={}).identities


def code(
    day: dt.date, scheme: schemes.Scheme = schemes.HMAC, secret: str = SECRET, length: int = 8
) -> str:
    return schemes.code(scheme, day, secret.encode(), length)


def resolve(key: str | bytes, *, now: float = NOW, delimiters: str = "+", **identity: Any) -> Any:
    resolver = Resolver(identities(**identity), delimiters, now)
    return resolver.resolve(key.encode() if isinstance(key, str) else key, now)


@pytest.mark.parametrize("scheme", [schemes.HMAC, schemes.MD5])
@pytest.mark.parametrize("day", [TODAY, YESTERDAY])
def test_valid_codes_map_to_the_recipient(scheme: schemes.Scheme, day: dt.date) -> None:
    result = resolve(f"{code(day, scheme)}@example.org")
    assert result.reply.wire == f"{len(RECIPIENT) + 3}:OK {RECIPIENT},".encode()
    assert result.match is not None
    assert (result.match.identity, result.match.day, result.match.scheme) == (
        "default",
        day,
        scheme.name,
    )


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(
            f"{code(TODAY - dt.timedelta(days=2))}@example.org", id="day-before-yesterday"
        ),
        pytest.param(f"{code(TODAY + dt.timedelta(days=1))}@example.org", id="tomorrow"),
        pytest.param("deadbeef@example.org", id="random-code"),
        pytest.param(f"{code(TODAY)}@example.net", id="wrong-domain"),
        pytest.param(f"{code(TODAY)}@sub.example.org", id="subdomain"),
        pytest.param("example.org", id="bare-domain"),
        pytest.param("@example.org", id="wildcard-probe"),
        pytest.param(code(TODAY), id="bare-local-part"),
        pytest.param(RECIPIENT, id="the-recipient-itself"),
        pytest.param(f"+{code(TODAY)}@example.org", id="delimiter-first-is-not-an-extension"),
        pytest.param(f"{code(TODAY)[:7]}@example.org", id="code-too-short"),
        pytest.param(f"{code(TODAY)}0@example.org", id="code-too-long"),
        pytest.param("", id="empty-key"),
        pytest.param(b"\xff\xfe@example.org", id="invalid-utf8"),
        pytest.param(f"{code(TODAY)}\x00@example.org", id="nul"),
        pytest.param(f'"{code(TODAY)} x"@example.org', id="quoted-local-part"),
        pytest.param(f"{code(TODAY, secret='another secret')}@example.org", id="other-secret"),
    ],
)
def test_everything_else_is_notfound(key: str | bytes) -> None:
    assert resolve(key).reply is NOTFOUND
    assert resolve(key).match is None


def test_case_is_folded() -> None:
    """Postfix does not fold case for socketmap tables, so the lookup does."""
    assert resolve(f"{code(TODAY).upper()}@EXAMPLE.ORG").reply.status is Status.OK
    assert resolve(f"{code(TODAY)}@Example.Org").reply.status is Status.OK


def test_non_ascii_keys_are_folded_too() -> None:
    assert resolve(f"{code(TODAY)}@EXAMPLE.ORG\u00e9".encode()).reply is NOTFOUND
    result = resolve(f"{code(TODAY).upper()}@Example.org".encode(), domain="example.org")
    assert result.reply.status is Status.OK


def test_extensions_are_stripped() -> None:
    today = code(TODAY)
    assert resolve(f"{today}+shop@example.org").reply.status is Status.OK
    assert resolve(f"{today}+a+b@example.org").reply.status is Status.OK
    assert resolve(f"{today}-shop@example.org").reply is NOTFOUND
    assert resolve(f"{today}-shop@example.org", delimiters="+-").reply.status is Status.OK
    assert resolve(f"{today}-a+b@example.org", delimiters="+-").reply.status is Status.OK
    assert resolve(f"{today}+shop@example.org", delimiters="").reply is NOTFOUND


def test_accepted_schemes_only() -> None:
    assert resolve(f"{code(TODAY, schemes.MD5)}@example.org", accept=["hmac"]).reply is NOTFOUND
    assert resolve(f"{code(TODAY)}@example.org", scheme="md5", accept=["md5"]).reply is NOTFOUND


def test_length() -> None:
    assert resolve(f"{code(TODAY, length=12)}@example.org", length=12).reply.status is Status.OK
    assert resolve(f"{code(TODAY, length=8)}@example.org", length=12).reply is NOTFOUND


def test_every_domain_of_an_identity() -> None:
    for domain in ("a.org", "b.org"):
        assert resolve(f"{code(TODAY)}@{domain}", domain=None, domains=["a.org", "b.org"]).match


def test_several_identities() -> None:
    data = {
        "identities": {
            "alice": {**IDENTITY, "recipient": "alice@home.net"},
            "bob": {
                **IDENTITY,
                "secret": "bob's own secret value",
                "recipient": "bob@home.net",
                "scheme": "md5",
                "accept": ["md5"],
                "timezone": "Pacific/Kiritimati",
            },
        }
    }
    resolver = Resolver(identities(data), "+", NOW)
    alice = resolver.resolve(f"{code(TODAY)}@example.org".encode(), NOW)
    assert alice.reply.data == "alice@home.net"
    # 12:00 UTC is 02:00 on the 28th in Kiritimati: bob's "today" is the 28th.
    bob_key = f"{code(TODAY + dt.timedelta(days=1), schemes.MD5, 'bob' + chr(39) + 's own secret value')}@example.org"
    bob = resolver.resolve(bob_key.encode(), NOW)
    assert (bob.reply.data, bob.match.day) == ("bob@home.net", TODAY + dt.timedelta(days=1))  # type: ignore[union-attr]


def test_key_rotation_accepts_previous_secrets() -> None:
    """The first secret generates, all verify (as postsrsd does)."""
    old = "the secret of last month"
    result = resolve(f"{code(YESTERDAY, secret=old)}@example.org", previous_secrets=[old])
    assert result.reply.status is Status.OK
    assert resolve(f"{code(YESTERDAY, secret=old)}@example.org").reply is NOTFOUND


def test_the_table_is_small_and_computed_once_per_day() -> None:
    """Entries: window x accepted schemes x secrets x domains; reused until local midnight."""
    table = AddressTable(identities(), NOW, b"k" * 32)
    assert len(table) == 2 * 2 * 1 * 1
    assert table.valid_until == at("2026-11-28T00:00:00+00:00")
    resolver = Resolver(identities(), "+", NOW)
    first = resolver.table(NOW)
    assert resolver.table(at("2026-11-27T23:59:59+00:00")) is first
    assert resolver.table(at("2026-11-28T00:00:00+00:00")) is not first


def test_rollover_at_local_midnight() -> None:
    """At midnight the new day's code starts to work and the day before yesterday's stops."""
    resolver = Resolver(identities(timezone="Europe/Berlin"), "+", NOW)
    before_midnight = at("2026-11-27T23:59:59+01:00")
    midnight = at("2026-11-28T00:00:00+01:00")
    new_code = f"{code(dt.date(2026, 11, 28))}@example.org".encode()
    old_code = f"{code(YESTERDAY)}@example.org".encode()
    assert resolver.resolve(new_code, before_midnight).reply is NOTFOUND
    assert resolver.resolve(old_code, before_midnight).reply.status is Status.OK
    assert resolver.resolve(new_code, midnight).reply.status is Status.OK
    assert resolver.resolve(old_code, midnight).reply is NOTFOUND


def test_clock_stepping_back_rebuilds_the_table() -> None:
    resolver = Resolver(identities(), "+", at("2026-11-28T00:00:05+00:00"))
    key = f"{code(dt.date(2026, 11, 25))}@example.org".encode()
    assert resolver.resolve(key, at("2026-11-28T00:00:05+00:00")).reply is NOTFOUND
    assert resolver.resolve(key, at("2026-11-26T23:59:00+00:00")).reply.status is Status.OK


def test_digest_key_does_not_change_results() -> None:
    key = f"{code(TODAY)}@example.org".encode()
    for digest_key in (b"a" * 32, b"b" * 32):
        assert (
            AddressTable(identities(), NOW, digest_key).resolve(key, b"+").reply.status is Status.OK
        )


# --- tagged addresses ----------------------------------------------------------------------


def tagged(tag: str, day: dt.date = TODAY, secret: str = SECRET, length: int = 8) -> str:
    return f"{tag}.{schemes.tagged_code(day, tag, secret.encode(), length)}@example.org"


def test_tagged_address_maps_to_recipient_with_extension() -> None:
    result = resolve(tagged("shop"), tags=True)
    assert result.reply.data == "owner+shop@example.net"
    assert result.match is not None
    assert (result.match.tag, result.match.day) == ("shop", TODAY)
    assert resolve(tagged("shop", YESTERDAY), tags=True).reply.status is Status.OK
    assert resolve(tagged("shop").upper(), tags=True).reply.data == "owner+shop@example.net"
    assert resolve(tagged("shop").replace("@", "+x@"), tags=True).reply.status is Status.OK


def test_tagged_addresses_need_tags_enabled() -> None:
    assert resolve(tagged("shop")).reply is NOTFOUND


@pytest.mark.parametrize(
    "key",
    [
        tagged("shop", TODAY - dt.timedelta(days=2)),
        tagged("shop").replace("shop.", "shoe."),
        tagged("shop", secret="another secret"),
        tagged("shop", length=9),
        "shop.zzzzzzzz@example.org",
        ".12345678@example.org",
        "-shop.12345678@example.org",
    ],
)
def test_invalid_tagged_addresses(key: str) -> None:
    assert resolve(key, tags=True).reply is NOTFOUND


def test_revoked_tags_stop_at_once() -> None:
    assert resolve(tagged("shop"), tags=True, revoked_tags=["shop"]).reply is NOTFOUND
    assert resolve(tagged("news"), tags=True, revoked_tags=["shop"]).reply.status is Status.OK


def test_tag_window_can_be_longer() -> None:
    old = tagged("shop", TODAY - dt.timedelta(days=29))
    assert resolve(old, tags=True).reply is NOTFOUND
    assert resolve(old, tags=True, tag_window=30).reply.status is Status.OK
    assert (
        resolve(tagged("shop", TODAY - dt.timedelta(days=30)), tags=True, tag_window=30).reply
        is NOTFOUND
    )


def test_tag_delimiter() -> None:
    assert resolve(tagged("shop"), tags=True, tag_delimiter="").reply.data == RECIPIENT
    assert (
        resolve(tagged("shop"), tags=True, tag_delimiter="-").reply.data == "owner-shop@example.net"
    )


def test_tagged_codes_with_previous_secrets() -> None:
    old = "the secret of last month"
    assert (
        resolve(tagged("shop", secret=old), tags=True, previous_secrets=[old]).reply.status
        is Status.OK
    )


def test_a_prepared_table_is_used_at_midnight() -> None:
    """The server builds the next day's table ahead of time; the switch then costs nothing."""
    resolver = Resolver(identities(), "+", NOW)
    midnight = at("2026-11-28T00:00:00+00:00")
    resolver.prepare(midnight)
    prepared = resolver._prepared
    assert resolver.table(at("2026-11-27T23:59:59+00:00")) is not prepared  # not yet
    assert resolver.table(midnight) is prepared
    assert resolver._prepared is None


def test_a_stale_prepared_table_is_not_used() -> None:
    resolver = Resolver(identities(), "+", NOW)
    resolver.prepare(at("2026-11-28T00:00:00+00:00"))
    prepared = resolver._prepared
    two_days_later = at("2026-11-29T12:00:00+00:00")  # the clock jumped past it
    table = resolver.table(two_days_later)
    assert table is not prepared
    assert table.valid_at(two_days_later)
