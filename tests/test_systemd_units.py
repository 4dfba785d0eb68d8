"""The shipped systemd units: valid, hardened, and consistent with the code's defaults and the README.

These are the fast, static checks; tests/integration/test_systemd_host.py runs the same files
under a real systemd as PID 1.
"""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from helpers import require_tool
from integration import readme
from tempmail import cli, config

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "packaging" / "systemd"
PROJECT_URLS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]
#: The figure README.md quotes (test_systemd_host.py checks it under a running systemd too).
README_EXPOSURE = re.compile(r'`systemd-analyze security tempmail\.service` rates it ([\d.]+) "OK"')


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


def test_service_exposure_is_the_readme_figure(installed: Path) -> None:
    """systemd-analyze security rates the sandbox exactly as README.md says (0 best, 10 worst)."""
    analyze = require_tool("systemd-analyze", "systemd")
    stated = README_EXPOSURE.search(readme.README.read_text(encoding="utf-8"))
    assert stated, "README.md no longer states the systemd-analyze security figure"
    result = subprocess.run(
        [analyze, "security", "--offline=true", str(installed / "tempmail.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    score = re.search(r"Overall exposure level for tempmail.service: ([\d.]+) OK", result.stdout)
    assert score, result.stdout + result.stderr
    assert score[1] == stated[1]


def test_service_settings() -> None:
    service = unit("tempmail.service")["Service"]
    assert service["Type"] == "notify"
    # The server's own verdict on the reload, not a bare signal (that always "succeeds").
    assert shlex.split(service["ExecReload"]) == [
        "/usr/local/bin/tempmail",
        "reload",
        "--pid",
        "$MAINPID",
        "--socket",
        f"unix:{config.SocketSettings().path}",
    ]
    assert service["User"] == "tempmail"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["UMask"] == "0077"
    assert service["CapabilityBoundingSet"] == ""
    # EX_CONFIG: a broken config must not restart every RestartSec forever.
    assert (service["Restart"], service["RestartPreventExitStatus"]) == ("on-failure", "78")
    # The writable directory is where the default config puts the socket.
    assert service["ReadWritePaths"] == str(config.SocketSettings().path.parent)


def test_documentation_links_exist_where_the_units_point() -> None:
    """Documentation= names the project's documentation URL, never a file no package installs."""
    for name in ("tempmail.service", "tempmail.socket"):
        # configparser keeps the last of repeated keys; read every Documentation= line.
        lines = (UNITS / name).read_text().splitlines()
        links = [line.partition("=")[2] for line in lines if line.startswith("Documentation=")]
        assert links[0] == PROJECT_URLS["Documentation"], name
        assert all(link.startswith("https://") for link in links), links


def test_the_readme_installs_every_shipped_file() -> None:
    """The README's systemd block installs each file of packaging/systemd/ with install -D."""
    block = readme.block("systemd-install").text
    for path in sorted(UNITS.iterdir()):
        assert f"packaging/systemd/{path.name}" in block, path.name
    assert "install -D -m 0644 packaging/systemd/tempmail.sysusers /etc/sysusers.d/" in block


@pytest.mark.parametrize(("key", "option"), [("ExecStart", "--log-level"), ("ExecReload", "--pid")])
def test_exec_lines_are_valid_command_lines(
    key: str, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """ExecStart= and ExecReload= parse as tempmail command lines (argparse exits 0 on --help)."""
    argv = shlex.split(unit("tempmail.service")["Service"][key])
    assert argv[0] == "/usr/local/bin/tempmail"
    argv = [arg.replace("$MAINPID", "4242") for arg in argv]  # as systemd substitutes it
    with pytest.raises(SystemExit) as caught:
        cli.main([*argv[1:], "--help"])
    assert caught.value.code == 0
    assert option in capsys.readouterr().out


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
