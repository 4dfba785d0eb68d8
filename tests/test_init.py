"""`tempmail init` on a real host: a service user, a new config directory, safe file creation.

Run as root (CI is root) with users and groups each test creates and removes; nothing here
depends on this machine's accounts except root's.
"""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import secrets
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ServerProcess
from helpers import as_user
from installs import FreshInstall
from tempmail import cli, config
from tempmail.cli import setup
from tempmail.client import Client
from tempmail.socketmap import Status

#: The README's host install, as its host section runs it (the config path comes from
#: $TEMPMAIL_CONFIG here, /etc/tempmail/config.toml there).
README_INIT = (
    "init --domain example.org --recipient you@example.net --user {user} --secret-file {secret}"
)


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """Stands for /: a directory everyone may enter, as / and /etc are.

    In /tmp rather than pytest's tmp_path, whose parent is private (0700).
    """
    with tempfile.TemporaryDirectory(prefix="tm-host-") as name:
        root = Path(name)
        root.chmod(0o755)
        yield root


def tempmail(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tempmail", *argv],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def owner_group_mode(path: Path) -> tuple[int, int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


# --- the host install ---------------------------------------------------------------------


def test_init_on_a_fresh_host_as_the_readme_runs_it(
    host_dir: Path, service_user: pwd.struct_passwd
) -> None:
    """The config directory is made, both files are root:USER 0640, the user reads them."""
    etc = host_dir / "etc" / "tempmail"
    etc.parent.mkdir(mode=0o755)
    config_path, secret = etc / "config.toml", etc / "secret"
    argv = README_INIT.format(user=service_user.pw_name, secret=secret).split()
    result = tempmail(*argv, env={"TEMPMAIL_CONFIG": str(config_path)})
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr.splitlines()[0] == (
        f"tempmail: wrote {config_path} and {secret}, readable by group "
        f"{service_user.pw_name} (mode 0640)"
    )
    gid = service_user.pw_gid
    assert owner_group_mode(etc) == (0, gid, 0o750)
    assert owner_group_mode(config_path) == (0, gid, 0o640)
    assert owner_group_mode(secret) == (0, gid, 0o640)
    written = tomllib.loads(config_path.read_text())
    assert written["server"]["user"] == service_user.pw_name
    assert written["server"]["secret_permissions"] == "group"
    assert written["socket"]["path"] == "/var/spool/postfix/tempmail/socket"
    assert written["socket"]["group"] == "postfix"
    assert written["identities"]["default"]["secret_file"] == str(secret)
    loaded = config.load(config_path, environ={})
    assert loaded.identities[0].secrets[0].reveal() == secret.read_bytes().strip()
    # What the server needs after it switched to the user: read both, change neither.
    for path in (config_path, secret):
        assert as_user(service_user, "cat", str(path)).stdout == path.read_text()
        denied = as_user(service_user, "sh", "-c", f"echo x >> {path}")
        assert denied.returncode != 0
        assert "Permission denied" in denied.stderr


def test_a_reload_after_the_switch_to_the_user_reads_the_new_config(
    host_dir: Path, service_user: pwd.struct_passwd, short_dir: Path, fresh_install: FreshInstall
) -> None:
    """Started as root, the server drops to --user and still re-reads config and secret.

    The server runs from an installation the user can read, as the README installs it.
    """
    etc = host_dir / "tempmail"
    config_path, secret = etc / "config.toml", etc / "secret"
    group = service_user.pw_name  # the user's own group: this test needs no Postfix
    init = [str(config_path), "--domain", "example.org", "--recipient", "you@example.net"]
    init += ["--user", service_user.pw_name, "--secret-file", str(secret)]
    assert cli.main(["init", *init, "--socket-group", group]) == 0
    os.chown(short_dir, service_user.pw_uid, service_user.pw_gid)  # it removes its socket
    socket_path = short_dir / "socket"
    text = config_path.read_text()
    config_path.write_text(  # in place: owner and mode stay
        text.replace('"/var/spool/postfix/tempmail/socket"', f'"{socket_path}"')
    )
    command = [fresh_install.venv / "bin" / "tempmail"]
    with ServerProcess(config_path, command=command, env=fresh_install.env) as server:
        status = Path(f"/proc/{server.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uids.split()[1:] == [str(service_user.pw_uid)] * 4
        address = today(config_path)
        assert lookup(socket_path, address) == (Status.OK, "you@example.net")
        config_path.write_text(
            config_path.read_text().replace("you@example.net", "new@example.net")
        )
        server.signal(signal.SIGHUP)
        server.wait_for("configuration reloaded")
        assert lookup(socket_path, address) == (Status.OK, "new@example.net")
        assert server.stop(timeout=5) == 0


def today(config_path: Path) -> str:
    from tempmail import generate  # noqa: PLC0415

    identity = config.load(config_path, environ={}).identities[0]
    return str(generate.current_addresses(identity, time.time())[0])


def lookup(socket_path: Path, key: str) -> tuple[Status, str]:
    with Client(f"unix:{socket_path}", timeout=5) as client:
        reply = client.query("tempmail", key)
    return reply.status, reply.data


def test_init_notes_a_directory_the_user_cannot_enter(
    host_dir: Path, service_user: pwd.struct_passwd, capsys: pytest.CaptureFixture[str]
) -> None:
    """init never changes an existing directory, but says which one breaks reloads."""
    private = host_dir / "private"
    private.mkdir(mode=0o700)
    path = private / "config.toml"
    assert cli.main(["init", str(path), "--dev", "--user", service_user.pw_name]) == 0
    assert capsys.readouterr().err.splitlines()[1:] == [
        (
            f"tempmail: note: user {service_user.pw_name} cannot enter {private} (mode 0700), so "
            f"the server cannot read {path} after switching to it and every reload will fail; "
            f"for example: chgrp {service_user.pw_name} {private} && chmod g+x {private}"
        )
    ]
    assert owner_group_mode(private) == (0, 0, 0o700)  # left as it was


def test_user_and_group_must_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A name this system does not know is a usage error (2) naming the option."""
    path = str(tmp_path / "c.toml")
    missing = f"tm-none-{secrets.token_hex(4)}"
    assert cli.main(["init", path, "--dev", "--user", missing]) == cli.EX_USAGE
    assert capsys.readouterr().err == (
        f"tempmail: --user: no user '{missing}' on this system; create it first "
        f"(for example: useradd --system {missing})\n"
    )
    assert cli.main(["init", path, "--dev", "--socket-group", missing]) == cli.EX_USAGE
    assert capsys.readouterr().err == (
        f"tempmail: --socket-group: no group '{missing}' on this system (Postfix's is 'postfix')\n"
    )
    assert cli.main(["init", path, "--dev", "--user", "a\x00b"]) == cli.EX_USAGE
    assert "--user: no user 'a\\x00b' on this system" in capsys.readouterr().err
    assert not Path(path).exists()


def test_a_numeric_user_and_group(
    tmp_path: Path, service_user: pwd.struct_passwd, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    uid, gid = str(service_user.pw_uid), str(service_user.pw_gid)
    assert cli.main(["init", str(path), "--dev", "--user", uid, "--socket-group", gid]) == 0
    written = tomllib.loads(path.read_text())
    assert (written["server"]["user"], written["socket"]["group"]) == (uid, service_user.pw_gid)
    assert owner_group_mode(path)[1:] == (service_user.pw_gid, 0o640)
    capsys.readouterr()


def test_a_host_config_names_its_socket_and_postfix_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --user: private files, the socket where Postfix looks, the group it runs as."""
    path = tmp_path / "c.toml"
    argv = ["init", str(path), "--domain", "example.org", "--recipient", "you@example.net"]
    monkeypatch.setattr(setup, "HOST_SOCKET_GROUP", "tm-no-such-group")
    assert cli.main(argv) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"tempmail: wrote {path}",
        (
            "tempmail: note: socket.group = 'tm-no-such-group', a group this system does not have "
            "(yet): the server needs it when it starts (install Postfix first, or use "
            "--socket-group)"
        ),
    ]
    written = tomllib.loads(path.read_text())
    assert written["socket"] == {
        "type": "unix",
        "path": "/var/spool/postfix/tempmail/socket",
        "group": "tm-no-such-group",
        "mode": "0660",
        "host": "127.0.0.1",
        "port": 10000,
    }
    assert "user" not in written["server"]
    assert owner_group_mode(path)[2] == 0o600


# --- creating files safely ------------------------------------------------------------------


def test_a_missing_config_directory_is_created_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new" / "c.toml"
    assert cli.main(["init", str(path), "--dev", "--secret-file", str(path.parent / "s")]) == 0
    assert owner_group_mode(path.parent)[2] == 0o700
    assert owner_group_mode(path)[2] == owner_group_mode(path.parent / "s")[2] == 0o600
    deeper = tmp_path / "no" / "such" / "c.toml"
    assert cli.main(["init", str(deeper), "--dev"]) == cli.EX_CANTCREAT
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"tempmail: cannot create files in {tmp_path / 'no'}: No such file or directory"
    )


