"""Secret hygiene and safe defaults.

* The secret never appears in logs, errors, reprs, ``--help`` or crash output: every test
  captures what a user or a log collector would see and greps it for the secret and for
  recognisable pieces of it.
* A secret file (or a config file holding an inline secret) readable by group or others is
  refused unless ``server.secret_permissions`` allows it.
* Defaults: TCP on 127.0.0.1, unix socket mode 0660, no start as root without ``server.user``.
"""

from __future__ import annotations

import copy
import datetime as dt
import hmac
import json
import logging
import os
import pickle
import pwd
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness import ServerProcess, write_config
from helpers import config_data
from helpers_hostile import NOW, request
from tempmail import cli, config, generate, listeners, privileges, schemes
from tempmail.client import Client
from tempmail.config import SocketSettings
from tempmail.errors import ConfigError
from tempmail.handler import Handler
from tempmail.lookup import Resolver
from tempmail.secret import Permissions, Secret, read_secret_file

#: Distinctive, so that any leak is unmistakable; with a space, a quote and non-ASCII.
SECRET = "Zebra-Quokka 'Marmalade' 7731 Ünïcode-Wombat"
PIECES = ["Zebra", "Quokka", "Marmalade", "7731", "Wombat", "Ünïcode"]


def assert_no_secret(text: str, secret: str = SECRET) -> None:
    """Neither the secret nor any recognisable piece or encoding of it is in ``text``."""
    encoded = secret.encode()
    forms = [
        secret,
        secret.lower(),
        repr(secret)[1:-1],
        repr(encoded)[2:-1],  # b'...\xc3\x9c...' as a log of raw bytes would show it
        encoded.hex(),
        json.dumps(secret)[1:-1],
        *PIECES,
    ]
    found = [form for form in forms if form.lower() in text.lower()]
    assert not found, f"secret material {found} in output:\n{text}"


def _config_file(directory: Path, mode: int = 0o600, **server: Any) -> Path:
    data = config_data(secret=SECRET)
    data["server"] = {"user": pwd.getpwuid(os.geteuid()).pw_name, **server}
    data["socket"] = {"path": str(directory / "hygiene.sock")}
    return write_config(directory / "hygiene.toml", data, mode)


# --- reprs, pickling, formatting ----------------------------------------------------------


def test_no_repr_or_format_of_a_loaded_config_shows_the_secret(tmp_path: Path) -> None:
    loaded = config.load(_config_file(tmp_path), environ={})
    identity = loaded.identities[0]
    secret = identity.secrets[0]
    assert secret.reveal() == SECRET.encode()  # the test is about the right value
    handler = Handler(loaded, NOW)
    texts = [
        repr(loaded),
        str(loaded),
        repr(identity),
        repr(loaded.server),
        repr(secret),
        str(secret),
        f"{secret}",
        "%s %r" % (secret, secret),  # noqa: UP031 - the old style is what logging uses
        format(secret, ""),
        repr(identity.secrets),
        repr(handler),
        repr(handler.resolver),
        repr(Resolver(loaded.identities, "+", NOW)),
        repr(generate.current_addresses(identity, NOW)),
    ]
    for text in texts:
        assert_no_secret(text)
    assert repr(secret) == "<SECRET>"


def test_a_secret_cannot_be_pickled_copied_or_serialised(tmp_path: Path) -> None:
    loaded = config.load(_config_file(tmp_path), environ={})
    with pytest.raises(TypeError, match="secrets cannot be pickled"):
        pickle.dumps(loaded)
    with pytest.raises(TypeError, match="secrets cannot be pickled"):
        copy.deepcopy(loaded.identities[0].secrets[0])
    with pytest.raises(TypeError) as caught:
        json.dumps(loaded.identities[0].secrets[0])
    assert_no_secret(str(caught.value))


