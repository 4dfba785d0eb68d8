"""The command line, through main([...]) and as a real process."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import ServerProcess, write_config
from helpers import RECIPIENT, SECRET, ScriptedServers, StartServer, config_data
from tempmail import __version__, cli, config, netstring, schemes


def code(day: dt.date, scheme: schemes.Scheme = schemes.HMAC, secret: str = SECRET) -> str:
    return schemes.code(scheme, day, secret.encode(), 8)


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_config(tmp_path / "config.toml", config_data())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"tempmail {__version__}\n"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("address", "serve", "query", "init", "migrate"):
        assert command in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["address", "--date", "27.11.2026"])
    assert caught.value.code == 2
    assert "--date: expected YYYY-MM-DD, got '27.11.2026'" in capsys.readouterr().err


# --- address ---------------------------------------------------------------------------------


def test_address_prints_todays_first(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "-c", str(cfg), "address")
    today = utc_today()
    assert status == 0
    assert out.split() == [
        f"{code(today)}@example.org",
        f"{code(today - dt.timedelta(days=1))}@example.org",
    ]
    assert err == "tempmail: dates are local dates in UTC\n"


def test_address_for_a_date_and_scheme(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys, "-c", str(cfg), "address", "--date", "2026-02-28", "--scheme", "md5"
    )
    assert status == 0
    assert out == f"{code(dt.date(2026, 2, 28), schemes.MD5)}@example.org\n"


def test_address_json(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "-c", str(cfg), "address", "--json", "--date", "2026-11-27")
    assert status == 0
    assert json.loads(out) == [
        {
            "address": f"{code(dt.date(2026, 11, 27))}@example.org",
            "date": "2026-11-27",
            "scheme": "hmac",
            "identity": "default",
            "timezone": "UTC",
            "tag": None,
        }
    ]


def test_address_config_from_environment(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPMAIL_CONFIG", str(cfg))
    assert run(capsys, "address")[0] == 0


def test_address_identity_and_tag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = config_data(tags=True)
    data["identities"]["other"] = {
        **data["identities"]["default"],
        "domain": "other.org",
        "tags": False,
    }
    path = write_config(tmp_path / "c.toml", data)
    status, out, _ = run(
        capsys, "-c", str(path), "address", "--identity", "other", "--date", "2026-11-27"
    )
    assert out == f"{code(dt.date(2026, 11, 27))}@other.org\n"
    status, out, _ = run(
        capsys, "-c", str(path), "address", "--tag", "shop", "--date", "2026-11-27"
    )
    tag_code = schemes.tagged_code(dt.date(2026, 11, 27), "shop", SECRET.encode(), 8)
    assert (status, out) == (0, f"shop.{tag_code}@example.org\n")
    status, _, err = run(capsys, "-c", str(path), "address", "--identity", "other", "--tag", "shop")
    assert status == cli.EX_CONFIG
    assert err == "tempmail: identity 'other' has tags = false; set tags = true\n"
    status, _, err = run(capsys, "-c", str(path), "address", "--tag", "Bad Tag")
    assert status == cli.EX_USAGE
    status, _, err = run(capsys, "-c", str(path), "address", "--identity", "nobody")
    assert (status, err) == (
        cli.EX_CONFIG,
        "tempmail: no identity named 'nobody' (configured: default, other)\n",
    )


def test_address_with_a_scheme_not_accepted_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "c.toml", config_data(accept=["hmac"]))
    status, _, err = run(capsys, "-c", str(path), "address", "--scheme", "md5")
    assert status == 0
    assert "note: identity 'default' does not accept md5 addresses" in err


def test_config_errors_are_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "c.toml", config_data(length=0, window=0))
    status, out, err = run(capsys, "-c", str(path), "address")
    assert (status, out) == (cli.EX_CONFIG, "")
    assert err.splitlines() == [
        f"tempmail: {path}: identities.default.length: must be between 1 and 32, got 0",
        f"tempmail: {path}: identities.default.window: must be between 1 and 366, got 0",
    ]


# --- query -----------------------------------------------------------------------------------


def test_query_exit_codes(start_server: StartServer, capsys: pytest.CaptureFixture[str]) -> None:
    running = start_server()
    target = running.target
    today = f"{code(utc_today())}@example.org"
    assert run(capsys, "query", today, "--socket", target, "--map", "tempmail") == (
        0,
        f"{RECIPIENT}\n",
        "",
    )
    assert run(capsys, "query", "no@example.org", "--socket", target, "--map", "tempmail")[:2] == (
        1,
        "",
    )
    status, _, err = run(capsys, "query", today, "--socket", target, "--map", "other")
    assert status == cli.EX_DATAERR
    assert err.startswith("tempmail: PERM unknown map name 'other'")


def test_ping_needs_only_an_answer(
    start_server: StartServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--ping is a liveness probe: any lookup answer will do, and no config is read."""
    running = start_server()
    argv = ["-c", str(tmp_path / "broken.toml"), "query", "--ping", "--socket", running.target]
    assert run(capsys, *argv, "--map", "tempmail") == (0, "alive\n", "")
    status, _, err = run(capsys, *argv, "--map", "wrong")
    assert status == cli.EX_DATAERR
    assert err.startswith("tempmail: PERM unknown map name 'wrong'")
    assert (
        run(capsys, "query", "--ping", "--socket", f"unix:{tmp_path}/none", "--map", "m")[0]
        == cli.EX_UNAVAILABLE
    )
    assert run(capsys, "query", "--ping", "a@b.c")[0] == cli.EX_USAGE


