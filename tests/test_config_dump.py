"""config.dump(): the inverse of config.parse(), secrets left out."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import SECRET, config_data
from tempmail import config

EXAMPLE = Path(__file__).parent.parent / "config.toml.example"
SECRET_FILES = ("current", "older", "oldest")


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Secret files the generated configs name (hypothesis runs many examples per test)."""
    folder = tmp_path_factory.mktemp("secrets")
    for name in SECRET_FILES:
        (folder / name).write_text(f"the {name} secret, long enough to be strong\n")
        (folder / name).chmod(0o600)
    return folder


def through_toml(data: dict[str, Any]) -> dict[str, Any]:
    """What a file written with tomli-w reads back as: the path init and migrate take."""
    return tomllib.loads(tomli_w.dumps(data))


names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,12}", fullmatch=True)
domains = st.sampled_from(["example.org", "a.example", "trash.example.net", "localhost"])
recipients = st.sampled_from(
    ["owner@example.net", "o'brien+mail@example.com", "jörg@example.de", "root@localhost"]
)
delimiters = st.text(alphabet=config.DELIMITERS, max_size=3)
zones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Pacific/Kiritimati"])
modes = st.integers(0, 0o777).map(lambda mode: f"{mode:04o}")
accounts = st.one_of(st.integers(0, 2**31), st.sampled_from(["postfix", "tempmail", "_x.y-1"]))


@st.composite
def identities(draw: st.DrawFn, secrets_dir: Path) -> dict[str, Any]:
    scheme = draw(st.sampled_from(["hmac", "md5"]))
    accept = draw(st.sampled_from([[scheme], ["hmac", "md5"], ["md5", "hmac"]]))
    several = draw(st.lists(domains, min_size=1, max_size=3, unique=True))
    table: dict[str, Any] = {"domains": several} if draw(st.booleans()) else {"domain": several[0]}
    table["recipient"] = draw(recipients)
    files = draw(st.permutations([str(secrets_dir / name) for name in SECRET_FILES]))
    table["secret_file"] = files[0]
    table["previous_secret_files"] = files[1 : 1 + draw(st.integers(0, 2))]
    table["scheme"] = scheme
    optional = {
        "accept": st.just(accept),
        "length": st.integers(6, 32),
        "window": st.integers(1, 366),
        "tag_window": st.integers(1, 366),
        "timezone": zones,
        "tag_delimiter": st.sampled_from(["", *config.DELIMITERS]),
        "revoked_tags": st.lists(st.sampled_from(["shop", "news-letter", "a_1"]), unique=True),
    }
    for key, values in optional.items():
        if draw(st.booleans()):
            table[key] = draw(values)
    table["tags"] = "hmac" in table.get("accept", [scheme]) and draw(st.booleans())
    return table


@st.composite
def config_tables(draw: st.DrawFn, secrets_dir: Path) -> dict[str, Any]:
    server = st.fixed_dictionaries(
        {},
        optional={
            "map_name": names,
            "max_query_length": st.integers(64, 100_000),
            "idle_timeout": st.floats(0.1, 86400),
            "max_connections": st.integers(1, 1_000_000),
            "user": st.sampled_from(["tempmail", "nobody", "10001", "root"]),
            "recipient_delimiter": delimiters,
            "secret_permissions": st.sampled_from(["private", "group", "any"]),
            "log_level": st.sampled_from(config.LOG_LEVELS),
            "event_loop": st.sampled_from(["auto", "asyncio"]),
            "reload_on_change": st.booleans(),
        },
    )
    socket = st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["unix", "inet"]),
            "path": st.sampled_from(["/run/tempmail/socket", "/var/spool/postfix/t/s"]),
            "owner": accounts,
            "group": accounts,
            "mode": modes,
            "host": st.sampled_from(["127.0.0.1", "::1", "localhost"]),
            "port": st.integers(0, 65535),
        },
    )
    metrics = st.fixed_dictionaries(
        {},
        optional={
            "enabled": st.booleans(),
            "host": st.sampled_from(["127.0.0.1", "::"]),
            "port": st.integers(0, 65535),
            "summary_interval": st.floats(0, 86400),
        },
    )
    return {
        "server": draw(server),
        "socket": draw(socket),
        "metrics": draw(metrics),
        "identities": draw(st.dictionaries(names, identities(secrets_dir), min_size=1, max_size=3)),
    }


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_dump_is_the_inverse_of_parse(secrets_dir: Path, data: st.DataObject) -> None:
    """Any valid config, dumped and read back (as TOML text too), equals the original."""
    original = config.parse(
        data.draw(config_tables(secrets_dir)), path=secrets_dir / "config.toml", environ={}
    )
    dumped = config.dump(original)
    again = config.parse(dumped, path=original.path, environ={})
    assert again == original
    assert config.parse(through_toml(dumped), path=original.path, environ={}) == original
    assert config.dump(again) == dumped


