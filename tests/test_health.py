"""Health from the running server: the status request, `query --self-test/--status`, `reload`."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ServerProcess, serving_config, write_config
from helpers import RECIPIENT, SECRET, FakeClock, ScriptedServers, StartServer, config_data
from tempmail import __version__, cli, config, netstring, schemes, status
from tempmail.lookup import Resolver, Result
from tempmail.socketmap import NOTFOUND
from tempmail.stats import Stats


def todays_address(secret: str = SECRET) -> str:
    day = dt.datetime.now(dt.UTC).date()
    return f"{schemes.code(schemes.HMAC, day, secret.encode(), 8)}@example.org"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- the status request ----------------------------------------------------------------------


def test_status_reports_what_is_served_without_any_address(start_server: StartServer) -> None:
    """The report names the map, the generation and each identity's self-test; no address."""
    running = start_server(config_data(domains=["example.org", "example.com"], domain=None))
    reply = running.query("anything", map_name=status.STATUS_MAP)
    report = status.parse(reply)
    assert report["map_name"] == "tempmail"
    assert report["version"] == __version__
    assert report["pid"] == os.getpid()
    assert report["config"]["generation"] == 1
    assert report["config"]["file"] == str(running.config_path)
    assert report["reloads"] == {"ok": 0, "failed": 0, "last_ok": True, "last_error": None}
    assert report["identities"] == [
        {"name": "default", "domains": ["example.org", "example.com"], "self_test": "ok"}
    ]
    assert todays_address().split("@")[0] not in reply.data
    assert RECIPIENT not in reply.data
    assert SECRET not in reply.data


def test_status_is_not_a_lookup_and_postfix_never_asks_it(start_server: StartServer) -> None:
    """`_status` is no valid map name, so no configuration can make Postfix send it."""
    running = start_server()
    running.query("x", map_name=status.STATUS_MAP)
    assert running.server.stats.status_requests == 1
    assert running.server.stats.lookups == 0
    data = config_data()
    data["server"] = {"map_name": "_status"}
    with pytest.raises(Exception, match="map_name: use letters, digits"):
        start_server(data)


def test_a_failed_reload_is_visible_in_the_status(start_server: StartServer) -> None:
    """A broken file on disk: the previous configuration serves, the status says why."""
    running = start_server()
    data = config_data()
    data["socket"] = {"path": running.target.removeprefix("unix:")}
    data["identities"]["default"]["bogus"] = 1
    running.rewrite_config(data)
    assert running.reload() is False
    report = status.parse(running.query("x", map_name=status.STATUS_MAP))
    assert report["config"]["generation"] == 1
    assert report["reloads"] == {
        "ok": 0,
        "failed": 1,
        "last_ok": False,
        "last_error": f"{running.config_path}: identities.default.bogus: unknown key",
    }
    del data["identities"]["default"]["bogus"]
    running.rewrite_config(data)
    assert running.reload() is True
    report = status.parse(running.query("x", map_name=status.STATUS_MAP))
    assert report["config"]["generation"] == 2
    assert report["reloads"] == {"ok": 1, "failed": 1, "last_ok": True, "last_error": None}


@pytest.mark.parametrize(("count", "detail"), [(1500, "names"), (4000, "counts")])
def test_a_huge_status_report_still_fits_a_reply(count: int, detail: str) -> None:
    """With thousands of identities the report drops detail, never the Postfix reply limit."""
    identities = {
        f"id{n}": {
            "domains": [f"d{n}-{m}.example" for m in range(8)],
            "recipient": f"o{n}@example.net",
            "secret": SECRET,
        }
        for n in range(count)
    }
    loaded = config.parse({"identities": identities}, environ={})
    now = FakeClock().now
    reply = status.reply(loaded, Resolver(loaded.identities, "+", now), Stats(), now)
    assert len(reply.wire) < 100_000
    report = status.parse(reply)
    if detail == "names":
        assert report["identities"][-1] == {"name": f"id{count - 1}", "self_test": "ok"}
    else:
        assert (report["identities_ok"], report["identities_failed"]) == (count, 0)


