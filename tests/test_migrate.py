"""Migration from the original bash + socat postfix-tempmail config."""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import pytest

from helpers import require_tool
from tempmail import cli, config, generate, migrate
from tempmail.cli import setup
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


#: Looks like a secret; no message may contain any of it.
SECRET_LOOKING = "Zebra7731Quokka"
TILDE = (
    "bash replaces an unquoted '~' at the start of a value or after ':' with a home "
    "directory (tilde expansion); quote it ('~') or write the path out"
)
SPECIAL = (
    "a special parameter ($0 to $9, $@, $*, $#, $?, $$, $!, $-) only exists when the script "
    "runs; write the value instead"
)
BRACES = (
    "a ${...} expansion other than ${NAME} (a default, a substring, a length, an "
    "indirection, ...) is not converted; write the value instead"
)
ANSI_C = "$'...' is converted with the escapes \\a \\b \\e \\E \\f \\n \\r \\t \\v \\\\ \\' \\\" \\? only"
SET_BY = (
    "a variable that bash or the environment sets when the script runs (such as $HOME or "
    "$RANDOM) has no known value here; write the value instead"
)


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
            "line 3: not a variable assignment (NAME=value); the file is read as data and never run",
        ),
        ("A=$1", f"line 1: {SPECIAL}"),
        ("A='open", "line 1: unterminated single quote"),
        ('A="open', "line 1: unterminated double quote"),
        ("A=x|y", "line 1: '|' makes this line a command; only assignments are converted"),
        (
            "A=${B:-x}",
            (
                "line 1: a ${...} expansion other than ${NAME} (a default, a substring, a length, "
                "an indirection, ...) is not converted; write the value instead"
            ),
        ),
    ],
)
def test_anything_that_would_run_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        migrate.parse_shell_assignments(text, "old.cf")
    assert str(caught.value) == f"old.cf: {message}"


def test_unset_variables_expand_to_nothing_with_a_note() -> None:
    """The note does not name the variable: "pa$word" may have meant a literal '$'."""
    variables, notes = migrate.parse_shell_assignments('A="x${NOPE}y"', "old.cf")
    assert variables == {"A": "xy"}
    assert notes == [
        (
            "old.cf: line 1: a $variable that the file does not set; bash expanded it from the "
            "service's environment (usually to nothing), so it was taken as empty (write '\\$' "
            "for a literal '$')"
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
    assert (
        "SHARED_SECRET is an option of bash's 'echo' (such as -n or -e), which the original's "
        "'echo -n' swallowed: it used no secret at all (anyone could compute its addresses); "
        "tempmail uses the secret as written, as PHP does, so the addresses change: choose "
        "a strong secret"
    ) in notes


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


# --- every expansion bash applies to an assignment: refused, or exactly bash's result -------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # Tilde expansion: at the start of the value and after each unquoted ':'.
        ("~/{s}", TILDE),
        ("~", TILDE),
        ("~root{s}", TILDE),
        ("~+{s}", TILDE),
        ("{s}:~/x", TILDE),
        ("'{s}':~", TILDE),
        ("\\\n~{s}", TILDE),
        # Locale translation.
        ('$"{s}"', 'bash translates $"..." into the locale\'s language; write "..." instead'),
        # Arithmetic, command and process substitution.
        ("$((7731+1)){s}", "arithmetic expansion $((...)) is not converted; write the result"),
        ('"{s}$((1))"', "arithmetic expansion $((...)) is not converted; write the result"),
        ("$[7731]{s}", "arithmetic expansion $[...] is not converted; write the result"),
        ('"$[1]{s}"', "arithmetic expansion $[...] is not converted; write the result"),
        ("$(echo {s})", "command substitution $(...) cannot be converted without running it"),
        ("`echo {s}`", "command substitution (`...`) cannot be converted without running it"),
        ("<(echo {s})", "'<' makes this line a command; only assignments are converted"),
        (">(cat)", "'>' makes this line a command; only assignments are converted"),
        # Parameter expansion other than a plain name.
        ("${X:-{s}}", BRACES),
        ('"${X:={s}}"', BRACES),
        ("${#X}", BRACES),
        ("${!X}", BRACES),
        ("${X/a/{s}}", BRACES),
        ("${1}", BRACES),
        ("$0{s}", SPECIAL),
        ("$${s}", SPECIAL),
        ("$?{s}", SPECIAL),
        # Variables bash or the environment set when the script runs.
        ("{s}$RANDOM", SET_BY),
        ('"{s}${HOME}"', SET_BY),
        ("{s}$_", SET_BY),
        ("{s}$BASH_VERSION", SET_BY),
        ("${LC_ALL}{s}", SET_BY),
        # ANSI-C escapes that make bytes.
        ("$'{s}\\x41'", ANSI_C),
        ("$'{s}\\101'", ANSI_C),
        ("$'\\u00fc{s}'", ANSI_C),
        ("$'\\cA{s}'", ANSI_C),
        ("~'root'{s}", TILDE),  # bash would leave this one: refusing is on the safe side
        # Characters bash treats otherwise than a reader of the text.
        (
            "{s}\r",
            "a carriage return (Windows line ends?), which bash keeps in a value; convert the file first, for example with dos2unix",
        ),
    ],
)
def test_every_other_expansion_is_refused_with_its_line_and_no_value(
    value: str, message: str
) -> None:
    """What bash would compute differently never silently becomes the secret."""
    text = (
        f"DOMAIN=example.org\n# the secret:\nSHARED_SECRET={value.replace('{s}', SECRET_LOOKING)}\n"
    )
    with pytest.raises(ConfigError) as caught:
        migrate.parse_shell_assignments(text, "old.cf")
    line = 3 + value.count("\n")
    assert str(caught.value) == f"old.cf: line {line}: {message}"
    assert "Zebra" not in str(caught.value)
    assert "7731" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "SHARED_SECRET+=Zebra7731Quokka",
        "SHARED_SECRET=x\nZebra7731Quokka",
        "SHARED_SECRET=Zebra7731 Quokka",
        "LENGTH=Zebra7731Quokka",
        "LENGTH=\u00b2",  # '²'.isdigit() is True, but int() refuses it
        "LENGTH=" + "7" * 5000,  # longer than int() converts
        "SHARED_SECRET=Zebra7731Quokka\u0000",
        "SHARED_SECRET='Zebra7731Quokka",
        "SHARED_SECRET=${Zebra7731Quokka:-x}",
    ],
)
def test_no_migrate_error_quotes_a_value(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """SECURITY.md: migrate never quotes a value from the old file; the exit status is 78."""
    old = tmp_path / "tempmail.cf"
    old.write_text("DOMAIN=example.org\nMAILDROP=me@example.net\n" + text + "\n")
    assert cli.main(["migrate", str(old), "--timezone", "UTC"]) == cli.EX_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"tempmail: {old}: ")
    assert len(err.splitlines()) == 1
    for piece in ("Zebra", "7731", "Quokka", "\u00b2", "777"):
        assert piece not in err


