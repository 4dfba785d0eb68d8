"""Publishing today's addresses (issue 13): rendering at an injected instant, atomic writes,
an attacker in the directory, the [publish] table, and the documented website snippets."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import stat
import subprocess
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml  # type: ignore[import-untyped]  # no stubs installed; only safe_load is used

from harness import write_config
from helpers import (
    IDENTITY,
    RECIPIENT,
    SECRET,
    FakeClock,
    StartServer,
    at,
    config_data,
    require_tool,
)
from tempmail import config, generate, publish, schemes, window
from tempmail.config import PublishSettings
from tempmail.errors import ConfigError, ServerError

NOW = at("2026-11-27T12:00:00+00:00")
DOCS = Path(__file__).parent.parent / "docs" / "publishing.md"


def load(data: dict[str, Any]) -> config.Config:
    return config.parse(data, environ={})


def two_identities(**second: Any) -> config.Config:
    """'zulu' first in the file, then 'alpha' (order of the file, not of the names)."""
    return load(
        {
            "identities": {
                "zulu": {**IDENTITY, "domain": "zulu.example"},
                "alpha": {
                    **IDENTITY,
                    "domain": "alpha.example",
                    "secret": "alpha's own secret, long enough",
                    "scheme": "md5",
                    "accept": ["md5"],
                    "timezone": "Europe/Berlin",
                    "window": 3,
                    **second,
                },
            }
        }
    )


def today(cfg: config.Config, name: str, now: float = NOW) -> str:
    identity = cfg.identity(name)
    return str(generate.current_addresses(identity, now)[0])


# --- rendering ---------------------------------------------------------------------------------


def test_text_is_todays_address_of_each_identity_in_config_order() -> None:
    cfg = two_identities()
    text = publish.render_text(cfg, NOW)
    assert text == f"{today(cfg, 'zulu')}\n{today(cfg, 'alpha')}\n"
    assert text.startswith(schemes.code(schemes.HMAC, dt.date(2026, 11, 27), SECRET.encode(), 8))


def test_json_has_identity_address_date_end_of_validity_and_scheme() -> None:
    cfg = two_identities()
    assert json.loads(publish.render_json(cfg, NOW)) == [
        {
            "identity": "zulu",
            "address": today(cfg, "zulu"),
            "date": "2026-11-27",
            "valid_until": "2026-11-29T00:00:00+00:00",  # window 2: today and tomorrow
            "scheme": "hmac",
        },
        {
            "identity": "alpha",
            "address": today(cfg, "alpha"),
            "date": "2026-11-27",
            "valid_until": "2026-11-30T00:00:00+01:00",  # window 3, Berlin's offset
            "scheme": "md5",
        },
    ]


def test_never_a_secret_never_a_tagged_address() -> None:
    cfg = load(config_data(tags=True, tag_window=30, previous_secrets=["an older secret value"]))
    for text in (publish.render_text(cfg, NOW), publish.render_json(cfg, NOW)):
        assert SECRET not in text
        assert "older secret" not in text
        assert json.dumps(SECRET)[1:-1] not in text
        for address in re.findall(r"[\w.+-]+@example\.org", text):
            assert re.fullmatch(r"[0-9a-f]{8}@example\.org", address), address


def test_the_file_switches_at_local_midnight_in_kiritimati() -> None:
    """UTC+14: the local date changes at 10:00 UTC."""
    cfg = two_identities(timezone="Pacific/Kiritimati")
    before, midnight = at("2026-11-27T09:59:59+00:00"), at("2026-11-27T10:00:00+00:00")
    assert publish.next_change(cfg, before) == midnight
    old, new = publish.entries(cfg, before)[1], publish.entries(cfg, midnight)[1]
    assert (old.date, new.date) == (dt.date(2026, 11, 27), dt.date(2026, 11, 28))
    assert old.address != new.address
    assert new.valid_until.isoformat() == "2026-12-01T00:00:00+14:00"
    # The UTC identity has not changed at that instant.
    assert publish.entries(cfg, before)[0] == publish.entries(cfg, midnight)[0]


def test_across_a_dst_change_the_end_of_validity_carries_the_new_offset() -> None:
    """Berlin springs forward on 2026-03-29: an address of the 28th ends at +02:00."""
    cfg = load(config_data(timezone="Europe/Berlin"))
    (entry,) = publish.entries(cfg, at("2026-03-28T12:00:00+01:00"))
    assert entry.date == dt.date(2026, 3, 28)
    assert entry.valid_until.isoformat() == "2026-03-30T00:00:00+02:00"


def test_where_dst_skips_midnight_the_day_starts_at_the_jump() -> None:
    """Havana, 2026-03-08: clocks go from 23:59:59 to 01:00; the new address starts then."""
    cfg = load(config_data(timezone="America/Havana", window=1))
    last_second = at("2026-03-07T23:59:59-05:00")
    (entry,) = publish.entries(cfg, last_second)
    assert entry.valid_until.isoformat() == "2026-03-08T01:00:00-04:00"
    assert publish.next_change(cfg, last_second) == entry.valid_until.timestamp()
    (after,) = publish.entries(cfg, entry.valid_until.timestamp())
    assert (after.date, after.valid_until.isoformat()) == (
        dt.date(2026, 3, 8),
        "2026-03-09T00:00:00-04:00",
    )


def test_next_change_is_the_earliest_midnight_of_all_identities() -> None:
    cfg = two_identities()  # UTC and Berlin: Berlin's midnight is 23:00 UTC
    assert publish.next_change(cfg, NOW) == at("2026-11-27T23:00:00+00:00")
    assert publish.next_change(cfg, at("2026-11-27T23:00:00+00:00")) == at(
        "2026-11-28T00:00:00+00:00"
    )


# --- writing -------------------------------------------------------------------------------------


def settings(directory: Path, **changes: Any) -> PublishSettings:
    return PublishSettings(
        file=directory / "address.txt", json=directory / "address.json", **changes
    )


def test_publish_writes_both_files_with_mode_0644(tmp_path: Path) -> None:
    cfg = two_identities()
    old_umask = os.umask(0o077)  # the mode is set on the descriptor, whatever the umask
    try:
        publish.publish(settings(tmp_path), cfg, NOW)
    finally:
        os.umask(old_umask)
    assert (tmp_path / "address.txt").read_text() == publish.render_text(cfg, NOW)
    assert (tmp_path / "address.json").read_text() == publish.render_json(cfg, NOW)
    for name in ("address.txt", "address.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["address.json", "address.txt"]


def test_publish_uses_the_configured_mode_and_only_the_configured_files(tmp_path: Path) -> None:
    publish.publish(PublishSettings(json=tmp_path / "a.json", mode=0o640), two_identities(), NOW)
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    publish.publish(PublishSettings(), two_identities(), NOW)  # nothing configured: no-op


def test_after_a_reload_that_changes_the_secret_the_new_address_is_published(
    tmp_path: Path,
) -> None:
    before = load(config_data())
    after = load(config_data(secret="the new secret after the reload"))
    publish.publish(settings(tmp_path), before, NOW)
    assert (tmp_path / "address.txt").read_text() == f"{today(before, 'default')}\n"
    publish.publish(settings(tmp_path), after, NOW)
    assert (tmp_path / "address.txt").read_text() == f"{today(after, 'default')}\n"
    assert today(before, "default") != today(after, "default")
    assert json.loads((tmp_path / "address.json").read_text())[0]["address"] == today(
        after, "default"
    )


def test_the_file_follows_midnight_in_kiritimati(tmp_path: Path) -> None:
    cfg = load(config_data(timezone="Pacific/Kiritimati"))
    for instant, date in (
        ("2026-11-27T09:59:59+00:00", "2026-11-27"),
        ("2026-11-27T10:00:00+00:00", "2026-11-28"),
    ):
        publish.publish(settings(tmp_path), cfg, at(instant))
        (entry,) = json.loads((tmp_path / "address.json").read_text())
        assert entry["date"] == date
        assert (tmp_path / "address.txt").read_text() == f"{entry['address']}\n"


@pytest.fixture
def memory_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory in /dev/shm when there is one: thousands of fsyncs cost nothing there."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="tempmail-publish-") as name:
        yield Path(name)


def test_readers_never_see_a_partial_file(memory_dir: Path) -> None:
    """Two readers poll while 3,000 rewrites alternate between contents of different sizes."""
    tmp_path = memory_dir
    small = load(config_data())
    large = two_identities()
    contents = {publish.render_text(c, NOW) for c in (small, large)} | {
        publish.render_json(c, NOW) for c in (small, large)
    }
    target = settings(tmp_path)
    publish.publish(target, small, NOW)
    stop = threading.Event()
    seen: list[str] = []

    def read() -> None:
        while not stop.is_set():
            for path in (target.file, target.json):
                assert path is not None
                seen.append(path.read_text())

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for n in range(3000):
            publish.publish(target, large if n % 2 else small, NOW)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert len(seen) > 1000
    assert set(seen) <= contents
    assert len(set(seen)) == 4  # every version was seen, none in part
    assert sorted(p.name for p in tmp_path.iterdir()) == ["address.json", "address.txt"]


# --- an attacker who can write to the directory -------------------------------------------------


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    (tmp_path / "address.txt").symlink_to(victim)
    publish.publish(PublishSettings(file=tmp_path / "address.txt"), load(config_data()), NOW)
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert not (tmp_path / "address.txt").is_symlink()
    assert (tmp_path / "address.txt").read_text().endswith("@example.org\n")


def test_a_name_planted_at_the_temporary_name_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even if the random name were guessed: O_EXCL refuses it, and another name is drawn."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    names = iter(["guessed", "fresh"])
    monkeypatch.setattr(secrets, "token_hex", lambda _: next(names))
    (tmp_path / ".tempmail-publish-guessed.tmp").symlink_to(victim)
    publish.publish(PublishSettings(file=tmp_path / "a.txt"), load(config_data()), NOW)
    assert victim.read_text() == "precious\n"
    assert (tmp_path / "a.txt").read_text().endswith("@example.org\n")
    assert (tmp_path / ".tempmail-publish-guessed.tmp").is_symlink()  # left alone
    assert not (tmp_path / ".tempmail-publish-fresh.tmp").exists()


def test_when_every_temporary_name_is_taken_publish_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secrets, "token_hex", lambda _: "taken")
    (tmp_path / ".tempmail-publish-taken.tmp").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ServerError) as caught:
        publish.publish(PublishSettings(file=tmp_path / "a.txt"), load(config_data()), NOW)
    assert str(caught.value) == (
        f"publish.file: cannot create a temporary file next to {tmp_path / 'a.txt'}: 8 random "
        "names were taken; check who else writes to that directory"
    )
    assert not (tmp_path / "nowhere").exists()


def test_temporary_names_are_unpredictable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names: list[str] = []
    original = os.open

    def spy(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if isinstance(path, str) and path.startswith(".tempmail-publish-"):
            names.append(path)
            assert flags & os.O_EXCL
            assert flags & os.O_NOFOLLOW
        return original(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    for _ in range(20):
        publish.publish(PublishSettings(file=tmp_path / "a.txt"), load(config_data()), NOW)
    assert len(set(names)) == 20
    assert all(re.fullmatch(r"\.tempmail-publish-[0-9a-f]{16}\.tmp", n) for n in names)


# --- errors ------------------------------------------------------------------------------------


def test_a_missing_directory_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ServerError) as caught:
        publish.publish(PublishSettings(file=missing / "a.txt"), load(config_data()), NOW)
    assert str(caught.value) == (
        f"publish.file: cannot open the directory {missing}: No such file or directory; "
        "create it, writable by the server's user, or change publish.file"
    )
    assert caught.value.exit_code == 71


def test_a_directory_at_the_target_is_one_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.json").mkdir()
    with pytest.raises(ServerError) as caught:
        publish.publish(PublishSettings(json=tmp_path / "a.json"), load(config_data()), NOW)
    assert str(caught.value) == (
        f"publish.json: cannot write {tmp_path / 'a.json'}: Is a directory; make its directory "
        "writable by the server's user, or change publish.json"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left


# --- [publish] in the configuration ----------------------------------------------------------


def test_publish_is_off_by_default() -> None:
    assert load(config_data()).publish == PublishSettings()
    assert PublishSettings() == PublishSettings(file=None, json=None, mode=0o644)


def test_publish_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    data = config_data()
    data["publish"] = {"file": "www/address.txt", "json": "/srv/a.json", "mode": "0640"}
    loaded = config.load(write_config(tmp_path / "c.toml", data), {})
    assert loaded.publish == PublishSettings(
        file=tmp_path / "www" / "address.txt", json=Path("/srv/a.json"), mode=0o640
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"mode": "644x"}, "publish.mode: expected an octal mode like \"0644\", got '644x'"),
        (
            {"mode": "0664"},
            "publish.mode: 0664 lets other users rewrite the published file; use 0644 or 0640",
        ),
        (
            {"mode": "0606"},
            "publish.mode: 0606 lets other users rewrite the published file; use 0644 or 0640",
        ),
        ({"mode": 644}, "publish.mode: expected a string, got an integer"),
        ({"file": ""}, "publish.file: must not be empty"),
        (
            {"file": "/srv/a", "json": "/srv/b/../a"},
            "publish.json: /srv/b/../a is also publish.file; publish to a file of its own",
        ),
        ({"flie": "/srv/a"}, "publish.flie: unknown key (did you mean 'file'?)"),
    ],
)
def test_publish_errors(table: dict[str, Any], message: str) -> None:
    data = config_data()
    data["publish"] = table
    with pytest.raises(ConfigError) as caught:
        load(data)
    assert caught.value.problems == [f"<config>: {message}"]


def test_publish_never_overwrites_the_config_or_a_secret(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("a secret that is long enough to pass\n")
    secret.chmod(0o600)
    data = config_data(secret=None, secret_file="secret")
    for key, value, what in (("file", "secret", secret), ("json", "./c.toml", "./c.toml")):
        data["publish"] = {key: value}
        with pytest.raises(ConfigError) as caught:
            config.load(write_config(tmp_path / "c.toml", data), {})
        shown = tmp_path / what if isinstance(what, str) else what
        assert caught.value.problems == [
            f"{tmp_path / 'c.toml'}: publish.{key}: {shown} is the configuration file or a secret file; publish to a file of its own"
        ]


# --- docs/publishing.md: the website's side, run as documented -----------------------------


def documented(marker: str) -> str:
    found = re.search(rf"<!-- {marker} -->\n```\w+\n(.*?)\n```", DOCS.read_text(), re.DOTALL)
    assert found, marker
    return found.group(1)


@pytest.mark.php
def test_the_documented_php_one_liner_prints_the_published_address(tmp_path: Path) -> None:
    php = require_tool("php", "php-cli")
    cfg = two_identities()
    publish.publish(PublishSettings(file=tmp_path / "address.txt"), cfg, NOW)
    snippet = documented("publish: php").replace(
        "/var/www/tempmail/address.txt", str(tmp_path / "address.txt")
    )
    code = snippet.removeprefix("<?php").removesuffix("?>").strip()
    output = subprocess.run([php, "-r", code], capture_output=True, text=True, check=True).stdout
    assert output == f'<a href="mailto:{today(cfg, "zulu")}">{today(cfg, "zulu")}</a>'


#: Runs the page's script in Node.js with a stand-in document and a fetch that serves FILE.
PAGE_HARNESS = """
const fs = require("fs");
const elements = { "tempmail": {}, "tempmail-until": {} };
globalThis.document = { getElementById: (id) => elements[id] };
globalThis.fetch = async (url, options) => {
  if (url !== "/tempmail/address.json" || options.cache !== "no-store") throw new Error(url);
  const body = fs.readFileSync(process.env.FILE, "utf8");
  return { json: async () => JSON.parse(body) };
};
process.on("exit", () => {
  const link = elements["tempmail"];
  console.log(JSON.stringify([link.textContent, link.href, elements["tempmail-until"].textContent]));
});
"""


def test_the_documented_page_shows_the_published_address(tmp_path: Path) -> None:
    """The page's script, run by Node.js on the JSON file tempmail wrote, fills in the link."""
    node = require_tool("node", "nodejs")
    page = documented("publish: html")
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    cfg = two_identities()
    publish.publish(PublishSettings(json=tmp_path / "address.json"), cfg, NOW)
    result = subprocess.run(
        [node, "-e", PAGE_HARNESS + script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "FILE": str(tmp_path / "address.json"), "TZ": "UTC", "LANG": "C"},
    )
    text, href, until = json.loads(result.stdout)
    assert (text, href) == (today(cfg, "zulu"), f"mailto:{today(cfg, 'zulu')}")
    assert until == "11/29/2026, 12:00:00 AM"  # 2026-11-29T00:00:00+00:00, shown in UTC


