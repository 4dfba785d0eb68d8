"""Migration from the original bash + socat postfix-tempmail config."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tempmail import cli, config, generate, migrate
from tempmail.errors import ConfigError

# A config in the original's format (its variable names), with tricky but legal bash.
OLD_CONFIG = r"""
# E-Mail adresses
SALT='pepper'
SHARED_SECRET="my \"quoted\" secret with \$dollar, ${SALT} and $UNSET_VAR ü"
DOMAIN="example.com"
MAILDROP="permanent-address@example.com"
LENGTH=10

# Socket type, either "unix" or "inet"
SOCKETMAP_SOCKET_TYPE="unix"
SOCKETMAP_UNIX_SOCKET_PATH="/var/spool/postfix/postfix-tempmail/socket"
SOCKETMAP_UNIX_SOCKET_OWNER_UID="postfix"
SOCKETMAP_UNIX_SOCKET_OWNER_GID=0
SOCKETMAP_UNIX_SOCKET_MODE="660"
SOCKETMAP_INET_INTERFACE="127.0.0.1"
SOCKETMAP_INET_PORT="10000"
SOCKETMAP_NAME="tempmail"
SOCKETMAP_MAX_NETSTRING_LENGTH=512
#PARSER_RUN_UID="nobody"
"""

EXPECTED_SECRET = 'my "quoted" secret with $dollar, pepper and  ü'


def parse(text: str) -> dict[str, str]:
    variables, _ = migrate.parse_shell_assignments(text)
    return variables


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=plain", {"A": "plain"}),
        ("A='single $x \\n'", {"A": "single $x \\n"}),
        ('A="double \\"q\\" \\$x \\\\ \\n"', {"A": 'double "q" $x \\ \\n'}),
        ("A=un\\ quoted\\$x", {"A": "un quoted$x"}),
        ("A=one B=two; C=three", {"A": "one", "B": "two", "C": "three"}),
        ("export A=1\nreadonly B=2", {"A": "1", "B": "2"}),
        ("A=1 # comment\n# B=2", {"A": "1"}),
        ("A=", {"A": ""}),
        ('A=x\nB="$A-${A}"', {"A": "x", "B": "x-x"}),
        ("A='con'\"cat\"enated", {"A": "concatenated"}),
        ('A="multi\nline"', {"A": "multi\nline"}),
        ("A=one\\\ntwo", {"A": "onetwo"}),
        ("A=$'tab\\there'", {"A": "tab\there"}),
        ("A=cost$", {"A": "cost$"}),
    ],
)
def test_bash_assignment_semantics(text: str, expected: dict[str, str]) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "A=$(cat /etc/shadow)",
            "line 1: command substitution $(...) cannot be converted without running it",
        ),
        ("A=`id`", "line 1: command substitution (`...`) cannot be converted without running it"),
        (
            'A="x `id`"',
            "line 1: command substitution (`...`) cannot be converted without running it",
        ),
        (
            "\n\nrm -rf /",
            "line 3: 'rm' is not a variable assignment; the file is read as data and never run",
        ),
        ("A=$1", "line 1: $1 is a shell parameter that only exists when the script runs"),
        ("A='open", "line 1: unterminated single quote"),
        ('A="open', "line 1: unterminated double quote"),
        ("A=x|y", "line 1: '|' makes this line a command; only assignments are converted"),
        ("A=${B:-x}", "line 1: ${B:-x} uses a shell feature that is not converted"),
    ],
)
def test_anything_that_would_run_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        migrate.parse_shell_assignments(text, "old.cf")
    assert str(caught.value) == f"old.cf: {message}"


def test_unset_variables_expand_to_nothing_with_a_note() -> None:
    variables, notes = migrate.parse_shell_assignments('A="x${NOPE}y"', "old.cf")
    assert variables == {"A": "xy"}
    assert notes == [
        (
            "old.cf: line 1: $NOPE is not set in the file; bash expanded it from the service's "
            "environment (usually to nothing); it was taken as empty"
        )
    ]


def test_conversion() -> None:
    variables = parse(OLD_CONFIG)
    assert variables["SHARED_SECRET"] == EXPECTED_SECRET
    migration = migrate.convert(variables, timezone="Europe/Berlin")
    assert migration.data == {
        "server": {"map_name": "tempmail", "max_query_length": 512},
        "socket": {
            "type": "unix",
            "path": "/var/spool/postfix/postfix-tempmail/socket",
            "owner": "postfix",
            "group": 0,
            "mode": "0660",
            "host": "127.0.0.1",
            "port": 10000,
        },
        "identities": {
            "default": {
                "domain": "example.com",
                "recipient": "permanent-address@example.com",
                "length": 10,
                "secret": EXPECTED_SECRET,
                "scheme": "md5",
                "accept": ["md5"],
                "window": 2,
                "timezone": "Europe/Berlin",
            }
        },
    }
    assert "SALT is not a postfix-tempmail setting and was not converted" in migration.notes


def test_echo_option_secrets_are_flagged() -> None:
    """The original ran `echo -n "$SHARED_SECRET"`: a secret '-n' or '-e' printed nothing."""
    notes = migrate.convert({"SHARED_SECRET": "-n", "DOMAIN": "a.org"}, timezone="UTC").notes
    assert any("swallowed by bash's 'echo -n'" in note for note in notes)


def test_timezone_detection(tmp_path: Path) -> None:
    assert migrate.detect_timezone({"TZ": ":Europe/Paris"}, tmp_path) == "Europe/Paris"
    assert migrate.detect_timezone({}, tmp_path) is None
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/localtime").symlink_to("/usr/share/zoneinfo/America/New_York")
    assert migrate.detect_timezone({}, tmp_path) == "America/New_York"
    (tmp_path / "etc/timezone").write_text("Asia/Tokyo\n")
    assert migrate.detect_timezone({}, tmp_path) == "Asia/Tokyo"


def original_addresses(old_config: Path, tz: str) -> list[str]:
    """The original's algorithm, as a test oracle: bash sources the file and hashes with md5sum.

    This mirrors postfix-tempmail's listMails (GNU date in local time, `echo -n`, md5sum, cut),
    newest first to match `tempmail address`.
    """
    script = r"""
        source "$1"
        for day in now yesterday; do
            echo "$( (date +%Y%m%d -d "$day" | tr -d '\n'; echo -n "${SHARED_SECRET}") \
                | md5sum | cut -c1-${LENGTH})@${DOMAIN}"
        done
    """
    result = subprocess.run(
        ["bash", "-c", script, "oracle", str(old_config)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": tz, "LC_ALL": "C.UTF-8"},
    )
    return result.stdout.split()


@pytest.mark.parametrize("tz", ["Europe/Berlin", "Pacific/Kiritimati", "America/Los_Angeles"])
def test_migrated_config_gives_the_original_addresses(
    tmp_path: Path, tz: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tempmail migrate` of an original config gives the addresses the original computes."""
    old = tmp_path / "tempmail.cf"
    old.write_text(OLD_CONFIG)
    new = tmp_path / "config.toml"
    monkeypatch.setenv("TZ", tz)  # the original used the host's local time; migrate detects it
    assert cli.main(["migrate", str(old), "-o", str(new)]) == 0
    err = capsys.readouterr().err
    assert f"note: timezone = '{tz}': the original used the host's local time" in err
    assert new.stat().st_mode & 0o777 == 0o600
    identity = config.load(new, environ={}).identities[0]
    for _ in range(2):  # again if midnight passed between the two computations
        ours = [str(a) for a in generate.current_addresses(identity, time.time())]
        if ours == original_addresses(old, tz):
            break
    assert ours == original_addresses(old, tz)