# --- --help and every command's output ------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["address", "--help"],
        ["serve", "--help"],
        ["query", "--help"],
        ["init", "--help"],
        ["migrate", "--help"],
        ["--version"],
        ["bogus-command"],
        ["address", "--date", "not-a-date"],
    ],
)
def test_help_and_usage_errors_never_show_the_secret(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    monkeypatch.setenv("TEMPMAIL_CONFIG", str(_config_file(tmp_path)))
    monkeypatch.setenv("TEMPMAIL_SECRET", SECRET)
    with pytest.raises(SystemExit):
        cli.main(argv)
    captured = capsys.readouterr()
    assert captured.out or captured.err
    assert_no_secret(captured.out + captured.err)


def test_address_output_never_shows_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(_config_file(tmp_path))
    for argv in (["address"], ["address", "--json"], ["address", "--scheme", "md5"]):
        assert cli.main(["-c", path, *argv]) == cli.EX_OK
        captured = capsys.readouterr()
        assert "@example.org" in captured.out
        assert_no_secret(captured.out + captured.err)


# --- configuration errors ------------------------------------------------------------------

BROKEN_TOML = [
    f'[identities.default]\nsecret = "{SECRET}\n',  # unterminated
    f'[identities.default]\nsecret = "{SECRET}\\q"\n',  # invalid escape
    f"[identities.default]\nsecret = {SECRET}\n",  # unquoted
    f'[identities.default]\nsecret = "{SECRET}" trailing\n',
    f'[identities.default]\nsecret = """{SECRET}\n',
    f'[identities.default]\nsecret = "{SECRET}"\nsecret = "{SECRET}"\n',  # duplicate key
    f'[identities.default]\nsecret = "{SECRET}"\n[identities.default]\n',  # duplicate table
    f'[identities.default]\nsecret = "{SECRET}\x00"\n',  # control character
]


@pytest.mark.parametrize("text", BROKEN_TOML)
def test_toml_errors_never_show_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    path.chmod(0o600)
    assert cli.main(["-c", str(path), "address"]) == cli.EX_CONFIG
    captured = capsys.readouterr()
    assert "invalid TOML" in captured.err
    assert_no_secret(captured.out + captured.err)


INVALID_IDENTITIES: list[dict[str, Any]] = [
    {"secret": SECRET + "\n" + SECRET},  # two lines
    {"secret": SECRET, "secret_file": "/nonexistent"},  # both
    {"secret": None, "secrte": SECRET},  # a typo: the unknown key's value is not shown
    {"previous_secrets": SECRET},  # not an array
    {"previous_secrets": [SECRET, 7]},
    {"secret": SECRET, "length": "eight"},
    {"secret": SECRET, "tags": "yes"},
    {"secret": SECRET, "unknown": SECRET},
    {"secret": 7731},
]


@pytest.mark.parametrize("identity", INVALID_IDENTITIES)
def test_config_errors_never_show_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], identity: dict[str, Any]
) -> None:
    data = config_data(**identity)
    path = write_config(tmp_path / "c.toml", data)
    assert cli.main(["-c", str(path), "address"]) == cli.EX_CONFIG
    captured = capsys.readouterr()
    assert captured.err.startswith("tempmail: ")
    assert_no_secret(captured.out + captured.err)


def test_environment_secret_errors_never_show_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = config_data(secret=None)
    data["identities"]["second"] = config_data(secret=None)["identities"]["default"]
    path = write_config(tmp_path / "c.toml", data)
    monkeypatch.setenv("TEMPMAIL_SECRET", SECRET)
    assert cli.main(["-c", str(path), "address"]) == cli.EX_CONFIG  # one variable, two ids
    monkeypatch.setenv("TEMPMAIL_SECRET", SECRET + "\n" + SECRET)
    assert cli.main(["-c", str(path), "address"]) == cli.EX_CONFIG
    captured = capsys.readouterr()
    assert "TEMPMAIL_SECRET" in captured.err
    assert_no_secret(captured.out + captured.err)