def test_dump_writes_every_setting_and_where_the_secrets_are(secrets_dir: Path) -> None:
    """Defaults are written out (the socket path shows), secret files by absolute path."""
    data = config_data(secret=None, secret_file="current", previous_secret_files=["older"])
    dumped = config.dump(config.parse(data, path=secrets_dir / "c.toml", environ={}))
    # Sections of other features (such as [publish]) have their own tests.
    assert {key: dumped[key] for key in ("server", "socket", "metrics", "identities")} == {
        "server": {
            "map_name": "tempmail",
            "max_query_length": 512,
            "idle_timeout": 60.0,
            "max_connections": 1000,
            "recipient_delimiter": "+",
            "secret_permissions": "private",
            "log_level": "info",
            "event_loop": "auto",
            "reload_on_change": True,
        },
        "socket": {
            "type": "unix",
            "path": "/var/spool/postfix/tempmail/socket",
            "mode": "0660",
            "host": "127.0.0.1",
            "port": 10000,
        },
        "metrics": {
            "enabled": False,
            "host": "127.0.0.1",
            "port": 9143,
            "summary_interval": 300.0,
        },
        "identities": {
            "default": {
                "domain": "example.org",
                "recipient": "owner@example.net",
                "scheme": "hmac",
                "accept": ["hmac", "md5"],
                "length": 8,
                "window": 2,
                "timezone": "UTC",
                "tags": False,
                "tag_delimiter": "+",
                "revoked_tags": [],
                "secret_file": str(secrets_dir / "current"),
                "previous_secret_files": [str(secrets_dir / "older")],
            }
        },
    }


def test_keys_that_follow_another_stay_unwritten_while_they_follow_it(tmp_path: Path) -> None:
    """accept and tag_window default to [scheme] and window: written only when they differ.

    Otherwise a later edit of 'window' or 'scheme' would leave them behind unnoticed.
    """
    plain = config.dump(config.parse(config_data(accept=None, window=5), environ={}))
    assert "accept" not in plain["identities"]["default"]
    assert "tag_window" not in plain["identities"]["default"]
    different = config.dump(config.parse(config_data(window=5, tag_window=30), environ={}))
    assert different["identities"]["default"]["accept"] == ["hmac", "md5"]
    assert different["identities"]["default"]["tag_window"] == 30


def test_inline_secrets_are_never_written() -> None:
    """An inline secret and previous_secrets are left out; whoever writes one adds it."""
    original = config.parse(
        config_data(previous_secrets=["an older secret that was inline"]), environ={}
    )
    dumped = config.dump(original)
    text = tomli_w.dumps(dumped)
    assert SECRET not in text
    assert "an older secret" not in text
    assert not {"secret", "previous_secrets"} & set(dumped["identities"]["default"])
    assert "secret_file" not in dumped["identities"]["default"]  # none was given


def test_a_secret_from_the_environment_stays_there() -> None:
    environ = {"TEMPMAIL_SECRET": "from the environment, long enough"}
    original = config.parse(config_data(secret=None), environ=environ)
    dumped = config.dump(original)
    assert "from the environment" not in tomli_w.dumps(dumped)
    assert config.parse(dumped, environ=environ) == original


def test_the_documented_example_round_trips(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("an example secret that is long enough\n")
    secret.chmod(0o600)
    path = tmp_path / "config.toml"
    path.write_text(EXAMPLE.read_text().replace('"/etc/tempmail/secret"', f'"{secret}"'))
    original = config.load(path, environ={})
    assert config.parse(through_toml(config.dump(original)), path=path, environ={}) == original