@pytest.mark.parametrize("which", ["config", "secret"])
def test_a_planted_symlink_is_never_followed(
    tmp_path: Path, which: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A link at either path (even a dangling one) is refused; its target is untouched."""
    victim = tmp_path / "victim"
    victim.write_text("root's file")
    victim.chmod(0o600)
    path, secret = tmp_path / "c.toml", tmp_path / "secret"
    link = path if which == "config" else secret
    link.symlink_to(victim)
    status = cli.main(["init", str(path), "--dev", "--secret-file", str(secret)])
    assert status == cli.EX_CANTCREAT
    assert capsys.readouterr().err == f"tempmail: {link} exists; refusing to overwrite it\n"
    assert (victim.read_text(), owner_group_mode(victim)[2]) == ("root's file", 0o600)
    assert [p.name for p in tmp_path.iterdir() if not p.is_symlink()] == ["victim"]
    link.unlink()
    link.symlink_to(tmp_path / "dangling")
    assert cli.main(["init", str(path), "--dev", "--secret-file", str(secret)]) == 73
    assert not (tmp_path / "dangling").exists()


def test_a_symlink_racing_into_place_is_never_followed(tmp_path: Path) -> None:
    """An attacker in a shared (sticky) directory swaps a link in and out while init runs."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.write_text("root's file")
    victim.chmod(0o600)
    target = shared / "c.toml"
    stop = threading.Event()

    def attacker() -> None:
        while not stop.is_set():
            with contextlib.suppress(FileExistsError):  # init's file is there: try again
                target.symlink_to(victim)
            if target.is_symlink():  # only its own link: in a sticky directory it can do no more
                target.unlink()

    thread = threading.Thread(target=attacker)
    thread.start()
    outcomes = {"written": 0, "refused": 0}
    try:
        for _ in range(300):
            with contextlib.redirect_stderr(io.StringIO()):
                status = cli.main(["init", str(target), "--dev"])
            if status == 0:
                outcomes["written"] += 1
                assert stat.S_ISREG(target.lstat().st_mode)
                target.unlink()
            else:
                assert status == cli.EX_CANTCREAT
                outcomes["refused"] += 1
            assert victim.read_text() == "root's file"
            assert owner_group_mode(victim)[2] == 0o600
    finally:
        stop.set()
        thread.join()
    assert outcomes["refused"] > 0  # the race was real
    assert outcomes["written"] > 0


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_directory_others_may_write_is_refused(
    tmp_path: Path, mode: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """They could replace the config after it was written; the server reads it as root."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    assert cli.main(["init", str(shared / "c.toml"), "--dev"]) == cli.EX_CANTCREAT
    assert capsys.readouterr().err == (
        f"tempmail: refusing to create files in {shared}: others may write to it (mode "
        f"{mode:04o}) and could replace them; use a directory only you can write to\n"
    )
    assert list(shared.iterdir()) == []


def test_a_directory_of_another_user_is_refused(
    tmp_path: Path, service_user: pwd.struct_passwd, capsys: pytest.CaptureFixture[str]
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, service_user.pw_uid, service_user.pw_gid)
    assert cli.main(["init", str(theirs / "c.toml"), "--dev"]) == cli.EX_CANTCREAT
    assert capsys.readouterr().err == (
        f"tempmail: refusing to create files in {theirs}: it belongs to uid "
        f"{service_user.pw_uid}, who could replace them; use a directory of your own or root's\n"
    )


def test_a_symlink_where_the_directory_is_to_be_made_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "etc").symlink_to(elsewhere)
    assert cli.main(["init", str(tmp_path / "etc" / "c.toml"), "--dev"]) == cli.EX_CANTCREAT
    assert capsys.readouterr().err == (
        f"tempmail: cannot use {tmp_path / 'etc'} as a directory: it is a symbolic link\n"
    )
    assert list(elsewhere.iterdir()) == []


def test_the_secret_file_is_removed_when_the_config_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """All or nothing: no secret file is left behind without the config that names it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    secret = tmp_path / "secret"
    assert cli.main(["init", str(shared / "c.toml"), "--dev", "--secret-file", str(secret)]) == 73
    assert not secret.exists()
    capsys.readouterr()


# --- command-line habits ---------------------------------------------------------------------


def test_config_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--config works after the subcommand as well as before it."""
    path = tmp_path / "c.toml"
    assert cli.main(["init", "--config", str(path), "--dev"]) == 0
    assert path.exists()
    capsys.readouterr()
    assert cli.main(["address", "--config", str(path)]) == 0
    after = capsys.readouterr().out
    assert cli.main(["-c", str(path), "address"]) == 0
    assert capsys.readouterr().out == after
    assert after.endswith("@example.org\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["init", "--domain", "example.org"],
        ["init", "--dev", "--secret-file", "{path}"],
        ["init", "--bogus"],
        ["init", "{path}", "extra"],
        ["migrate"],
        ["migrate", "{old}", "-o", "{path}", "--secret-file", "{path}"],
        ["migrate", "{old}", "--bogus"],
    ],
)
def test_every_usage_error_of_init_and_migrate_exits_2(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    old = tmp_path / "tempmail.cf"
    old.write_text("SHARED_SECRET=x\nDOMAIN=example.org\nMAILDROP=me@example.net\n")
    argv = [a.format(path=path, old=old) for a in argv]
    if "--dev" in argv:
        argv.insert(1, str(path))
    status: int | str | None
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code  # argparse's own usage errors
    assert status == cli.EX_USAGE
    assert capsys.readouterr().err.startswith(("tempmail: ", "usage: tempmail"))
    assert not path.exists()