def test_secret_file_errors_never_show_it(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    cases = {
        0o644: SECRET.encode() + b"\n",  # too open
        0o600: (SECRET + "\n" + SECRET + "\n").encode(),  # two lines
        0o400: b"\xff" + SECRET.encode(),  # not UTF-8
    }
    for mode, content in cases.items():
        secret_file.write_bytes(content)
        secret_file.chmod(mode)
        with pytest.raises(ValueError, match="secret") as caught:
            read_secret_file(secret_file, Permissions.PRIVATE)
        assert_no_secret(str(caught.value))


def test_migrate_errors_never_show_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "tempmail.cf"
    old.write_text("DOMAIN=example.org\nSHARED_SECRET=Zebra Quokka Marmalade\n")
    assert cli.main(["migrate", str(old)]) == cli.EX_CONFIG
    assert_no_secret(capsys.readouterr().err)


# --- the running server: logs at debug level, reloads, crash output ---------------------------


@pytest.mark.timeout(60)
def test_server_logs_never_show_the_secret(short_dir: Path) -> None:
    path = _config_file(short_dir)
    identity = config.load(path, environ={}).identities[0]
    valid = [str(a) for a in generate.current_addresses(identity, time.time())]
    with ServerProcess(path, "--log-level", "debug") as server:
        with Client(server.target) as client:
            for key in [*valid, valid[0].upper(), f"shop.{valid[0]}", "x@example.org", "\xff"]:
                client.send_raw(request(key))
            client.send_raw(request(b"k" * 600) + request("x@example.org", map_name=b"other"))
            client.read_exactly(1)
            client.send_raw(b"5:hello;")  # a protocol error
            client.read_to_end()
        secret_file = short_dir / "secret"
        secret_file.write_text(SECRET + "\n")
        secret_file.chmod(0o644)  # too open: the reload fails, and says why
        data = config_data(secret=None, secret_file=str(secret_file))
        data["socket"] = {"path": str(short_dir / "hygiene.sock")}
        data["server"] = {"user": pwd.getpwuid(os.geteuid()).pw_name}
        write_config(path, data)
        server.signal(signal.SIGHUP)
        server.wait_for("reload failed")
        path.write_text(f'[identities.default]\nsecret = "{SECRET}')  # broken TOML
        server.signal(signal.SIGHUP)
        server.wait_for("reload failed", count=2)
        path.chmod(0o644)
        write_config(path, config_data(secret=SECRET), mode=0o644)  # inline secret, too open
        server.signal(signal.SIGHUP)
        server.wait_for("reload failed", count=3)
        secret_file.chmod(0o600)
        write_config(path, data)
        server.signal(signal.SIGHUP)
        server.wait_for("configuration reloaded")
        assert server.stop() == 0
    log = server.log
    assert "lookup key=" in log  # debug logging was on
    assert "protocol error" in log
    assert log.count("reload failed") == 3
    assert_no_secret(log)


def test_crash_output_never_shows_the_secret(short_dir: Path) -> None:
    """An unexpected exception while the secret is in use: the traceback shows code, not data."""
    path = _config_file(short_dir)
    crash = (
        "import sys, tempmail.schemes as s\n"
        "def boom(*args):\n"
        "    raise RuntimeError('simulated crash while computing a code')\n"
        "s._hmac_digest = boom\n"
        "s.HMAC = s.Scheme('hmac', 64, boom)\n"
        "s.SCHEMES['hmac'] = s.HMAC\n"
        "from tempmail.cli import main\n"
        f"sys.exit(main(['-c', {str(path)!r}, 'serve']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", crash],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    assert result.returncode == 1
    assert "RuntimeError: simulated crash" in result.stderr
    assert "Traceback" in result.stderr
    assert_no_secret(result.stdout + result.stderr)


def test_a_failing_connection_logs_no_secret(
    start_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(self: Handler, payload: bytes, now: float) -> object:
        raise RuntimeError("simulated bug")

    running = start_server(config_data(secret=SECRET))
    monkeypatch.setattr(Handler, "answer", answer)
    caplog.set_level(logging.DEBUG, logger="tempmail")
    with running.connect() as sock:
        sock.send_raw(request("anything@example.org"))
        assert sock.read_to_end() == b""
    running.rewrite_config({"broken": True})
    assert running.reload() is False
    assert "unexpected error while serving a connection" in caplog.text
    assert_no_secret(caplog.text)


# --- permissions of files holding secrets -----------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "allowed", "refused"),
    [
        (0o600, "private", False),
        (0o400, "private", False),
        (0o640, "private", True),
        (0o604, "private", True),
        (0o660, "private", True),
        (0o644, "private", True),
        (0o640, "group", False),
        (0o440, "group", False),
        (0o644, "group", True),
        (0o642, "group", True),
        (0o644, "any", False),
    ],
)
def test_secret_file_permissions(tmp_path: Path, mode: int, allowed: str, refused: bool) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(mode)
    data = config_data(secret=None, secret_file=str(secret_file))
    data["server"] = {"secret_permissions": allowed}
    path = write_config(tmp_path / "c.toml", data, mode=0o644)  # no inline secret: 0644 is fine
    if not refused:
        assert config.load(path, environ={}).identities[0].secrets[0].reveal() == SECRET.encode()
        return
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    (problem,) = caught.value.problems
    who = "others" if mode & 0o007 else "its group"
    assert f"the secret file is accessible by {who} (mode {mode:04o})" in problem
    assert f"run 'chmod {'600' if allowed == 'private' else '640'}' on it" in problem
    assert str(secret_file) not in problem  # it might be a secret typed where a path belongs
    assert_no_secret(problem)


def test_previous_secret_files_are_checked_too(tmp_path: Path) -> None:
    current, previous = tmp_path / "current", tmp_path / "previous"
    for file, mode in ((current, 0o600), (previous, 0o644)):
        file.write_text(SECRET + "\n")
        file.chmod(mode)
    data = config_data(secret=None, secret_file=str(current))
    data["identities"]["default"]["previous_secret_files"] = [str(previous)]
    with pytest.raises(
        ConfigError, match=r"previous_secret_files\[0\]: the secret file is accessible by others"
    ):
        config.load(write_config(tmp_path / "c.toml", data), environ={})


def test_a_secret_file_behind_a_symlink_is_judged_by_the_file(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.write_text(SECRET + "\n")
    target.chmod(0o644)
    link = tmp_path / "link"
    link.symlink_to(target)  # a symlink's own mode is 0777 and means nothing
    with pytest.raises(ValueError, match="is accessible by others"):
        read_secret_file(link, Permissions.PRIVATE)
    target.chmod(0o600)
    assert read_secret_file(link, Permissions.PRIVATE) == Secret(SECRET.encode())


def test_a_secret_file_must_be_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a regular file"):
        read_secret_file(tmp_path, Permissions.PRIVATE)


@pytest.mark.parametrize(
    ("identity", "mode", "allowed", "refused"),
    [
        ({"secret": SECRET}, 0o600, "private", False),
        ({"secret": SECRET}, 0o640, "private", True),
        ({"secret": SECRET}, 0o644, "private", True),
        ({"secret": SECRET}, 0o640, "group", False),
        ({"secret": SECRET}, 0o644, "group", True),
        ({"secret": SECRET}, 0o644, "any", False),
        ({"secret": "x" * 32, "previous_secrets": [SECRET]}, 0o644, "private", True),
    ],
)
def test_a_config_file_with_an_inline_secret_must_be_private(
    tmp_path: Path, identity: dict[str, Any], mode: int, allowed: str, refused: bool
) -> None:
    data = config_data(**identity)
    data["server"] = {"secret_permissions": allowed}
    path = write_config(tmp_path / "c.toml", data, mode=mode)
    if not refused:
        config.load(path, environ={})
        return
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: the file holds an inline secret and {path} is accessible")
    assert_no_secret(problem)


def test_a_config_without_an_inline_secret_may_be_world_readable(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", config_data(secret=None), mode=0o644)
    loaded = config.load(path, environ={"TEMPMAIL_SECRET": SECRET})
    assert loaded.identities[0].secrets[0] == Secret(SECRET.encode())


# --- safe defaults -------------------------------------------------------------------------


def test_tcp_binds_loopback_by_default(tmp_path: Path) -> None:
    data = config_data()
    data["socket"] = {"type": "inet", "port": 0}  # the kernel picks a free one
    loaded = config.parse(data)
    assert loaded.socket.host == "127.0.0.1"
    bound = listeners.bind(loaded.socket)
    try:
        assert bound.sock.getsockname()[0] == "127.0.0.1"
    finally:
        bound.close()


def test_unix_socket_is_created_with_mode_0660_by_default(short_dir: Path) -> None:
    assert SocketSettings().mode == 0o660
    old = os.umask(0)  # even with a permissive umask
    try:
        bound = listeners.bind(SocketSettings(path=short_dir / "default.sock"))
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE((short_dir / "default.sock").stat().st_mode) == 0o660
    finally:
        bound.close()


def test_starting_as_root_without_a_user_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "setuid", _forbidden)
    with pytest.raises(ConfigError, match=r"server\.user: refusing to run as root"):
        privileges.drop_privileges(None)


def test_starting_as_root_with_a_user_switches_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "initgroups", lambda name, _gid: calls.append(("initgroups", name)))
    monkeypatch.setattr(os, "setgid", lambda gid: calls.append(("setgid", gid)))
    monkeypatch.setattr(os, "setuid", lambda uid: calls.append(("setuid", uid)))
    nobody = pwd.getpwnam("nobody")
    privileges.drop_privileges("nobody")
    # The order matters: groups and gid while still root, the uid last.
    assert calls == [
        ("initgroups", "nobody"),
        ("setgid", nobody.pw_gid),
        ("setuid", nobody.pw_uid),
    ]


def test_starting_as_root_on_purpose_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "setuid", _forbidden)
    privileges.drop_privileges("root")
    assert 'running as root because server.user = "root"' in caplog.text


