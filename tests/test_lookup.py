"""The lookup policy: keys in, replies out, with an injected instant."""

from __future__ import annotations

import datetime as dt
import hmac
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from helpers import IDENTITY, RECIPIENT, SECRET, at, config_data
from tempmail import schemes
from tempmail.config import Identity, load, parse
from tempmail.errors import ConfigError
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


def test_tomorrows_tagged_address_is_refused() -> None:
    assert resolve(tagged("shop", TODAY + dt.timedelta(days=1)), tags=True).reply is NOTFOUND


def test_a_tagged_code_that_does_not_name_its_secret_is_refused() -> None:
    """The key id names the secret; a right MAC behind another key id is not accepted."""
    local = tagged("shop").split("@")[0]
    key_id = local[len("shop.") + 3]
    other_id = "0" if key_id != "0" else "1"
    moved = local[: len("shop.") + 3] + other_id + local[len("shop.") + 4 :]
    assert resolve(f"{moved}@example.org", tags=True).reply is NOTFOUND


# --- the cost of a tagged lookup ----------------------------------------------------------
# benchmarks/timing.py and benchmarks/tagged_lookup.py measure time; these count the HMACs and the
# constant-time comparisons, which is deterministic.

PREVIOUS = "the secret of last month"


class Work:
    """Counts the HMACs of tagged codes (both formats) and the constant-time comparisons."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hmacs = self.comparisons = 0
        for name in ("tag_mac", "legacy_tagged_code"):
            monkeypatch.setattr(schemes, name, self._counted(getattr(schemes, name)))
        compare = hmac.compare_digest

        def counted_compare(a: bytes, b: bytes) -> bool:
            self.comparisons += 1
            return compare(a, b)

        monkeypatch.setattr(hmac, "compare_digest", counted_compare)

    def _counted(self, function: Any) -> Any:
        def counted(*args: Any) -> str:
            self.hmacs += 1
            return str(function(*args))

        return counted

    def of(self, resolver: Resolver, key: str) -> tuple[str, int, int]:
        self.hmacs = self.comparisons = 0
        status = resolver.resolve(key.encode(), NOW).reply.status.value
        return status, self.hmacs, self.comparisons


def test_key_ids_of_the_test_secrets_differ() -> None:
    """The cost tests below rely on it (a shared key id would mean two HMACs)."""
    assert schemes.key_id(SECRET.encode()) != schemes.key_id(PREVIOUS.encode())


@pytest.mark.parametrize("tag_window", [1, 30, 366])
@pytest.mark.parametrize("previous", [[], [PREVIOUS]])
def test_a_tagged_lookup_is_one_hmac_whatever_the_window_and_the_secrets(
    monkeypatch: pytest.MonkeyPatch, tag_window: int, previous: list[str]
) -> None:
    """Valid, wrong, expired, future, unknown key id, unknown and revoked tags: 1 HMAC each."""
    resolver = Resolver(
        identities(
            tags=True, tag_window=tag_window, previous_secrets=previous, revoked_tags=["gone"]
        ),
        "+",
        NOW,
    )
    work = Work(monkeypatch)
    oldest = TODAY - dt.timedelta(days=tag_window - 1)
    right = tagged("shop", oldest)
    prefix = right.split(".")[1][:4]
    other_key_id = next(k for k in "0123456789abcdef" if k not in {prefix[3], "4", "6"})
    cases = {
        right: "OK",
        tagged("shop", TODAY): "OK",
        f"shop.{prefix}{'0' * 8}@example.org": "NOTFOUND",
        tagged("shop", oldest - dt.timedelta(days=1)): "NOTFOUND",
        tagged("shop", TODAY + dt.timedelta(days=1)): "NOTFOUND",
        f"shop.{prefix[:3]}{other_key_id}{'0' * 8}@example.org": "NOTFOUND",
        f"unknown.{prefix}{'0' * 8}@example.org": "NOTFOUND",
        tagged("gone", TODAY): "NOTFOUND",
    }
    if previous:
        cases[tagged("shop", TODAY, secret=PREVIOUS)] = "OK"
    for key, status in cases.items():
        assert work.of(resolver, key) == (status, 1, 1), key


def test_secrets_that_share_a_key_id_are_both_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    """The only way to two HMACs: a 1-in-16 chance per pair of secrets, not the window."""
    twin = next(
        f"twin {n}"
        for n in range(1000)
        if schemes.key_id(f"twin {n}".encode()) == schemes.key_id(SECRET.encode())
    )
    resolver = Resolver(identities(tags=True, tag_window=366, previous_secrets=[twin]), "+", NOW)
    work = Work(monkeypatch)
    assert work.of(resolver, tagged("shop", secret=twin)) == ("OK", 2, 2)
    assert work.of(resolver, tagged("shop")) == ("OK", 2, 2)


def test_keys_that_are_not_tagged_codes_cost_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = Resolver(identities(tags=True, tag_window=366), "+", NOW)
    work = Work(monkeypatch)
    for key in (
        f"shop.{'0' * 8}@example.org",  # a 1.x length, and no legacy_tags_until
        f"shop.{'0' * 13}@example.org",
        "shop.zzzzzzzzzzzz@example.org",
        "Shop!.000000000000@example.org",
        "\u00e9.000000000000@example.org",
    ):
        assert work.of(resolver, key) == ("NOTFOUND", 0, 0), key


# --- tempmail 1.x tagged addresses (legacy_tags_until) ---------------------------------------


def legacy(tag: str, day: dt.date, secret: str = SECRET) -> str:
    return f"{tag}.{schemes.legacy_tagged_code(day, tag, secret.encode(), 8)}@example.org"


def test_1x_tagged_addresses_are_refused_without_legacy_tags_until() -> None:
    assert resolve(legacy("shop", TODAY), tags=True, tag_window=30).reply is NOTFOUND


def test_1x_tagged_addresses_are_accepted_up_to_legacy_tags_until() -> None:
    """Dates of the tag window up to the upgrade day; a later date was never handed out."""
    upgrade = TODAY - dt.timedelta(days=5)
    settings: dict[str, Any] = {
        "tags": True,
        "tag_window": 30,
        "legacy_tags_until": upgrade.isoformat(),
    }
    for days_ago, expected in ((5, "OK"), (29, "OK"), (30, "NOTFOUND"), (4, "NOTFOUND")):
        day = TODAY - dt.timedelta(days=days_ago)
        result = resolve(legacy("shop", day), **settings)
        assert result.reply.status.value == expected, days_ago
    result = resolve(legacy("shop", upgrade), **settings)
    assert result.reply.data == "owner+shop@example.net"
    assert result.match is not None
    assert (result.match.tag, result.match.day) == ("shop", upgrade)
    assert resolve(tagged("shop"), **settings).reply.status is Status.OK  # the new format too
    assert resolve(legacy("shop", upgrade), **settings, revoked_tags=["shop"]).reply is NOTFOUND
    old_secret = legacy("shop", upgrade, secret=PREVIOUS)
    assert resolve(old_secret, **settings, previous_secrets=[PREVIOUS]).reply.status is Status.OK


@pytest.mark.parametrize(
    ("days_since_upgrade", "dates_tried"), [(0, 30), (10, 20), (29, 1), (30, 0)]
)
def test_the_cost_of_1x_codes_shrinks_to_nothing(
    monkeypatch: pytest.MonkeyPatch, days_since_upgrade: int, dates_tried: int
) -> None:
    """Every date up to the upgrade day still in the window, every secret; then nothing."""
    upgrade = TODAY - dt.timedelta(days=days_since_upgrade)
    resolver = Resolver(
        identities(
            tags=True,
            tag_window=30,
            legacy_tags_until=upgrade,
            previous_secrets=[PREVIOUS],
            revoked_tags=["gone"],
        ),
        "+",
        NOW,
    )
    work = Work(monkeypatch)
    cost = dates_tried * 2
    assert work.of(resolver, f"shop.{'0' * 8}@example.org") == ("NOTFOUND", cost, cost)
    assert work.of(resolver, legacy("gone", upgrade)) == ("NOTFOUND", cost, cost)
    status = "OK" if dates_tried else "NOTFOUND"
    assert work.of(resolver, legacy("shop", upgrade)) == (status, cost, cost)
    assert work.of(resolver, tagged("shop")) == ("OK", 1, 1)  # the new format is unaffected


@pytest.mark.parametrize("value", [dt.date(2026, 11, 20), "2026-11-20"])
def test_legacy_tags_until_is_a_date(value: Any) -> None:
    (identity,) = identities(tags=True, legacy_tags_until=value)
    assert identity.legacy_tags_until == dt.date(2026, 11, 20)
    (identity,) = identities(tags=True)
    assert identity.legacy_tags_until is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"tags": True, "legacy_tags_until": "27.11.2026"},
            "identities.default.legacy_tags_until: expected a date like 2026-11-27 (the day you upgraded from tempmail 1.x)",
        ),
        (
            {"tags": True, "legacy_tags_until": "2026-02-30"},
            "identities.default.legacy_tags_until: expected a date like 2026-11-27 (the day you upgraded from tempmail 1.x)",
        ),
        (
            {"tags": True, "legacy_tags_until": dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC)},
            "identities.default.legacy_tags_until: expected a date like 2026-11-27 (the day you upgraded from tempmail 1.x)",
        ),
        (
            {"tags": True, "legacy_tags_until": 20261127},
            "identities.default.legacy_tags_until: expected a date like 2026-11-27 (the day you upgraded from tempmail 1.x)",
        ),
        (
            {"legacy_tags_until": "2026-11-27"},
            "identities.default.legacy_tags_until: only for tagged addresses: set tags = true",
        ),
    ],
)
def test_legacy_tags_until_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(config_data(**settings), environ={})
    assert caught.value.problems == [f"<config>: {message}"]


def test_legacy_tags_until_warns_once_every_1x_address_has_expired() -> None:
    today = dt.datetime.now(dt.UTC).date()
    expired = today - dt.timedelta(days=30)
    loaded = parse(
        config_data(tags=True, tag_window=30, legacy_tags_until=expired.isoformat()), environ={}
    )
    assert loaded.warnings == (
        f"<config>: identities.default.legacy_tags_until: {expired} is before every date of the tag window (tag_window = 30): every 1.x tagged address has expired; remove this key",
    )
    for still_useful in (expired + dt.timedelta(days=1), today + dt.timedelta(days=7)):
        data = config_data(tags=True, tag_window=30, legacy_tags_until=still_useful)
        assert parse(data, environ={}).warnings == ()


def test_legacy_tags_until_in_a_toml_file(tmp_path: Path) -> None:
    """Written as a TOML date, as config.toml.example shows it."""
    path = tmp_path / "c.toml"
    path.write_text(
        tomli_w.dumps(config_data(tags=True, secret=None, secret_file="s")).replace(
            "[identities.default]", "[identities.default]\nlegacy_tags_until = 2026-11-27"
        )
    )
    (tmp_path / "s").write_text(SECRET)
    (tmp_path / "s").chmod(0o600)
    assert load(path, {}).identities[0].legacy_tags_until == dt.date(2026, 11, 27)


# --- tags and the recipient delimiter (issue 11, point 6) ------------------------------------


@pytest.mark.parametrize("delimiters", ["+", "+-", "-", "-_+", ".", ""])
@pytest.mark.parametrize("tag", ["news-letter", "a_b", "x-y_z", "shop"])
def test_tags_with_delimiter_characters_resolve(delimiters: str, tag: str) -> None:
    """The tag ends at the first '.', an extension can only follow the code."""
    address = tagged(tag)
    expected = f"owner+{tag}@example.net"
    assert resolve(address, tags=True, delimiters=delimiters).reply.data == expected
    for delimiter in delimiters:
        with_extension = address.replace("@", f"{delimiter}ext.ra@")
        assert resolve(with_extension, tags=True, delimiters=delimiters).reply.data == expected


def test_an_extension_is_not_split_off_before_the_code() -> None:
    assert resolve(tagged("shop").replace("shop.", "shop+x."), tags=True).reply is NOTFOUND
    assert resolve(tagged("shop").replace("shop.", "shop.+"), tags=True).reply is NOTFOUND
