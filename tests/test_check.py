"""`tempmail check` against Debian's postconf and postmap, a real server and real users.

Each test has a Postfix configuration of its own (postfix_dir.py: a main.cf, Debian's default
chrooted master.cf, a queue directory) and a real server on a socket in that queue directory.
The checks connect as Postfix's mail_owner (postfix, from Debian's package), chrooted into the
queue directory as master.cf says, which needs root: CI runs as root.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import RunningServer, write_config
from helpers import SECRET, StartServer, config_data
from postfix_dir import MAIL_OWNER, PostfixDir, make_postfix_dir, require_root
from tempmail import cli, config, doctor, schemes

pytestmark = pytest.mark.postfix

GUARD = (
    "pipemap:{regexp:{{/^([^@]+@example\\.org)$$/ $${1}}}, socketmap:unix:tempmail/socket:tempmail}"
)


@pytest.fixture
def postfix_dir(short_dir: Path) -> PostfixDir:
    require_root()
    short_dir.chmod(0o755)  # mail_owner must reach the queue and config directories below
    return make_postfix_dir(short_dir / "pf")


@pytest.fixture
def serve(postfix_dir: PostfixDir, start_server: StartServer) -> Callable[..., RunningServer]:
    """Start a server on queue/tempmail/socket, given to group postfix (unless told)."""

    def start(data: dict[str, Any] | None = None, **socket: Any) -> RunningServer:
        data = data or config_data()
        table: dict[str, Any] = {
            "path": str(postfix_dir.queue / "tempmail" / "socket"),
            "group": MAIL_OWNER,
        }
        table.update(socket)
        data["socket"] = {key: value for key, value in table.items() if value is not None}
        return start_server(data)

    return start


def configure(
    postfix_dir: PostfixDir, capsys: pytest.CaptureFixture[str], running: RunningServer
) -> None:
    """Apply what `tempmail postfix-config` prints for the server's config."""
    status = cli.main(
        [
            *("-c", str(running.config_path), "postfix-config"),
            *("--queue-directory", str(postfix_dir.queue)),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    postfix_dir.set(*lines)


def run_check(
    capsys: pytest.CaptureFixture[str], config_path: Path, postfix_dir: PostfixDir | None
) -> tuple[int, list[str], str]:
    directory = ["--postfix-dir", str(postfix_dir.config)] if postfix_dir else []
    status = cli.main(["-c", str(config_path), "check", *directory])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def today_code(secret: str = SECRET) -> str:
    return schemes.code(schemes.HMAC, dt.datetime.now(dt.UTC).date(), secret.encode(), 8)


def chrooted(postfix_dir: PostfixDir) -> str:
    return f"chrooted to {postfix_dir.queue} as smtp/inet, cleanup/unix"


def ok_lines(postfix_dir: PostfixDir) -> list[str]:
    return [
        "Postfix 3.7.11, configuration in " + str(postfix_dir.config),
        (
            "ok    virtual_alias_maps asks this server (unix:tempmail/socket, map 'tempmail') only "
            "about example.org (the guard passes nothing else)"
        ),
        "ok    virtual_alias_domains lists example.org",
        "ok    mydestination lists no temporary domain",
        "ok    recipient_delimiter '+' is tempmail's",
        (
            f"ok    postfix connects to unix:tempmail/socket {chrooted(postfix_dir)}, and tempmail "
            "answers"
        ),
        (
            "ok    today's address of identity 'default' resolves to owner@example.net through "
            "virtual_alias_maps (postmap -q as postfix)"
        ),
        "tempmail check: all 6 checks passed",
    ]


def test_all_checks_pass_after_postfix_config(
    postfix_dir: PostfixDir,
    serve: Callable[..., RunningServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 0, one ok line per check, and never a valid address."""
    running = serve()
    configure(postfix_dir, capsys, running)
    status, lines, err = run_check(capsys, running.config_path, postfix_dir)
    assert (status, lines, err) == (0, ok_lines(postfix_dir), "")
    assert today_code() not in "\n".join(lines)


def test_mail_config_names_the_directory(
    postfix_dir: PostfixDir,
    serve: Callable[..., RunningServer],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --postfix-dir, $MAIL_CONFIG is what postconf uses."""
    running = serve()
    configure(postfix_dir, capsys, running)
    monkeypatch.setenv("MAIL_CONFIG", str(postfix_dir.config))
    assert run_check(capsys, running.config_path, None) == (0, ok_lines(postfix_dir), "")


def test_no_main_cf_is_exit_69(
    short_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """postconf cannot read the directory: one line, exit 69 (not 1, not 78)."""
    config_path = write_config(tmp_path / "c.toml", config_data())
    empty = short_dir / "empty"
    empty.mkdir()
    status = cli.main(["-c", str(config_path), "check", "--postfix-dir", str(empty)])
    assert (status, capsys.readouterr()) == (
        69,
        (
            "",
            (
                f"tempmail: postconf cannot read Postfix's configuration: fatal: open {empty}/main.cf: "
                "No such file or directory; fix: give the directory of main.cf with --postfix-dir or "
                "$MAIL_CONFIG\n"
            ),
        ),
    )


def test_a_broken_tempmail_config_is_exit_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path / "c.toml", config_data(recipient=None))
    status = cli.main(["-c", str(config_path), "check"])
    assert status == 78
    assert "identities.default.recipient: missing" in capsys.readouterr().err


def findings(
    postfix_dir: PostfixDir, capsys: pytest.CaptureFixture[str], running: RunningServer
) -> tuple[int, list[str]]:
    """The exit status and the FAIL lines."""
    status, lines, err = run_check(capsys, running.config_path, postfix_dir)
    assert err == ""
    assert today_code() not in "\n".join(lines)
    return status, [line for line in lines if line.startswith("FAIL")]


def test_unguarded_map(
    postfix_dir: PostfixDir, serve: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    running = serve()
    configure(postfix_dir, capsys, running)
    postfix_dir.set("virtual_alias_maps = socketmap:unix:tempmail/socket:tempmail")
    assert findings(postfix_dir, capsys, running) == (
        1,
        [
            (
                "FAIL  virtual_alias_maps asks this server (unix:tempmail/socket, map 'tempmail') "
                "about every recipient (no guard): while tempmail is down, all mail is deferred; "
                "fix: use the virtual_alias_maps line of 'tempmail postfix-config'"
            ),
        ],
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param(
            "",
            "virtual_alias_maps does not reach this server's socket unix:tempmail/socket "
            "(socketmap tables there: none)",
            id="empty",
        ),
        pytest.param(
            "hash:/etc/postfix/virtual, socketmap:inet:127.0.0.1:10000:tempmail",
            "virtual_alias_maps does not reach this server's socket unix:tempmail/socket "
            "(socketmap tables there: inet:127.0.0.1:10000)",
            id="other-socket",
        ),
        pytest.param(
            GUARD.replace(":tempmail}", ":virtual}"),
            "virtual_alias_maps asks unix:tempmail/socket for map 'virtual', but this server "
            "answers 'tempmail'",
            id="map-name",
        ),
    ],
)
def test_map_does_not_reach_this_server(
    postfix_dir: PostfixDir,
    serve: Callable[..., RunningServer],
    capsys: pytest.CaptureFixture[str],
    value: str,
    problem: str,
) -> None:
    running = serve()
    configure(postfix_dir, capsys, running)
    postfix_dir.set(f"virtual_alias_maps = {value}")
    status, failed = findings(postfix_dir, capsys, running)
    assert status == 1
    assert failed[0] == (
        f"FAIL  {problem}; fix: use the virtual_alias_maps line of 'tempmail postfix-config'"
    )


@pytest.mark.parametrize(
    ("guard", "problem"),
    [
        pytest.param(
            "regexp:{{/^(.+@example\\.com)$$/ $${1}}}",
            "the guard in virtual_alias_maps does not pass addresses of example.org: Postfix "
            "never asks tempmail about them",
            id="other-domain",
        ),
        pytest.param(
            "regexp:{{/^(.+@example\\.org)/ $${1}}}",
            "the guard in virtual_alias_maps passes tempmail-check@example.org.invalid, "
            "outside the temporary domains: a tempmail outage defers their mail too",
            id="unanchored",
        ),
        pytest.param(
            "regexp:{{/^(.+)$$/ $${1}}}",
            "the guard in virtual_alias_maps passes tempmail-check@example.invalid, "
            "tempmail-check@sub.example.org, tempmail-check@example.org.invalid, "
            "tempmail-check@localhost, outside the temporary domains: a tempmail outage defers "
            "their mail too",
            id="everything",
        ),
    ],
)
def test_guard_that_does_not_confine_the_lookups(
    postfix_dir: PostfixDir,
    serve: Callable[..., RunningServer],
    capsys: pytest.CaptureFixture[str],
    guard: str,
    problem: str,
) -> None:
    running = serve()
    configure(postfix_dir, capsys, running)
    postfix_dir.set(
        "mydestination = localhost",
        f"virtual_alias_maps = pipemap:{{{guard}, socketmap:unix:tempmail/socket:tempmail}}",
    )
    status, failed = findings(postfix_dir, capsys, running)
    assert status == 1
    assert failed[0] == (
        f"FAIL  {problem}; fix: use the virtual_alias_maps line of 'tempmail postfix-config'"
    )


def test_domains_missing_or_local(
    postfix_dir: PostfixDir, serve: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """virtual_alias_domains at its default ($virtual_alias_maps) does not list the domain."""
    running = serve(config_data(domain=None, domains=["example.org", "b.example"]))
    configure(postfix_dir, capsys, running)
    postfix_dir.postconf("-X", "virtual_alias_domains")
    postfix_dir.date_back()
    postfix_dir.set("mydestination = localhost, B.Example")
    assert findings(postfix_dir, capsys, running)[1][:2] == [
        (
            "FAIL  virtual_alias_domains does not list example.org, b.example: Postfix does not "
            "accept mail for it as a virtual alias domain; fix: use the virtual_alias_domains line "
            "of 'tempmail postfix-config'"
        ),
        (
            "FAIL  mydestination also lists b.example: Postfix treats it as a local domain, not as "
            "a virtual alias domain; fix: remove it from mydestination"
        ),
    ]


def test_domains_from_a_file_and_a_table(
    postfix_dir: PostfixDir, serve: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """Domain lists may name files and lookup tables; check reads them as Postfix does."""
    running = serve(config_data(domain=None, domains=["example.org", "b.example"]))
    configure(postfix_dir, capsys, running)
    names = postfix_dir.config / "vdomains"
    names.write_text("# temporary domains\nexample.org\n")
    postfix_dir.set(f"virtual_alias_domains = {names}, inline:{{b.example=x}}")
    status, lines, _ = run_check(capsys, running.config_path, postfix_dir)
    assert status == 0
    assert "ok    virtual_alias_domains lists example.org, b.example" in lines


def test_delimiter_differs(
    postfix_dir: PostfixDir, serve: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    running = serve()
    configure(postfix_dir, capsys, running)
    postfix_dir.set("recipient_delimiter = +-")
    assert findings(postfix_dir, capsys, running) == (
        1,
        [
            (
                "FAIL  recipient_delimiter is '+-' in Postfix but '+' in tempmail: an address "
                "extension one of them knows is part of the code for the other; fix: set both to the "
                "same characters (the recipient_delimiter line of 'tempmail postfix-config', or "
                "[server] recipient_delimiter)"
            ),
        ],
    )


def test_socket_postfix_may_not_connect_to(
    postfix_dir: PostfixDir, serve: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """Without [socket] group, the socket is root's 0660: postfix gets Permission denied."""
    running = serve(group=None)
    configure(postfix_dir, capsys, running)
    assert findings(postfix_dir, capsys, running) == (
        1,
        [
            (
                f"FAIL  postfix cannot connect to unix:tempmail/socket {chrooted(postfix_dir)}: "
                "Permission denied; fix: let postfix in: [socket] group = a group of it (mode 0660), "
                "and a socket directory it may search"
            ),
            (
                "FAIL  today's address of identity 'default' cannot be looked up through "
                "virtual_alias_maps (postmap -q as postfix): warning: connect to tempmail/socket: "
                "Permission denied; fix: postfix must reach the server (see the checks above)"
            ),
        ],
    )


def test_absolute_socket_path_is_unreachable_in_the_chroot(
    postfix_dir: PostfixDir, serve: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """Chrooted smtpd and cleanup resolve an absolute path inside the queue directory."""
    running = serve()
    configure(postfix_dir, capsys, running)
    socket = postfix_dir.queue / "tempmail" / "socket"
    postfix_dir.set(f"virtual_alias_maps = {GUARD.replace('tempmail/socket', str(socket))}")
    assert findings(postfix_dir, capsys, running) == (
        1,
        [
            (
                f"FAIL  postfix cannot connect to unix:{socket} {chrooted(postfix_dir)}: No such "
                f"file or directory; fix: chrooted daemons resolve {socket} inside "
                f"{postfix_dir.queue}: put the socket inside {postfix_dir.queue} and name it relative "
                "to it (as 'tempmail postfix-config' does)"
            ),
        ],
    )
    # With chroot off (as in the example Postfix image), the same path works.
    postfix_dir.postconf("-F", "*/*/chroot = n")
    status, lines, _ = run_check(capsys, running.config_path, postfix_dir)
    assert status == 0
    assert (
        f"ok    postfix connects to unix:{socket} not chrooted as smtp/inet, cleanup/unix, and "
        "tempmail answers"
    ) in lines


def test_no_server(
    postfix_dir: PostfixDir,
    tmp_path: Path,
    serve: Callable[..., RunningServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing listens: the connection and the lookup fail, with the fix."""
    running = serve()
    configure(postfix_dir, capsys, running)
    data = config_data()
    data["socket"] = {"path": str(postfix_dir.queue / "tempmail" / "other")}
    postfix_dir.set(f"virtual_alias_maps = {GUARD.replace('/socket:', '/other:')}")
    config_path = write_config(tmp_path / "c.toml", data)
    status, lines, _ = run_check(capsys, config_path, postfix_dir)
    assert status == 1
    assert [line for line in lines if line.startswith("FAIL")] == [
        (
            f"FAIL  postfix cannot connect to unix:tempmail/other {chrooted(postfix_dir)}: No such "
            "file or directory; fix: start tempmail serve (is [socket] path the socket Postfix "
            "names?)"
        ),
        (
            "FAIL  today's address of identity 'default' cannot be looked up through "
            "virtual_alias_maps (postmap -q as postfix): warning: connect to tempmail/other: No such "
            "file or directory; fix: postfix must reach the server (see the checks above)"
        ),
    ]


def test_server_with_another_secret(
    postfix_dir: PostfixDir,
    tmp_path: Path,
    serve: Callable[..., RunningServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The server answers, but not with this config's secret: today's address is not found."""
    running = serve()
    configure(postfix_dir, capsys, running)
    data = config_data(secret="a different secret, long enough")
    data["socket"] = {"path": str(postfix_dir.queue / "tempmail" / "socket")}
    status, lines, _ = run_check(capsys, write_config(tmp_path / "c.toml", data), postfix_dir)
    failed = [line for line in lines if line.startswith("FAIL")]
    assert (status, failed) == (
        1,
        [
            (
                "FAIL  today's address of identity 'default' is not found through "
                "virtual_alias_maps (postmap -q as postfix); fix: does the server run with this "
                "configuration and its secrets?"
            ),
        ],
    )


def test_inet_socket(
    postfix_dir: PostfixDir,
    tmp_path: Path,
    start_server: StartServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """TCP: one connection test (a chroot does not matter), and the lookup."""
    data = config_data()
    data["socket"] = {"type": "inet", "port": 0}
    target = start_server(data).target
    # Postfix needs the port: the config of record names the one the kernel picked.
    data["socket"]["port"] = int(target.rpartition(":")[2])
    config_path = write_config(tmp_path / "c.toml", data)
    assert cli.main(["-c", str(config_path), "postfix-config"]) == 0
    postfix_dir.set(*capsys.readouterr().out.splitlines())
    status, lines, _ = run_check(capsys, config_path, postfix_dir)
    assert status == 0
    assert lines[5] == (
        f"ok    postfix connects to {target} not chrooted as smtp/inet, cleanup/unix, and "
        "tempmail answers"
    )


def test_not_root(postfix_dir: PostfixDir, short_dir: Path) -> None:
    """As mail_owner itself: what needs root is reported, not silently passed."""
    data = config_data()
    data["socket"] = {"path": str(postfix_dir.queue / "tempmail" / "socket")}
    loaded = config.parse(data, environ={})
    tools = doctor.Postfix.locate(str(postfix_dir.config), environ={})
    owner = pwd.getpwnam(MAIL_OWNER)
    reader, writer = os.pipe()
    # No server thread in this test: the forked child may run ordinary Python code.
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(owner.pw_gid)
            os.setgroups([])
            os.setuid(owner.pw_uid)
            report = doctor.check(loaded, tools)
            os.write(writer, json.dumps([f.text for f in report.findings]).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        texts = json.loads(pipe.read() or b"[]")
    os.waitpid(pid, 0)
    assert (
        f"cannot connect to unix:tempmail/socket as postfix {chrooted(postfix_dir)}; fix: run "
        "tempmail check as root"
    ) in texts


def test_unescaped_dollars_in_main_cf(
    postfix_dir: PostfixDir, serve: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """A guard written with single $ (as postmap -q takes it) breaks main.cf: exit 69."""
    running = serve()
    configure(postfix_dir, capsys, running)
    guard = "regexp:{{/^(.+@example\\.org)$/ ${1}}}"
    postfix_dir.set(
        f"virtual_alias_maps = pipemap:{{{guard}, socketmap:unix:tempmail/socket:tempmail}}"
    )
    status = cli.main(
        ["-c", str(running.config_path), "check", "--postfix-dir", str(postfix_dir.config)]
    )
    assert (status, capsys.readouterr()) == (
        69,
        (
            "",
            (
                "tempmail: postconf cannot read Postfix's configuration: warning: empty macro name: "
                f'"pipemap:{{{guard}, socketmap:unix:tempmail/socket:tempmail}}"; fatal: macro '
                "processing error; fix: a '$' that starts no parameter name must be written '$$' "
                "in main.cf\n"
            ),
        ),
    )


def test_what_debian_master_cf_chroots(postfix_dir: PostfixDir) -> None:
    """The list in the README and docs/containers.md, read from Debian's master.cf."""
    fields = postfix_dir.postconf("-F", "*/*/chroot").stdout.splitlines()
    chrooted = [line.split("/")[0] for line in fields if line.endswith(" = y")]
    assert chrooted == [
        *("smtp", "pickup", "cleanup", "tlsmgr", "rewrite", "bounce", "defer", "trace"),
        *("verify", "flush", "smtp", "relay", "showq", "error", "retry", "discard", "lmtp"),
        *("anvil", "scache"),
    ]
    services = postfix_dir.postconf("-F", "*/*/command").stdout.splitlines()
    outside = {
        line.split(" = ")[1].split()[0]
        for line, chroot in zip(services, fields, strict=True)
        if chroot.endswith(" = n")
    }
    assert outside == {"qmgr", "proxymap", "local", "virtual", "postlogd", "pipe"}


def test_without_smtpd_and_cleanup_the_socket_is_still_tried(
    postfix_dir: PostfixDir, start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """No smtpd or cleanup in master.cf: connect as any (unchrooted) daemon would."""
    (postfix_dir.config / "master.cf").write_text("qmgr unix n - n 300 1 qmgr\n")
    data = config_data()
    data["socket"] = {"path": str(postfix_dir.queue / "tempmail" / "socket"), "group": MAIL_OWNER}
    running = start_server(data)
    configure(postfix_dir, capsys, running)
    status, lines, _ = run_check(capsys, running.config_path, postfix_dir)
    assert status == 0
    assert (
        "ok    postfix connects to unix:tempmail/socket not chrooted as any daemon, and "
        "tempmail answers"
    ) in lines


def test_a_socket_postfix_cannot_name_is_one_config_error(
    postfix_dir: PostfixDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Port 0 (the kernel picks one) cannot go into main.cf: the same error as postfix-config."""
    data = config_data()
    data["socket"] = {"type": "inet", "port": 0}
    config_path = write_config(tmp_path / "c.toml", data)
    argv = ["-c", str(config_path), "check", "--postfix-dir", str(postfix_dir.config)]
    assert cli.main(argv) == cli.EX_CONFIG
    err = capsys.readouterr().err
    assert err.startswith(f"tempmail: {config_path}: ")
    assert "Traceback" not in err
    assert cli.main(["-c", str(config_path), "postfix-config"]) == cli.EX_CONFIG
    assert capsys.readouterr().err == err  # one cause, told the same way
