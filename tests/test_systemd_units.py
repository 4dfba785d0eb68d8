"""The shipped systemd units: valid, hardened, and consistent with the code's defaults."""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from helpers import require_tool
from tempmail import cli, config

UNITS = Path(__file__).parent.parent / "packaging" / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(UNITS / name)
    return parser


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """The units as installed, with ExecStart pointing at this checkout's tempmail."""
    tempmail = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "tempmail"
    for name in ("tempmail.service", "tempmail.socket"):
        text = (UNITS / name).read_text().replace("/usr/local/bin/tempmail", str(tempmail))
        (tmp_path / name).write_text(text)
    return tmp_path


def test_units_verify(installed: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    result = subprocess.run(
        [
            analyze,
            "verify",
            str(installed / "tempmail.socket"),
            str(installed / "tempmail.service"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_service_exposure_is_low(installed: Path) -> None:
    """systemd-analyze security rates the sandbox; 'OK' is below 2.0 on its 0-10 scale."""
    analyze = require_tool("systemd-analyze", "systemd")
    result = subprocess.run(
        [analyze, "security", "--offline=true", str(installed / "tempmail.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    score = re.search(r"Overall exposure level for tempmail.service: ([\d.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) < 2.0


def test_service_settings() -> None:
    service = unit("tempmail.service")["Service"]
    assert service["Type"] == "notify"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["User"] == "tempmail"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["UMask"] == "0077"
    assert service["CapabilityBoundingSet"] == ""
    # The writable directory is where the default config puts the socket.
    assert service["ReadWritePaths"] == str(config.SocketSettings().path.parent)


def test_exec_start_is_a_valid_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = shlex.split(unit("tempmail.service")["Service"]["ExecStart"])
    assert argv[0] == "/usr/local/bin/tempmail"
    with pytest.raises(SystemExit) as caught:
        cli.main([*argv[1:], "--help"])
    assert caught.value.code == 0
    assert "--log-level" in capsys.readouterr().out


def test_socket_unit_matches_the_default_socket() -> None:
    socket_unit = unit("tempmail.socket")["Socket"]
    assert socket_unit["ListenStream"] == str(config.SocketSettings().path)
    assert (socket_unit["SocketGroup"], socket_unit["SocketMode"]) == ("postfix", "0660")
    assert socket_unit["Service"] == "tempmail.service"


def test_sysusers_and_tmpfiles() -> None:
    assert (UNITS / "tempmail.sysusers").read_text().splitlines()[-1].split()[:2] == [
        "u",
        "tempmail",
    ]
    line = (UNITS / "tempmail.tmpfiles").read_text().splitlines()[-1].split()
    assert line[:5] == [
        "d",
        str(config.SocketSettings().path.parent),
        "0750",
        "tempmail",
        "postfix",
    ]