def test_query_uses_the_config_for_socket_and_map(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    running = start_server()
    today = f"{code(utc_today())}@example.org"
    assert run(capsys, "-c", str(running.config_path), "query", today)[:2] == (0, f"{RECIPIENT}\n")


def test_query_connection_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(
        capsys, "query", "a@b.c", "--socket", f"unix:{tmp_path}/none", "--map", "x"
    )
    assert status == cli.EX_UNAVAILABLE
    assert err == f"tempmail: cannot query unix:{tmp_path}/none: No such file or directory\n"
    status, _, err = run(capsys, "query", "a@b.c", "--socket", "tcp:1.2.3.4", "--map", "x")
    assert status == cli.EX_USAGE
    assert "expected unix:PATH or inet:HOST:PORT" in err
    assert run(capsys, "query", "--map", "x")[0] == cli.EX_USAGE


@pytest.mark.parametrize(
    ("reply", "status", "message"),
    [
        (
            netstring.encode(b"TEMP database down"),
            cli.EX_TEMPFAIL,
            "tempmail: TEMP database down\n",
        ),
        (netstring.encode(b"TIMEOUT slow"), cli.EX_TEMPFAIL, "tempmail: TIMEOUT slow\n"),
        (
            netstring.encode(b"MAYBE"),
            cli.EX_PROTOCOL,
            "tempmail: {target}: unknown reply status b'MAYBE'\n",
        ),
        (b"3:OK", cli.EX_PROTOCOL, "tempmail: {target}: stream ended inside a netstring\n"),
        (
            b"",
            cli.EX_PROTOCOL,
            "tempmail: {target}: the server closed the connection without replying\n",
        ),
        (
            b"x",
            cli.EX_PROTOCOL,
            "tempmail: {target}: netstring length b'x' is not a decimal number\n",
        ),
    ],
)
def test_query_reports_temp_and_garbage(
    scripted_server: ScriptedServers,
    capsys: pytest.CaptureFixture[str],
    reply: bytes,
    status: int,
    message: str,
) -> None:
    def answer(connection: socket.socket) -> None:
        connection.recv(1000)
        connection.sendall(reply)

    target = scripted_server.start(answer)
    assert run(capsys, "query", "a@b.c", "--socket", target, "--map", "m")[::2] == (
        status,
        message.format(target=target),
    )


# --- init ------------------------------------------------------------------------------------


def test_init_writes_a_private_loadable_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new.toml"
    status, _, err = run(
        capsys, "init", str(path), "--domain", "mail.example", "--recipient", "me@home.example"
    )
    assert (status, err) == (0, f"tempmail: wrote {path}\n")
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = config.load(path, environ={})
    identity = loaded.identities[0]
    assert (identity.domain, identity.recipient, identity.scheme.name) == (
        "mail.example",
        "me@home.example",
        "hmac",
    )
    assert len(identity.secrets[0].reveal()) >= 43  # 256 random bits, base64url
    assert loaded.warnings == ()


def test_init_makes_a_new_secret_each_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = set()
    for name in ("a.toml", "b.toml"):
        run(
            capsys,
            "init",
            str(tmp_path / name),
            "--domain",
            "m.example",
            "--recipient",
            "a@b.example",
        )
        secrets.add(config.load(tmp_path / name, environ={}).identities[0].secrets[0].reveal())
    assert len(secrets) == 2


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "new.toml"
    path.write_text("precious")
    status, _, err = run(capsys, "init", str(path), "--dev")
    assert (status, err) == (
        cli.EX_CANTCREAT,
        f"tempmail: {path} exists; refusing to overwrite it\n",
    )
    assert path.read_text() == "precious"


def test_init_with_a_secret_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, secret = tmp_path / "c.toml", tmp_path / "secret"
    assert run(capsys, "init", str(path), "--dev", "--secret-file", str(secret))[0] == 0
    assert secret.stat().st_mode & 0o777 == 0o600
    assert "secret =" not in path.read_text()
    assert (
        config.load(path, environ={}).identities[0].secrets[0].reveal()
        == secret.read_bytes().strip()
    )


def test_init_needs_domain_and_recipient(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "init", str(tmp_path / "c.toml"), "--domain", "x.org")
    assert status == cli.EX_USAGE
    assert (
        err
        == "tempmail: --domain and --recipient are required (or --dev for a local trial config)\n"
    )
    status, _, err = run(
        capsys, "init", str(tmp_path / "c.toml"), "--domain", "bad domain", "--recipient", "a@b.org"
    )
    assert status == cli.EX_CONFIG
    assert not (tmp_path / "c.toml").exists()


# --- the real process ------------------------------------------------------------------------


def dev_config(short_dir: Path) -> Path:
    path = short_dir / "dev.toml"
    assert cli.main(["init", str(path), "--dev"]) == 0
    return path


def test_serve_reload_and_stop(short_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`tempmail reload` makes a new secret take effect, SIGTERM stops fast with exit 0."""
    path = dev_config(short_dir)
    with ServerProcess(path) as server:
        text = path.read_text()
        old_secret = config.load(path, environ={}).identities[0].secrets[0].reveal().decode()
        path.write_text(text.replace(old_secret, "a brand new secret for the reload test"))
        assert run(capsys, "-c", str(path), "reload")[:2] == (
            0,
            "reloaded: configuration generation 2\n",
        )
        new_address = run(capsys, "-c", str(path), "address")[1].split()[0]
        assert run(capsys, "-c", str(path), "query", new_address)[:2] == (0, "you@example.org\n")
        started = time.monotonic()
        assert server.stop(signal.SIGTERM, timeout=5) == 0
        assert time.monotonic() - started < 1.0
        assert not (short_dir / "tempmail.sock").exists()
    log = server.log
    assert "received SIGHUP: reloading the configuration" in log
    assert "configuration reloaded from" in log
    assert "received SIGTERM: shutting down" in log
    assert old_secret not in log


def test_serve_keeps_running_on_a_broken_reload(short_dir: Path) -> None:
    path = dev_config(short_dir)
    with ServerProcess(path) as server:
        path.write_text(
            path.read_text().replace("[identities.default]", "[identities.default]\nbogus = 1")
        )
        server.signal(signal.SIGHUP)
        line = server.wait_for("reload failed.*").group(0)
        assert "identities.default.bogus: unknown key" in line
        assert server.stop(signal.SIGINT, timeout=5) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_serve_as_root_without_a_user_is_refused(short_dir: Path) -> None:
    path = write_config(
        short_dir / "c.toml", {**config_data(), "socket": {"path": str(short_dir / "s.sock")}}
    )
    result = subprocess.run(
        [sys.executable, "-m", "tempmail", "-c", str(path), "serve"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == cli.EX_CONFIG
    assert result.stderr.startswith("tempmail: server.user: refusing to run as root")
    assert not (short_dir / "s.sock").exists()


def test_python_dash_m(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tempmail", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout == f"tempmail {__version__}\n"


@pytest.mark.parametrize("command", [["address"], ["address", "--json"], ["--help"]])
def test_a_reader_that_stops_reading_is_no_error(tmp_path: Path, command: list[str]) -> None:
    """`tempmail address | head -n 1`: the pipe's reader is gone before tempmail writes."""
    config_path = tmp_path / "config.toml"
    write_config(config_path, config_data())
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tempmail", "-c", str(config_path), *command],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr
    assert "BrokenPipeError" not in done.stderr
    assert done.returncode == 0


def test_a_broken_pipe_that_is_not_standard_output_still_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a reader of our output that went away is forgiven, not a peer that hung up."""

    def hung_up(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli.address, "run", hung_up)
    with pytest.raises(BrokenPipeError):
        cli.main(["address"])


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        # os.kill(-1, SIGHUP) as root signals every process; 0 would signal our group.
        (["reload", "--pid", "-1"], "argument --pid: must be above 0, got -1"),
        (["reload", "--pid", "0"], "argument --pid: must be above 0, got 0"),
        (["reload", "--pid", "x"], "argument --pid: expected a whole number, got 'x'"),
        (["reload", "--timeout", "0"], "argument --timeout: must be above 0 and at most 86400"),
        (["query", "k", "--timeout", "-1"], "argument --timeout: must be above 0 and at most"),
        (["query", "k", "--timeout", "nan"], "argument --timeout: must be above 0 and at most"),
    ],
)
def test_pids_and_timeouts_are_checked_before_anything_is_signalled(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    problem: str,
) -> None:
    monkeypatch.setattr(os, "kill", _never_called)
    with pytest.raises(SystemExit) as caught:
        cli.main([*argv, "--socket", "unix:/nonexistent/socket"])
    assert caught.value.code == cli.EX_USAGE
    assert problem in capsys.readouterr().err


def _never_called(*args: object) -> None:
    raise AssertionError(f"os.kill{args} was called")