def test_migrate_to_stdout_and_with_a_secret_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "tempmail.cf"
    old.write_text(OLD_CONFIG)
    assert (
        cli.main(
            ["migrate", str(old), "--timezone", "UTC", "--secret-file", str(tmp_path / "secret")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "secret =" not in out
    assert f'secret_file = "{tmp_path / "secret"}"' in out
    assert (tmp_path / "secret").read_text() == EXPECTED_SECRET + "\n"
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
    new = tmp_path / "new.toml"
    new.write_text(out)
    assert (
        config.load(new, environ={}).identities[0].secrets[0].reveal() == EXPECTED_SECRET.encode()
    )


def test_migrate_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "tempmail.cf"
    old.write_text(OLD_CONFIG)
    existing = tmp_path / "config.toml"
    existing.write_text("keep")
    assert (
        cli.main(["migrate", str(old), "-o", str(existing), "--timezone", "UTC"])
        == cli.EX_CANTCREAT
    )
    assert existing.read_text() == "keep"
    assert f"{existing} exists; refusing to overwrite it" in capsys.readouterr().err


def test_migrate_reports_what_the_new_config_rejects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "tempmail.cf"
    old.write_text(OLD_CONFIG.replace('DOMAIN="example.com"', 'DOMAIN="not a domain"'))
    assert cli.main(["migrate", str(old), "--timezone", "UTC"]) == cli.EX_CONFIG
    assert (
        "identities.default.domain: 'not a domain' is not a domain name" in capsys.readouterr().err
    )


def test_migrate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate", str(tmp_path / "nope.cf")]) == cli.EX_NOINPUT
    assert "nope.cf: cannot read: No such file or directory" in capsys.readouterr().err


def test_an_unquoted_value_with_a_space_is_reported_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        migrate.parse_shell_assignments("DOMAIN=a.org\nSHARED_SECRET=Zebra Quokka", "old.cf")
    assert str(caught.value) == (
        "old.cf: line 2: the value of SHARED_SECRET contains an unquoted space; "
        "put the value in quotes"
    )
