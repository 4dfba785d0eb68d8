"""What `tempmail address` hands out is what the server accepts: in process and end to end."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from harness import write_config
from helpers import SECRET, StartServer, at, config_data
from tempmail import cli, generate, schemes
from tempmail.config import parse
from tempmail.lookup import Resolver
from tempmail.socketmap import Status

NOW = at("2026-11-27T12:00:00+00:00")


def identity(**settings: Any) -> Any:
    return parse(config_data(**settings), environ={}).identities[0]


def test_tagged_addresses_have_the_day_hint_and_key_id() -> None:
    ident = identity(tags=True)
    address = generate.address_on(ident, dt.date(2026, 11, 27), tag="shop")
    assert address.local == "shop." + schemes.tagged_code(
        dt.date(2026, 11, 27), "shop", SECRET.encode(), 8
    )
    assert address.local.startswith("shop.1304")  # day hint 130, key id 4
    assert (address.scheme, address.tag, str(address)) == (
        "hmac",
        "shop",
        f"{address.local}@example.org",
    )


def test_current_tagged_addresses_cover_the_tag_window() -> None:
    ident = identity(tags=True, tag_window=30)
    found = generate.current_addresses(ident, NOW, tag="shop")
    assert [a.day for a in found] == [
        dt.date(2026, 11, 27) - dt.timedelta(days=n) for n in range(30)
    ]
    assert len({a.local[5:8] for a in found}) == 30  # one day hint per date


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "America/Los_Angeles"])
@pytest.mark.parametrize("tag", [None, "shop", "news-letter"])
def test_every_generated_address_is_accepted(zone: str, tag: str | None) -> None:
    """Untagged and tagged, both secrets, in the identity's time zone."""
    ident = identity(
        tags=True,
        tag_window=7,
        timezone=zone,
        previous_secrets=["the secret of last month"],
    )
    resolver = Resolver((ident,), "+-", NOW)
    for address in generate.current_addresses(ident, NOW, tag=tag):
        for secret_index in (0, 1):
            made = generate.address_on(ident, address.day, tag=tag, secret_index=secret_index)
            result = resolver.resolve(str(made).encode(), NOW)
            assert result.reply.status is Status.OK, made
            assert result.match is not None
            assert (result.match.day, result.match.tag) == (address.day, tag)


@pytest.mark.parametrize("delimiters", ["+-", "-", "+"])
def test_address_tag_with_a_delimiter_character_works_through_the_server(
    start_server: StartServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    delimiters: str,
) -> None:
    """Issue 11.6: `address --tag news-letter` with recipient_delimiter "+-" is delivered."""
    data = config_data(tags=True, tag_window=3)
    data["server"] = {"recipient_delimiter": delimiters}
    server = start_server(data)
    path = write_config(tmp_path / "c.toml", data)
    assert cli.main(["-c", str(path), "address", "--tag", "news-letter"]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 3
    for address in printed:
        assert server.query(address).data == "owner+news-letter@example.net"
        local, _, domain = address.partition("@")
        for delimiter in delimiters:
            extended = f"{local.upper()}{delimiter}x-y@{domain}"
            assert server.query(extended).data == "owner+news-letter@example.net"