# --- query --self-test / --status --------------------------------------------------------------


def test_self_test_with_socket_and_map_reads_no_config(
    start_server: StartServer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The probe form of the image and the manifests: a broken config on disk is not read."""
    running = start_server()
    broken = tmp_path / "broken.toml"
    broken.write_text("this is [not toml")
    monkeypatch.setenv("TEMPMAIL_CONFIG", str(broken))
    code, out, err = run(
        capsys, "query", "--self-test", "--socket", running.target, "--map", "tempmail"
    )
    assert (code, out, err) == (
        0,
        "self-test passed: 1 identity OK (configuration generation 1)\n",
        "",
    )


def test_self_test_reads_the_socket_from_the_config_without_it(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    running = start_server()
    code, out, _ = run(capsys, "-c", str(running.config_path), "query", "--self-test")
    assert (code, out) == (0, "self-test passed: 1 identity OK (configuration generation 1)\n")


def test_self_test_fails_on_a_wrong_map_name(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    running = start_server()
    code, out, err = run(
        capsys, "query", "--self-test", "--socket", running.target, "--map", "other"
    )
    assert (code, out) == (cli.EX_UNAVAILABLE, "")
    assert err == (
        "tempmail: self-test failed: the server answers map 'tempmail', not 'other' "
        "(check --map and virtual_alias_maps)\n"
    )


def test_self_test_fails_when_todays_address_does_not_resolve_and_prints_no_address(
    start_server: StartServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server's own lookup path is what is tested: break it, and the probe fails."""
    running = start_server()
    monkeypatch.setattr(Resolver, "resolve", lambda _self, _key, _now: Result(NOTFOUND))
    code, out, err = run(capsys, "query", "--self-test", "--socket", running.target)
    assert (code, out) == (cli.EX_UNAVAILABLE, "")
    assert err == (
        "tempmail: self-test failed: today's address of identity 'default' does not resolve "
        "to its recipient\n"
    )
    assert todays_address().split("@")[0] not in out + err


def test_self_test_passes_with_a_warning_while_a_broken_file_waits_on_disk(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Readiness stays green (the old config serves); the failure is on stderr."""
    running = start_server()
    data = config_data()
    data["socket"] = {"path": running.target.removeprefix("unix:")}
    data["identities"]["default"]["lenght"] = 9
    running.rewrite_config(data)
    assert running.reload() is False
    code, out, err = run(capsys, "query", "--self-test", "--socket", running.target)
    assert (code, out) == (0, "self-test passed: 1 identity OK (configuration generation 1)\n")
    assert err == (
        "tempmail: warning: the last reload failed; the previous configuration keeps serving: "
        f"{running.config_path}: identities.default.lenght: unknown key (did you mean "
        "'length'?)\n"
    )


def test_status_prints_the_report(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    running = start_server()
    code, out, _ = run(capsys, "query", "--status", "--socket", running.target)
    assert code == 0
    assert json.loads(out)["identities"][0]["self_test"] == "ok"


def _answer_perm(connection: socket.socket) -> None:
    while connection.recv(4096):
        connection.sendall(netstring.encode(b"PERM unknown map name '_status'"))


@pytest.fixture
def old_server(scripted_server: ScriptedServers) -> str:
    """A server that answers every request PERM, as tempmail 1.x answers `_status`."""
    return scripted_server.start(_answer_perm)


def test_self_test_against_a_server_without_status(
    old_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "query", "--self-test", "--socket", old_server)
    assert code == cli.EX_PROTOCOL
    assert err == (
        f"tempmail: {old_server}: no status report (PERM unknown map name '_status'); is this "
        "tempmail 2.0 or later?\n"
    )


# --- tempmail reload -----------------------------------------------------------------------------


@pytest.fixture
def serving(short_dir: Path) -> Iterator[tuple[Path, ServerProcess]]:
    """`tempmail serve` in a process of its own, with file watching off (only signals reload)."""
    data = serving_config(config_data(), short_dir, "s", as_process=True)
    data["server"]["reload_on_change"] = False
    with ServerProcess(write_config(short_dir / "c.toml", data)) as server:
        yield short_dir / "c.toml", server


def test_reload_reports_success_with_the_new_generation(
    serving: tuple[Path, ServerProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --pid, the PID comes from the kernel (SO_PEERCRED) and must match the report."""
    path, _ = serving
    assert run(capsys, "-c", str(path), "reload") == (
        0,
        "reloaded: configuration generation 2\n",
        "",
    )


def test_reload_reports_a_refused_configuration_with_exit_78(
    serving: tuple[Path, ServerProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    """systemctl reload must fail when the server refused the file (ExecReload=)."""
    path, process = serving
    socket_path = path.parent / "s.sock"
    path.write_text(path.read_text() + "\n[bogus]\n")
    code, out, err = run(
        capsys, "reload", "--pid", str(process.pid), "--socket", f"unix:{socket_path}"
    )
    assert (code, out) == (78, "")
    assert err == (
        "tempmail: reload failed, the previous configuration keeps serving: "
        f"{path}: bogus: unknown key\n"
    )
    code, out, _ = run(capsys, "query", "--self-test", "--socket", f"unix:{socket_path}")
    assert (code, out) == (0, "self-test passed: 1 identity OK (configuration generation 1)\n")


def test_reload_refuses_to_guess_the_pid_when_the_listener_is_not_the_server(
    old_server: str, capsys: pytest.CaptureFixture[str], short_dir: Path
) -> None:
    """A reply must never choose the process root signals: here it cannot even report one."""
    code, _, err = run(capsys, "reload", "--socket", old_server)
    assert code == cli.EX_PROTOCOL
    assert "no status report" in err


def test_reload_without_a_server(capsys: pytest.CaptureFixture[str], short_dir: Path) -> None:
    code, _, err = run(capsys, "reload", "--socket", f"unix:{short_dir}/none")
    assert code == 69
    assert err == (
        f"tempmail: cannot reach the server at unix:{short_dir}/none: No such file or directory\n"
    )


def test_reload_with_a_malformed_socket_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(capsys, "reload", "--socket", "tcp:localhost:25") == (
        2,
        "",
        "tempmail: --socket: expected unix:PATH or inet:HOST:PORT, got 'tcp:localhost:25'\n",
    )


def test_reload_over_tcp_needs_the_pid(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over TCP the kernel names no listening process: nothing is signalled without --pid."""
    data = config_data()
    data["socket"] = {"type": "inet"}
    running = start_server(data)
    code, out, err = run(capsys, "reload", "--socket", running.target)
    assert (code, out) == (2, "")
    assert err == (
        "tempmail: --pid is needed: the process listening on the socket is not the one that "
        "answers (socket activation, or a TCP socket); give the server's PID\n"
    )
    assert running.server.stats.reloads_ok == 0


def test_reload_of_a_pid_that_does_not_exist(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()  # reaped: nobody has its PID (until the kernel hands it out again)
    running = start_server()
    code, out, err = run(capsys, "reload", "--socket", running.target, "--pid", str(finished.pid))
    assert (code, out, err) == (71, "", f"tempmail: --pid: no process {finished.pid}\n")


def test_reload_without_a_verdict_times_out(
    start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """--pid names a process that ignores SIGHUP: no reload is ever reported."""
    running = start_server()
    deaf = subprocess.Popen(["sh", "-c", 'trap "" HUP; exec sleep 30'])
    try:
        code, out, err = run(
            capsys, "reload", "--socket", running.target, "--pid", str(deaf.pid), "--timeout", "0.3"
        )
    finally:
        deaf.kill()
        deaf.wait()
    assert (code, out) == (75, "")
    assert err == "tempmail: no reload reported within 0.3 s; see the server's log\n"