def test_a_user_with_uid_0_is_root_and_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """server.user = "0" (or root's other names) is no unprivileged user: it is said."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "setuid", _forbidden)
    monkeypatch.setattr(os, "initgroups", _forbidden)
    privileges.drop_privileges("0")
    assert "running as root because server.user = '0' is uid 0" in caplog.text


def test_serve_as_root_without_a_user_exits_with_a_config_error(
    short_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "setuid", _forbidden)
    data = config_data(secret=SECRET)
    data["socket"] = {"path": str(short_dir / "root.sock")}
    path = write_config(short_dir / "c.toml", data)
    assert cli.main(["-c", str(path), "serve"]) == cli.EX_CONFIG
    err = capsys.readouterr().err
    assert "tempmail: server.user: refusing to run as root" in err
    assert not (short_dir / "root.sock").exists()  # nothing left listening
    assert_no_secret(err)


def _forbidden(*args: object) -> None:
    raise AssertionError("must not change the user")


# --- timing: equal work for every wrong answer ------------------------------------------------
# benchmarks/timing.py measures the time (see docs/reliability.md); these count the expensive steps,
# which is deterministic: a lookup that does less work for some wrong keys is a timing leak.


class _Work:
    """Counts HMAC computations and constant-time comparisons made by the lookup."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hmacs = 0
        self.comparisons = 0
        original_mac = schemes.tag_mac
        original_legacy = schemes.legacy_tagged_code
        original_compare = hmac.compare_digest

        def tag_mac(*args: Any) -> str:
            self.hmacs += 1
            return original_mac(*args)

        def legacy_tagged_code(*args: Any) -> str:
            self.hmacs += 1
            return original_legacy(*args)

        def compare_digest(a: bytes, b: bytes) -> bool:
            self.comparisons += 1
            return original_compare(a, b)

        # tempmail.lookup calls both through their modules, so patching the modules counts them.
        monkeypatch.setattr(schemes, "tag_mac", tag_mac)
        monkeypatch.setattr(schemes, "legacy_tagged_code", legacy_tagged_code)
        monkeypatch.setattr(hmac, "compare_digest", compare_digest)

    def of(self, resolver: Resolver, key: str) -> tuple[str, int, int]:
        self.hmacs = self.comparisons = 0
        status = resolver.resolve(key.encode(), NOW).reply.status.value
        return status, self.hmacs, self.comparisons


