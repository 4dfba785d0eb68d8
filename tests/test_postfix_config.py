"""`tempmail postfix-config`: its lines applied with postconf -e, and read back by Postfix.

Every Postfix program here is Debian's, with a main.cf of the test's own (postfix_dir.py).
The lookups use the value as the daemons see it (`postconf -x`: main.cf's $ expansion done)
and run in the queue directory, the daemons' working directory. A key that the guard stops
is NOTFOUND without a word on stderr even when no server runs; a key it passes reaches the
socket, which with no server is a lookup error (mail deferred).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import write_config
from helpers import RECIPIENT, SECRET, StartServer, config_data
from postfix_dir import PostfixDir, make_postfix_dir
from tempmail import cli, schemes

pytestmark = pytest.mark.postfix

#: The documented way to apply the settings (README, "Postfix configuration").
APPLY = "tempmail postfix-config | xargs -r -d '\\n' postconf -e"
MERGE = APPLY.replace("postfix-config", "postfix-config --merge")
README = Path(__file__).resolve().parents[1] / "README.md"


def code(days_ago: int = 0, secret: str = SECRET, scheme: schemes.Scheme = schemes.HMAC) -> str:
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days_ago)
    return schemes.code(scheme, day, secret.encode(), 8)


@pytest.fixture
def postfix_dir(short_dir: Path) -> PostfixDir:
    return make_postfix_dir(short_dir / "pf")


def server_config(postfix_dir: PostfixDir, **identity: Any) -> dict[str, Any]:
    """A config whose socket is in the test's queue directory, as on a Debian host."""
    data = config_data(**identity)
    data["socket"] = {"path": str(postfix_dir.queue / "tempmail" / "socket")}
    return data


def apply(postfix_dir: PostfixDir, config_path: Path, *, ok: bool = True) -> str:
    """Run the README's command, naming the test's queue directory; its stderr."""
    command = APPLY.replace(
        "postfix-config", f"postfix-config --queue-directory {postfix_dir.queue}"
    )
    return run_shell(command, postfix_dir, config_path, ok=ok)