def test_the_messages_of_refused_statements() -> None:
    cases = {
        "A+=x": "line 1: A+= appends to a variable; write the whole value with '='",
        "LENGTH=x\n\x00": "line 2: a NUL character, which bash drops; remove it",
        "A=1\nsource other.cf": "line 2: not a variable assignment (NAME=value); the file is read as data and never run",
    }
    for text, message in cases.items():
        with pytest.raises(ConfigError) as caught:
            migrate.parse_shell_assignments(text, "old.cf")
        assert str(caught.value) == f"old.cf: {message}"
    for text in ("LENGTH=x", "LENGTH=\u00b2", "LENGTH=1234567890"):
        with pytest.raises(ConfigError) as caught:
            migrate.convert(parse(text), timezone="UTC", source="old.cf")
        assert str(caught.value) == "old.cf: LENGTH is not a whole number (at most 9 digits)"


#: Values bash takes literally in an assignment, or expands in a way that is emulated.
LIKE_BASH = [
    "a~b",  # '~' inside a word
    "x=~/z",  # after a second '=', not the assignment's own
    "'~/q'",
    '"~/q"',
    "\\~/r",
    "x:'~'/a:\\~b",
    "{a,b}",  # no brace expansion in assignments
    "*",  # no pathname expansion
    "s3cr!t",  # history expansion is off in scripts
    "x#y",
    "#x",
    "a\\ b",
    "$'\\a\\b\\e\\E\\f\\n\\r\\t\\v\\\\\\'\\\"\\?'",
    "\"$\"'$'",
    "cost$",
    "$%",
    '"a$"b',
    "'$(not run)'",
    '"x\\y"',
    "tab\\\nnewline",
]