def _tag_resolver(**identity: Any) -> tuple[Resolver, Any]:
    loaded = config.parse(config_data(tags=True, tag_window=2, **identity))
    return Resolver(loaded.identities, "+", NOW), loaded.identities[0]


def test_wrong_and_expired_tagged_codes_cost_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver, ident = _tag_resolver()
    work = _Work(monkeypatch)
    today = generate.current_addresses(ident, NOW, tag="shop")[0]
    expired = generate.address_on(ident, today.day - dt.timedelta(days=3), tag="shop")
    hint_and_key_id = today.local.removeprefix("shop.")[:4]
    wrong = f"shop.{hint_and_key_id}{'0' * 8}@example.org"
    # The code names its date and secret: one HMAC and one comparison, hit or miss, and the
    # same for a date outside the tag window (2).
    assert work.of(resolver, wrong) == ("NOTFOUND", 1, 1)
    assert work.of(resolver, str(expired)) == ("NOTFOUND", 1, 1)
    assert work.of(resolver, f"unknowntag.{hint_and_key_id}{'0' * 8}@example.org") == (
        "NOTFOUND",
        1,
        1,
    )
    assert work.of(resolver, str(today)) == ("OK", 1, 1)


def test_revoked_tags_take_as_long_as_unknown_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver, ident = _tag_resolver(revoked_tags=["shop"])
    work = _Work(monkeypatch)
    revoked = generate.current_addresses(ident, NOW, tag="shop")[0]
    unknown = f"other.{revoked.local.removeprefix('shop.')[:4]}{'0' * 8}@example.org"
    assert work.of(resolver, unknown) == ("NOTFOUND", 1, 1)
    assert work.of(resolver, str(revoked)) == ("NOTFOUND", 1, 1)


def test_untagged_lookups_never_compare_the_attackers_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolver, ident = _tag_resolver()
    work = _Work(monkeypatch)
    today = str(generate.current_addresses(ident, NOW)[0])
    expired = str(generate.address_on(ident, dt.date(2026, 11, 20)))
    for key in (today, expired, f"{'0' * 8}@example.org", f"{today[:7]}x@example.org"):
        # No per-code work at all: one keyed digest and one dictionary probe.
        assert work.of(resolver, key)[1:] == (0, 0)