def run_shell(command: str, postfix_dir: PostfixDir, config_path: Path, *, ok: bool = True) -> str:
    """``sh -c COMMAND`` with MAIL_CONFIG and TEMPMAIL_CONFIG naming the files; its stderr."""
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "tempmail").exists(), "the tempmail command is not installed in the venv"
    done = subprocess.run(
        ["sh", "-c", command],
        env={
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}:/usr/sbin:/sbin",
            "MAIL_CONFIG": str(postfix_dir.config),
            "TEMPMAIL_CONFIG": str(config_path),
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    # The pipeline's status is xargs's: 0 also when tempmail failed and nothing ran.
    assert done.returncode == 0, done.stderr
    assert ("tempmail:" not in done.stderr) is ok, done.stderr
    postfix_dir.date_back()
    return done.stderr


def printed(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def lookup(postfix_dir: PostfixDir, keys: list[str]) -> tuple[dict[str, str], str]:
    """Look keys up in virtual_alias_maps as the daemons see it; (found, stderr)."""
    table = postfix_dir.value("virtual_alias_maps", expanded=True)
    done = postfix_dir.postmap("-q", "-", table, input_text="".join(k + "\n" for k in keys))
    found = dict(line.split("\t", 1) for line in done.stdout.splitlines())
    return found, done.stderr


def test_postconf_stores_the_lines_and_the_daemons_read_the_guard(
    postfix_dir: PostfixDir, short_dir: Path
) -> None:
    """main.cf holds $$; the daemons' expansion gives the regexp its single $."""
    config_path = write_config(short_dir / "config.toml", server_config(postfix_dir))
    assert apply(postfix_dir, config_path) == ""
    main_cf = (postfix_dir.config / "main.cf").read_text()
    # postconf -e appends new parameters in an order of its own.
    assert sorted(main_cf.splitlines()[1:]) == [
        "recipient_delimiter = +",
        "virtual_alias_domains = example.org",
        (
            "virtual_alias_maps = pipemap:{regexp:{{/^([^@]+@example\\.org)$$/ $${1}}}, "
            "socketmap:unix:tempmail/socket:tempmail}"
        ),
    ]
    expanded = postfix_dir.postconf("-x", "virtual_alias_maps")
    assert expanded.stdout == (
        "virtual_alias_maps = pipemap:{regexp:{{/^([^@]+@example\\.org)$/ ${1}}}, "
        "socketmap:unix:tempmail/socket:tempmail}\n"
    )
    assert expanded.stderr == ""


KEYS = [
    pytest.param(lambda: f"{code()}@example.org", RECIPIENT, id="today"),
    pytest.param(lambda: f"{code(1)}@example.org", RECIPIENT, id="yesterday"),
    pytest.param(lambda: f"{code(0, scheme=schemes.MD5)}@example.org", RECIPIENT, id="md5"),
    pytest.param(lambda: f"{code().upper()}@EXAMPLE.ORG", RECIPIENT, id="upper-case"),
    pytest.param(lambda: f"{code()}+shop@example.org", RECIPIENT, id="extension"),
    pytest.param(lambda: f"{code(2)}@example.org", None, id="expired"),
    pytest.param(lambda: "user@localhost", None, id="local-user"),
    pytest.param(lambda: f"{code()}@example.net", None, id="foreign-domain"),
]


@pytest.mark.parametrize(("make_key", "expected"), KEYS)
def test_lookups_through_the_applied_settings(
    postfix_dir: PostfixDir,
    start_server: StartServer,
    make_key: Callable[[], str],
    expected: str | None,
) -> None:
    """With the server up, the guarded table answers as tempmail does."""
    running = start_server(server_config(postfix_dir))
    apply(postfix_dir, running.config_path)
    key = make_key()
    found, stderr = lookup(postfix_dir, [key])
    assert (found.get(key), stderr) == (expected, "")


STOPPED = [  # key, whether the guard passes it on to tempmail
    pytest.param("user@localhost", False, id="local-user"),
    pytest.param("postmaster@example.net", False, id="other-domain"),
    pytest.param("x@tmxexample.org", False, id="dot-is-escaped"),
    pytest.param("x@sub.tm.example.org", False, id="subdomain"),
    pytest.param("x@tm.example.org.evil", False, id="suffix"),
    pytest.param("x@a-b.example", True, id="hyphen"),
    pytest.param("@tm.example.org", False, id="catch-all-probe"),
    pytest.param("tm.example.org", False, id="bare-domain"),
    pytest.param("a@b@tm.example.org", False, id="two-at-signs"),
    pytest.param("x@tm.example.org", True, id="temporary"),
    pytest.param("X+Shop@TM.Example.ORG", True, id="case-and-extension"),
    pytest.param("x@bob.example", True, id="second-identity"),
]


@pytest.mark.parametrize(("key", "passed"), STOPPED)
def test_a_stopped_server_defers_only_the_temporary_domains(
    postfix_dir: PostfixDir, short_dir: Path, key: str, passed: bool
) -> None:
    """No server: keys of the temporary domains are a lookup error, all others NOTFOUND."""
    data = server_config(postfix_dir, domain=None, domains=["tm.example.org", "a-b.example"])
    data["identities"]["bob"] = {**data["identities"]["default"], "domains": ["bob.example"]}
    apply(postfix_dir, write_config(short_dir / "config.toml", data))
    found, stderr = lookup(postfix_dir, [key])
    assert found == {}
    if passed:
        assert "tempmail/socket:tempmail lookup error: No such file or directory" in stderr
    else:
        assert stderr == ""


def test_without_the_guard_a_stopped_server_defers_every_recipient(
    postfix_dir: PostfixDir,
) -> None:
    """The control: a bare socketmap table is asked about user@localhost too."""
    postfix_dir.set("virtual_alias_maps = socketmap:unix:tempmail/socket:tempmail")
    found, stderr = lookup(postfix_dir, ["user@localhost"])
    assert found == {}
    assert "tempmail/socket:tempmail lookup error: No such file or directory" in stderr


def test_several_identities_and_domains(
    postfix_dir: PostfixDir, start_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every identity's domains, each once, in configuration order; each maps to its owner."""
    data = server_config(postfix_dir, domain=None, domains=["alice.example", "a-trash.example"])
    data["identities"]["bob"] = {
        **data["identities"]["default"],
        "domains": ["bob.example", "alice.example"],
        "recipient": "bob@mail.example",
        "secret": "bob's own secret, long enough",
    }
    running = start_server(data)
    status, out, err = printed(
        capsys,
        *("-c", str(running.config_path), "postfix-config"),
        *("--queue-directory", str(postfix_dir.queue)),
    )
    assert (status, err) == (0, "")
    assert out.splitlines()[:2] == [
        "virtual_alias_domains = alice.example a-trash.example bob.example",
        (
            "virtual_alias_maps = pipemap:{regexp:{{/^([^@]+@(alice\\.example|a-trash\\.example"
            "|bob\\.example))$$/ $${1}}}, socketmap:unix:tempmail/socket:tempmail}"
        ),
    ]
    apply(postfix_dir, running.config_path)
    keys = {
        f"{code()}@a-trash.example": RECIPIENT,
        f"{code(secret='bob' + chr(39) + 's own secret, long enough')}@bob.example": (
            "bob@mail.example"
        ),
    }
    found, stderr = lookup(postfix_dir, list(keys))
    assert (found, stderr) == (keys, "")


SOCKETS = [
    pytest.param(
        {"path": "/var/spool/postfix/tempmail/socket"}, [], "unix:tempmail/socket", id="default"
    ),
    pytest.param(
        {"path": "/run/tempmail/socket"},
        ["--postfix-socket", "/var/spool/postfix/tempmail/socket"],
        "unix:tempmail/socket",
        id="sidecar",
    ),
    pytest.param(
        {"path": "/srv/spool/./tm/../tm/socket"},
        ["--queue-directory", "/srv/spool"],
        "unix:tm/socket",
        id="queue-directory",
    ),
    pytest.param(
        {"type": "inet", "host": "127.0.0.1", "port": 10025},
        [],
        "inet:127.0.0.1:10025",
        id="inet",
    ),
    pytest.param(
        {"type": "inet", "host": "::1", "port": 10025}, [], "inet:[::1]:10025", id="inet6"
    ),
]


@pytest.mark.parametrize(("socket", "args", "target"), SOCKETS)
def test_the_socket_as_postfix_names_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    socket: dict[str, Any],
    args: list[str],
    target: str,
) -> None:
    """Relative to the queue directory when inside it; TCP as it is."""
    path = write_config(tmp_path / "c.toml", {**config_data(), "socket": socket})
    status, out, err = printed(capsys, "-c", str(path), "postfix-config", *args)
    assert (status, err) == (0, "")
    assert f", socketmap:{target}:tempmail}}\n" in out


def test_a_socket_outside_the_queue_directory_gets_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Absolute, with a note on stderr: chrooted daemons cannot reach it."""
    data = {**config_data(), "socket": {"path": "/run/tempmail/socket"}}
    path = write_config(tmp_path / "c.toml", data)
    status, out, err = printed(capsys, "-c", str(path), "postfix-config")
    assert status == 0
    assert ", socketmap:unix:/run/tempmail/socket:tempmail}\n" in out
    assert err == (
        "tempmail: note: the socket /run/tempmail/socket is outside the queue directory "
        "/var/spool/postfix: chrooted Postfix daemons (Debian chroots smtpd and cleanup) "
        "cannot reach it; put the socket inside /var/spool/postfix, or turn chroot off for "
        "smtpd and cleanup in master.cf\n"
    )


def test_map_name_and_delimiter_come_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {**config_data(), "server": {"map_name": "tm", "recipient_delimiter": "+-"}}
    path = write_config(tmp_path / "c.toml", data)
    status, out, _ = printed(capsys, "-c", str(path), "postfix-config")
    assert status == 0
    assert out.endswith(":tm}\nrecipient_delimiter = +-\n")


def test_no_delimiter_line_when_tempmail_strips_no_extension(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {**config_data(), "server": {"recipient_delimiter": ""}}
    path = write_config(tmp_path / "c.toml", data)
    status, out, _ = printed(capsys, "-c", str(path), "postfix-config")
    assert status == 0
    assert [line.split(" = ")[0] for line in out.splitlines()] == [
        "virtual_alias_domains",
        "virtual_alias_maps",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["--postfix-socket", "tempmail/socket"],
            "argument --postfix-socket: expected an absolute path, got 'tempmail/socket'",
            id="relative",
        ),
        pytest.param(
            ["--queue-directory", "/var/spool/my postfix"],
            "argument --queue-directory: '/var/spool/my postfix' contains a space, ',', '$', "
            "'{' or '}', which main.cf would read as syntax",
            id="space",
        ),
    ],
)
def test_paths_main_cf_cannot_name_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    path = write_config(tmp_path / "c.toml", config_data())
    with pytest.raises(SystemExit) as caught:
        cli.main(["-c", str(path), "postfix-config", *argv])
    assert caught.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"tempmail postfix-config: error: {message}"


def test_a_port_the_kernel_picks_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        tmp_path / "c.toml", {**config_data(), "socket": {"type": "inet", "port": 0}}
    )
    assert printed(capsys, "-c", str(path), "postfix-config") == (
        78,
        "",
        f"tempmail: {path}: socket.port: 0 lets the kernel pick a port; Postfix needs a fixed one\n",
    )


def test_merge_keeps_what_main_cf_has(postfix_dir: PostfixDir, start_server: StartServer) -> None:
    """--merge: the operator's domains and tables stay (theirs first), an old unguarded
    tempmail lookup is replaced, and a second run changes nothing."""
    aliases = "inline:{{info@other.example=owner@example.net}}"
    postfix_dir.set(
        "virtual_alias_domains = other.example",
        f"virtual_alias_maps = {aliases}, socketmap:unix:tempmail/socket:tempmail",
    )
    running = start_server(server_config(postfix_dir))
    assert run_shell(MERGE, postfix_dir, running.config_path) == ""
    guarded = (
        "pipemap:{regexp:{{/^([^@]+@example\\.org)$$/ $${1}}}, "
        "socketmap:unix:tempmail/socket:tempmail}"
    )
    merged = (postfix_dir.config / "main.cf").read_text()
    assert sorted(merged.splitlines()[1:]) == [
        "recipient_delimiter = +",
        "virtual_alias_domains = other.example example.org",
        f"virtual_alias_maps = {aliases}, {guarded}",
    ]
    assert run_shell(MERGE, postfix_dir, running.config_path) == ""
    assert (postfix_dir.config / "main.cf").read_text() == merged
    today = f"{code()}@example.org"
    expanded = postfix_dir.value("virtual_alias_maps", expanded=True)
    tables = [aliases.replace("{{", "{").replace("}}", "}"), expanded.split(", ", 1)[1]]
    done = postfix_dir.postmap("-q", "-", *tables, input_text=f"info@other.example\n{today}\n")
    assert (done.stdout, done.stderr) == (
        f"info@other.example\towner@example.net\n{today}\t{RECIPIENT}\n",
        "",
    )


def test_merge_notes_a_changed_delimiter(
    postfix_dir: PostfixDir, short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    postfix_dir.set("recipient_delimiter = -")
    path = write_config(short_dir / "c.toml", server_config(postfix_dir))
    status, out, err = printed(
        capsys,
        "-c",
        str(path),
        "postfix-config",
        "--merge",
        "--postfix-dir",
        str(postfix_dir.config),
    )
    assert status == 0
    assert out.endswith("\nrecipient_delimiter = +\n")
    assert err == (
        "tempmail: note: recipient_delimiter changes from '-' to '+': if addresses of this "
        "Postfix use '-', set [server] recipient_delimiter = '-' instead and run this again\n"
    )


def test_postfix_dir_only_with_merge(
    postfix_dir: PostfixDir, short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(short_dir / "c.toml", server_config(postfix_dir))
    argv = ["-c", str(path), "postfix-config", "--postfix-dir", str(postfix_dir.config)]
    assert printed(capsys, *argv) == (
        2,
        "",
        "tempmail: --postfix-dir is read only with --merge: add --merge or drop it\n",
    )


def test_a_broken_config_changes_nothing(postfix_dir: PostfixDir, short_dir: Path) -> None:
    """The command fails and prints nothing on stdout, so xargs -r runs no postconf."""
    before = (postfix_dir.config / "main.cf").read_text()
    broken = write_config(short_dir / "c.toml", server_config(postfix_dir, recipient=None))
    assert "identities.default.recipient: missing" in apply(postfix_dir, broken, ok=False)
    assert (postfix_dir.config / "main.cf").read_text() == before


def test_the_readme_shows_the_commands_these_tests_run() -> None:
    text = README.read_text(encoding="utf-8")
    assert f"\n{APPLY}\n" in text
    assert f"`{MERGE}`" in text


def test_merge_without_a_readable_main_cf_is_exit_69(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(short_dir / "c.toml", config_data())
    empty = short_dir / "empty"
    empty.mkdir()
    argv = ["-c", str(path), "postfix-config", "--merge", "--postfix-dir", str(empty)]
    assert printed(capsys, *argv) == (
        69,
        "",
        (
            f"tempmail: postconf cannot read Postfix's configuration: fatal: open {empty}/main.cf: No "
            "such file or directory; fix: give the directory of main.cf with --postfix-dir or "
            "$MAIL_CONFIG\n"
        ),
    )
