"""Postfix's own client, `postmap -q`, against a running server over unix and TCP sockets.

postmap reads a main.cf: each test gives it a directory of its own (postfix_dir.py), so
nothing depends on the host's /etc/postfix (Debian's package may be installed without one).
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import RECIPIENT, SECRET, StartServer, config_data
from postfix_dir import PostfixDir, make_postfix_dir
from tempmail import schemes

pytestmark = pytest.mark.postfix


def key(days_ago: int, scheme: schemes.Scheme = schemes.HMAC) -> str:
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days_ago)
    return f"{schemes.code(scheme, day, SECRET.encode(), 8)}@example.org"


CASES = [
    pytest.param(lambda: key(0), RECIPIENT, id="today"),
    pytest.param(lambda: key(1), RECIPIENT, id="yesterday"),
    pytest.param(lambda: key(0, schemes.MD5), RECIPIENT, id="today-md5"),
    pytest.param(lambda: key(2), None, id="expired"),
    pytest.param(lambda: key(0).upper(), RECIPIENT, id="upper-case"),
    pytest.param(lambda: key(0).replace("@", "+newsletter@"), RECIPIENT, id="extension"),
    pytest.param(lambda: "example.org", None, id="bare-domain"),
    pytest.param(lambda: "@example.org", None, id="wildcard"),
    pytest.param(lambda: "x7!garbage", None, id="garbage"),
    pytest.param(lambda: RECIPIENT, None, id="recipient-itself"),
]


Postmap = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def postfix_dir(tmp_path: Path) -> PostfixDir:
    """An empty Postfix configuration of the test's own (postmap -c DIR)."""
    return make_postfix_dir(tmp_path / "postfix", master_cf=False)


@pytest.fixture
def postmap(postfix_dir: PostfixDir) -> Postmap:
    """postmap -q QUERY TABLE with the test's own main.cf."""

    def run(table: str, query: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return postfix_dir.postmap("-q", query, table, cwd=cwd)

    return run


@pytest.fixture(params=["unix", "inet"])
def table(request: pytest.FixtureRequest, start_server: StartServer) -> str:
    """A running server and the Postfix table name that reaches it."""
    data = config_data()
    data["socket"] = {"type": request.param}
    running = start_server(data)
    return f"socketmap:{running.target}:tempmail"


@pytest.mark.parametrize(("make_key", "expected"), CASES)
def test_postmap_query(
    table: str, postmap: Postmap, make_key: Callable[[], str], expected: str | None
) -> None:
    result = postmap(table, make_key())
    if expected is None:
        assert (result.returncode, result.stdout) == (1, ""), result.stderr
    else:
        assert (result.returncode, result.stdout) == (0, expected + "\n"), result.stderr
    assert "warning" not in result.stderr


def test_postmap_many_keys_on_one_connection(table: str, postfix_dir: PostfixDir) -> None:
    """`postmap -q -` sends every key over one connection, as Postfix daemons do."""
    keys = [key(0), "a@example.org", key(1), key(3), key(0).upper()]
    result = postfix_dir.postmap("-q", "-", table, input_text="\n".join(keys) + "\n")
    assert result.stdout.splitlines() == [
        f"{keys[0]}\t{RECIPIENT}",
        f"{keys[2]}\t{RECIPIENT}",
        f"{keys[4]}\t{RECIPIENT}",
    ]


def test_relative_socket_path_as_in_main_cf(
    start_server: StartServer, short_dir: Path, postmap: Postmap
) -> None:
    """socketmap:unix:tempmail/socket:NAME is relative to the queue directory, which is the
    working directory of every Postfix daemon, chrooted or not."""
    (short_dir / "tempmail").mkdir()
    data = config_data()
    data["socket"] = {"path": str(short_dir / "tempmail" / "socket")}
    start_server(data)
    result = postmap("socketmap:unix:tempmail/socket:tempmail", key(0), cwd=short_dir)
    assert (result.returncode, result.stdout) == (0, RECIPIENT + "\n"), result.stderr


def test_wrong_map_name_is_a_lookup_error(start_server: StartServer, postmap: Postmap) -> None:
    """PERM makes Postfix report a lookup error (mail is deferred, never bounced)."""
    running = start_server()
    result = postmap(f"socketmap:{running.target}:othername", key(0))
    assert result.returncode != 0
    assert "permanent error: unknown map name 'othername'" in result.stderr


def test_server_down_is_a_lookup_error(short_dir: Path, postmap: Postmap) -> None:
    result = postmap(f"socketmap:unix:{short_dir}/absent.sock:tempmail", key(0))
    assert result.returncode != 0
    assert "No such file or directory" in result.stderr
