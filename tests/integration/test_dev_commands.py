"""The README's first command, `scripts/dev`, and the lines it says to run beside it, verbatim.

They run in this checkout, as a developer runs them: `scripts/dev` installs the checkout into
.venv, writes tempmail.dev.toml when there is none (a developer's own is used as it is, and
left), and serves on ./tempmail.sock until it is stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import require_tool, wait_until

from . import readme
from .engine import REPO

pytestmark = pytest.mark.postfix

DEV_CONFIG = REPO / "tempmail.dev.toml"
SOCKET = REPO / "tempmail.sock"
POSTFIX_DEV = REPO / ".postfix-dev"


@pytest.fixture
def dev_server() -> Iterator[Path]:
    """`scripts/dev` (the README block), running; stopped as Ctrl-C stops it. Its output file."""
    require_tool("postmap", "postfix")
    assert not SOCKET.exists(), f"{SOCKET} exists: is a scripts/dev already running?"
    config_was_there = DEV_CONFIG.exists()
    postfix_dev_was_there = POSTFIX_DEV.exists()
    with tempfile.TemporaryDirectory(prefix="tm-dev-") as directory:
        output = Path(directory) / "output"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                readme.shell("dev-serve"),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(
                lambda: "listening on" in output.read_text() or process.poll() is not None,
                timeout=90,
                what="scripts/dev listening",
            )
            assert process.poll() is None, output.read_text()
            yield output
        finally:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal
            status = process.wait(timeout=30)
            if not config_was_there:
                DEV_CONFIG.unlink(missing_ok=True)
            if not postfix_dev_was_there:
                for path in sorted(POSTFIX_DEV.glob("*")):
                    path.unlink()
                if POSTFIX_DEV.exists():
                    POSTFIX_DEV.rmdir()
        assert status == 0, output.read_text()
        assert not SOCKET.exists(), "scripts/dev left its socket behind"


def test_scripts_dev_serves_and_the_readme_lines_beside_it_get_answers(dev_server: Path) -> None:
    shown = dev_server.read_text()
    asked = subprocess.run(
        readme.shell("dev-ask"), cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert asked.returncode == 0, asked.stderr
    lines = asked.stdout.splitlines()
    # `address`: today's and yesterday's; then the query's answer and postmap's, both the
    # dev identity's recipient.
    today, yesterday, from_query, from_postmap = lines
    assert today in shown  # scripts/dev printed today's addresses first
    assert yesterday != today
    assert from_query == from_postmap
    assert "@" in from_query
    assert from_query != today