def test_window_and_generate_agree_with_what_is_published() -> None:
    """The published address is the first one `tempmail address` prints."""
    cfg = two_identities()
    for entry, identity in zip(publish.entries(cfg, NOW), cfg.identities, strict=True):
        assert entry.address == str(generate.current_addresses(identity, NOW)[0])
        assert entry.date == window.local_date(NOW, identity.timezone)


def test_the_readme_shows_the_tested_php_line() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert documented("publish: php") in readme


# --- the container examples (files only; tests/integration runs the sidecar) -----------------

REPO = Path(__file__).parent.parent
COMPOSE = REPO / "deploy" / "compose"


def test_the_compose_override_is_valid_and_shares_the_publish_directory() -> None:
    """docker-compose itself merges compose.yaml and compose.publish.yaml as documented."""
    compose = require_tool("docker-compose", "docker-compose")
    merged = subprocess.run(
        [compose, "-f", "compose.yaml", "-f", "compose.publish.yaml", "config"],
        cwd=COMPOSE,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    services = yaml.safe_load(merged)["services"]
    publish_dir = str(COMPOSE / "publish")
    assert f"{publish_dir}:/run/tempmail-publish:rw" in services["tempmail"]["volumes"]
    assert f"{publish_dir}:/usr/share/nginx/html/tempmail:ro" in services["web"]["volumes"]
    assert services["tempmail"]["read_only"] is True  # the override loosens nothing
    table = tomllib.loads(documented("publish: compose-config"))
    for key in ("file", "json"):
        assert Path(table["publish"][key]).parent == Path("/run/tempmail-publish")
    data = config_data()
    data["publish"] = table["publish"]
    assert load(data).publish.json == Path("/run/tempmail-publish/address.json")


def deployment_with_the_documented_block() -> dict[str, Any]:
    """deploy/kubernetes/deployment.yaml with the block of docs/publishing.md merged in."""
    deployment = yaml.safe_load((REPO / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    block = yaml.safe_load(documented("publish: kubernetes"))
    pod = deployment["spec"]["template"]["spec"]
    pod["volumes"] += block["volumes"]
    for container in block["containers"]:
        existing = [c for c in pod["containers"] if c["name"] == container["name"]]
        if existing:
            existing[0]["volumeMounts"] += container["volumeMounts"]
        else:
            pod["containers"].append(container)
    return dict(deployment)


@pytest.mark.parametrize("version", ["1.30", kubernetes_validate.latest_version()])
def test_the_kubernetes_block_validates_merged_into_the_deployment(version: str) -> None:
    deployment = deployment_with_the_documented_block()
    kubernetes_validate.validate(deployment, version, strict=True)
    pod = deployment["spec"]["template"]["spec"]
    mounts = {c["name"]: {m["name"]: m for m in c["volumeMounts"]} for c in pod["containers"]}
    assert mounts["tempmail"]["publish"]["mountPath"] == "/run/tempmail-publish"
    assert mounts["web"]["publish"]["readOnly"] is True
    assert "readOnly" not in mounts["tempmail"]["publish"]


# --- through the server: start, midnight, reload ---------------------------------------------


def wait_for(condition: Any, timeout: float = 5.0) -> float:
    """Seconds until ``condition()`` held (polled every 10 ms); fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not met in time"
        time.sleep(0.01)
    return time.monotonic() - start


def test_the_server_publishes_at_start_after_midnight_and_after_a_reload(
    start_server: StartServer, short_dir: Path
) -> None:
    """Kiritimati (UTC+14): the files switch within about a second of the clock's midnight."""
    www = short_dir / "www"
    www.mkdir()
    data = config_data(timezone="Pacific/Kiritimati", tags=True)
    data["server"] = {"reload_on_change": False}
    data["publish"] = {"file": str(www / "address.txt"), "json": str(www / "address.json")}
    clock = FakeClock(at("2026-11-27T09:59:58+00:00"))  # 23:59:58 on the 27th, local
    server = start_server(data, clock=clock)

    def published() -> tuple[str, dict[str, str]]:
        (entry,) = json.loads((www / "address.json").read_text())
        return (www / "address.txt").read_text(), entry

    # Written before the server reported itself ready: no waiting here.
    text, entry = published()
    assert entry["date"] == "2026-11-27"
    assert entry["valid_until"] == "2026-11-29T00:00:00+14:00"
    assert text == f"{entry['address']}\n"
    assert server.query(entry["address"]).data == RECIPIENT
    clock.now = at("2026-11-27T10:00:00+00:00")  # local midnight
    took = wait_for(lambda: published()[1]["date"] == "2026-11-28")
    print(f"\npublished {took:.2f} s after the clock passed local midnight")
    assert took < 2.5  # the next housekeeping tick (1 s), plus a busy machine's slack
    text, entry = published()
    assert entry["address"] == str(
        generate.address_on(load(data).identities[0], dt.date(2026, 11, 28))
    )
    assert text == f"{entry['address']}\n"
    assert server.query(entry["address"]).data == RECIPIENT
    # A reload that changes the secret publishes the new address before reload() returns.
    data["identities"]["default"]["secret"] = "the secret after the reload, long enough"
    server.rewrite_config(data)
    assert server.reload()
    text, entry = published()
    new_address = str(generate.address_on(load(data).identities[0], dt.date(2026, 11, 28)))
    assert (text, entry["address"]) == (f"{new_address}\n", new_address)
    assert server.query(new_address).data == RECIPIENT
    assert sorted(p.name for p in www.iterdir()) == ["address.json", "address.txt"]
    assert stat.S_IMODE((www / "address.txt").stat().st_mode) == 0o644
