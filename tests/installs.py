"""The release as users install it, built once per test session and shared by every test that
must run tempmail from an installation rather than from this checkout.

``artefacts``: the sdist and the wheel, built with ``python -m build`` (its build environment
from the package index, as CI's pip reaches it). ``wheelhouse``: exactly the wheel's
dependencies as wheels. ``fresh_install``: Debian's /usr/bin/python3 made into a virtual
environment in a world-readable directory, with the wheel installed offline from the
wheelhouse: what an operator's /opt/tempmail is, runnable by an unprivileged user (the server
after its switch from root) wherever this checkout lives.

Loaded as a plugin by conftest.py (``pytest_plugins``), so these fixtures exist for every test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import require_tool

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
VERSION: str = PROJECT["version"]
SOURCE_URL: str = PROJECT["urls"]["Source"]
DISTRIBUTION = "tempmail-socketmap"
#: The distribution name as it appears in artefact file names (normalised, PEP 625/427).
STEM = f"tempmail_socketmap-{VERSION}"


def run(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``check``, a failure shows its output."""
    result = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, cwd=cwd, env=env
    )
    if check:
        assert result.returncode == 0, (
            f"{argv} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def report(request: pytest.FixtureRequest, line: str) -> None:
    """Show a measured figure in pytest's output (not captured)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(f"tempmail release: {line}")


@dataclass(frozen=True)
class Artefacts:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="session")
def artefacts(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Artefacts:
    """`python -m build` of this checkout: the sdist, then the wheel built from the sdist."""
    outdir = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    run([sys.executable, "-m", "build", "--outdir", outdir, REPO])
    report(
        request, f"python -m build (sdist, then wheel from it): {time.monotonic() - started:.1f} s"
    )
    built = sorted(p.name for p in outdir.iterdir())
    assert built == [f"{STEM}-py3-none-any.whl", f"{STEM}.tar.gz"]
    return Artefacts(outdir / f"{STEM}.tar.gz", outdir / f"{STEM}-py3-none-any.whl")


@dataclass(frozen=True)
class FreshInstall:
    """A venv of Debian's python3 holding the wheel and its dependencies, world-readable."""

    venv: Path
    env: dict[str, str]

    def tempmail(self, *argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the installed ``tempmail`` command."""
        return run([self.venv / "bin" / "tempmail", *argv], env=self.env, check=check)


def debian_python() -> str:
    """Debian's interpreter with its venv module; skip locally, fail in CI when missing."""
    python = require_tool("/usr/bin/python3", "python3")
    if subprocess.run(
        [python, "-c", "import ensurepip"], capture_output=True, check=False
    ).returncode:
        message = (
            f"{python} cannot make virtual environments: install Debian's python3-venv package"
        )
        if os.environ.get("TEMPMAIL_REQUIRE_ALL") == "1":
            pytest.fail(message + " (TEMPMAIL_REQUIRE_ALL=1: nothing may be skipped)")
        pytest.skip(message)
    return python


@pytest.fixture(scope="session")
def wheelhouse(
    artefacts: Artefacts, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The wheel and exactly its dependencies as wheels, resolved from the wheel's metadata."""
    target = tmp_path_factory.mktemp("wheelhouse")
    started = time.monotonic()
    run([
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--dest", target, artefacts.wheel,
    ])  # fmt: skip
    report(request, f"wheelhouse from the index: {time.monotonic() - started:.1f} s")
    return target


@pytest.fixture(scope="session")
def fresh_install(
    artefacts: Artefacts, wheelhouse: Path, request: pytest.FixtureRequest
) -> Iterator[FreshInstall]:
    """`python3 -m venv` + `pip install` of the wheel, offline from the wheelhouse."""
    python = debian_python()
    # Not pytest's tmp_path: its base directory is private (0700) to the user running pytest.
    root = Path(tempfile.mkdtemp(prefix="tempmail-fresh-"))
    root.chmod(0o755)
    venv = root / "venv"
    # Nothing of this machine's or this process's Python setup may leak in: no pip config
    # (PIP_CONFIG_FILE=/dev/null skips every config file), no PIP_*/PYTHON* variables.
    env = {
        "PATH": f"{venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL": "C.UTF-8",
        "HOME": str(root),
        "PIP_CONFIG_FILE": os.devnull,
    }
    try:
        started = time.monotonic()
        run([python, "-m", "venv", venv], env=env)
        made = time.monotonic()
        run(
            [
                venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check",
                "--no-cache-dir", "--no-index", "--find-links", wheelhouse, artefacts.wheel,
            ],
            env=env,
        )  # fmt: skip
        report(
            request,
            f"fresh venv: python3 -m venv {made - started:.1f} s, "
            f"pip install (offline) {time.monotonic() - made:.1f} s",
        )
        yield FreshInstall(venv, env)
    finally:
        run(["rm", "-rf", root])


#: Run in the fresh environment: the installed distributions, and the closure of the
#: requirements of tempmail-socketmap (markers evaluated here, extras none).