@pytest.mark.parametrize("value", LIKE_BASH)
def test_what_is_converted_equals_what_bash_assigns(tmp_path: Path, value: str) -> None:
    """The oracle is real bash sourcing the file (as the original did)."""
    bash = require_tool("bash", "bash")
    old = tmp_path / "tempmail.cf"
    old.write_text(f"SHARED_SECRET={value}\n")
    result = subprocess.run(
        [bash, "-c", 'source "$1"; printf %s "$SHARED_SECRET"', "oracle", str(old)],
        capture_output=True,
        check=True,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )
    assert parse(old.read_text())["SHARED_SECRET"] == result.stdout.decode()


def test_every_variable_bash_sets_itself_is_refused() -> None:
    """The list in migrate.py covers what this bash defines in an empty environment."""
    bash = require_tool("bash", "bash")
    result = subprocess.run(
        ["env", "-i", bash, "-c", "compgen -v"], capture_output=True, text=True, check=True
    )
    defined = set(result.stdout.split())
    assert defined
    missing = {
        name
        for name in defined
        if name not in migrate.SET_BY_BASH and not name.startswith(("BASH_", "LC_"))
    }
    assert missing == set()


def test_a_missing_secret_is_an_error() -> None:
    """The original always had one; a file without it is not a postfix-tempmail config."""
    assert_migrate_fails(
        "DOMAIN=example.org\nMAILDROP=me@example.net\n",
        "SHARED_SECRET is not set; the original needs one",
    )


def assert_migrate_fails(text: str, message: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        old = Path(folder) / "tempmail.cf"
        old.write_text(text)
        args = argparse.Namespace(old_file=str(old), output=None, secret_file=None, timezone="UTC")
        with pytest.raises(ConfigError) as caught:
            setup.run_migrate(args)
        assert str(caught.value) == f"{old}: {message}"


def test_migrate_writes_a_complete_config_into_a_new_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-o creates a missing directory (0700) and writes every setting, the socket path too."""
    old = tmp_path / "tempmail.cf"
    old.write_text(OLD_CONFIG)
    new = tmp_path / "etc-tempmail" / "config.toml"
    secret = tmp_path / "etc-tempmail" / "secret"
    argv = ["migrate", str(old), "-o", str(new), "--secret-file", str(secret), "--timezone", "UTC"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().err.endswith(f"tempmail: wrote {new}\n")
    assert (new.parent.stat().st_mode & 0o7777, new.stat().st_mode & 0o777) == (0o700, 0o600)
    assert secret.read_text() == EXPECTED_SECRET + "\n"
    written = tomllib.loads(new.read_text())
    assert written["socket"]["path"] == "/var/spool/postfix/postfix-tempmail/socket"
    assert written["identities"]["default"]["secret_file"] == str(secret)
    assert "secret" not in written["identities"]["default"]
    assert written["server"]["idle_timeout"] == 60.0  # a default, written out
    loaded = config.load(new, environ={})
    assert loaded.identities[0].secrets[0].reveal() == EXPECTED_SECRET.encode()


def test_migrate_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "tempmail.cf"
    old.write_text(OLD_CONFIG)
    same = str(tmp_path / "x")
    assert cli.main(["migrate", str(old), "-o", same, "--secret-file", same]) == cli.EX_USAGE
    assert capsys.readouterr().err == (
        "tempmail: --secret-file must name another file than the configuration\n"
    )
    with pytest.raises(SystemExit) as caught:
        cli.main(["migrate"])
    assert caught.value.code == cli.EX_USAGE
    assert not (tmp_path / "x").exists()


def test_a_secret_with_a_line_break_is_refused() -> None:
    """bash hashes $'...\\n' with its line break; tempmail's secrets are one line, so the
    addresses would silently differ from the original's."""
    for assignment in ("SHARED_SECRET=$'s3cret-of-the-original\\n'", 'SHARED_SECRET="a\nb"'):
        assert_migrate_fails(
            f"{assignment}\nDOMAIN=example.org\nMAILDROP=me@example.net\n",
            "SHARED_SECRET holds a line break, which tempmail's secrets cannot; choose a new "
            "secret (every address changes), or remove the line break in the original first",
        )


def test_an_empty_socket_mode_is_the_default_not_0000() -> None:
    """SOCKETMAP_UNIX_SOCKET_MODE= would be mode 0000, which no client could connect to."""
    variables = parse(OLD_CONFIG.replace('SOCKETMAP_UNIX_SOCKET_MODE="660"', ""))
    default = migrate.convert(variables, timezone="UTC").data["socket"].get("mode")
    variables["SOCKETMAP_UNIX_SOCKET_MODE"] = ""
    assert migrate.convert(variables, timezone="UTC").data["socket"].get("mode") == default
    assert default != "0000"
