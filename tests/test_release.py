"""The release as users get it: the sdist and the wheel built, checked, installed into a fresh
virtual environment with nothing else, and run from there; one version everywhere.

The build and the dependencies come from the package index (CI's pip reaches PyPI, as it does
for `pip install -e .[dev]`); the fresh environment then installs offline, from a wheelhouse
of exactly the wheel's dependencies, so the wheel's metadata alone must be enough. The fresh
environment is Debian's /usr/bin/python3 in a world-readable directory: an unprivileged user
(the server after its drop from root) can run it wherever the checkout lives.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from harness import ServerProcess, write_config
from helpers import RECIPIENT, config_data
from installs import (
    DISTRIBUTION,
    REPO,
    SOURCE_URL,
    STEM,
    VERSION,
    Artefacts,
    FreshInstall,
    report,
    run,
)

#: Unit tests a distribution packager runs from the unpacked sdist: they read the shipped
#: config.toml.example and docs/schemes.md, and need nothing but the test dependencies.
SDIST_UNIT_TESTS = (
    "tests/test_schemes.py",
    "tests/test_config.py",
    "tests/test_netstring.py",
    "tests/test_socketmap.py",
    "tests/test_window.py",
    "tests/test_lookup.py",
    "tests/test_migrate.py",
)

# Building and installing take a while on a busy CI machine; the session fixtures are set up
# inside the first test that needs them, so its timeout covers them.
pytestmark = pytest.mark.timeout(600)


# --- static: one version, one place -----------------------------------------------------------

#: Image references in docs and manifests: localhost/tempmail:X, localhost/tempmail-postfix:X,
#: and the docs' shorthand localhost/…:X.
IMAGE_TAG = re.compile(r"localhost/(?:tempmail|tempmail-postfix|…):([^\s`\"']+)")
#: The wheel's file name, as the README's install instructions name it.
WHEEL_NAME = re.compile(r"tempmail_socketmap-([^-\s]+)-py3-none-any\.whl")


def test_the_version_is_the_same_everywhere() -> None:
    """pyproject's version is the changelog's, every image tag and wheel name, the images'."""
    changelog = (REPO / "CHANGELOG.md").read_text()
    top = re.search(r"^## \[([^\]]+)\]", changelog, re.MULTILINE)
    assert top is not None, "CHANGELOG.md has no '## [VERSION] - DATE' entry"
    assert top.group(1) == VERSION
    tagged = [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "deploy").rglob("*.yaml")),
    ]
    tags = {
        f"{path.relative_to(REPO)}: {match.group(0)}": match.group(1)
        for path in tagged
        for pattern in (IMAGE_TAG, WHEEL_NAME)
        for match in pattern.finditer(path.read_text())
    }
    assert {where: tag for where, tag in tags.items() if tag != VERSION} == {}
    for manifest in ("deploy/kubernetes/deployment.yaml", "deploy/compose/compose.yaml"):
        text = (REPO / manifest).read_text()
        for image in ("tempmail", "tempmail-postfix"):
            assert f"image: localhost/{image}:{VERSION}" in text, f"{manifest} lacks {image}"
    for containerfile in ("container/Containerfile", "container/postfix/Containerfile"):
        text = (REPO / containerfile).read_text()
        assert f"\nARG TEMPMAIL_VERSION={VERSION}\n" in text, containerfile
        assert f"\nARG TEMPMAIL_SOURCE={SOURCE_URL}\n" in text, containerfile


def test_the_changelog_has_the_keep_a_changelog_sections() -> None:
    """The top entry has Added, Changed, Fixed, Security and an upgrade note."""
    changelog = (REPO / "CHANGELOG.md").read_text()
    top = changelog.split(f"## [{VERSION}]", 1)[1].split("\n## [", 1)[0]
    headings = re.findall(r"^### (.+)$", top, re.MULTILINE)
    assert headings == ["Upgrading from 1.x", "Added", "Changed", "Fixed", "Security"]


# --- the artefacts ----------------------------------------------------------------------------


def sdist_members(sdist: Path) -> list[str]:
    listing = run(["tar", "-tzf", sdist]).stdout.splitlines()
    prefix = f"{STEM}/"
    assert all(name.startswith(prefix) for name in listing), listing
    return sorted(name.removeprefix(prefix) for name in listing if not name.endswith("/"))


def test_twine_accepts_the_artefacts(artefacts: Artefacts) -> None:
    """`twine check --strict` passes both (metadata, README rendering)."""
    result = run(
        [sys.executable, "-m", "twine", "check", "--strict", artefacts.sdist, artefacts.wheel]
    )
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_wheel_holds_the_package_and_the_licence_only(artefacts: Artefacts) -> None:
    """The wheel: the tempmail package with py.typed, its metadata and LICENSE; nothing else."""
    with zipfile.ZipFile(artefacts.wheel) as wheel:
        names = sorted(wheel.namelist())
        licence = wheel.read(f"{STEM}.dist-info/licenses/LICENSE").decode()
        metadata = wheel.read(f"{STEM}.dist-info/METADATA").decode()
        entry_points = wheel.read(f"{STEM}.dist-info/entry_points.txt").decode()
    package = [n for n in names if n.startswith("tempmail/")]
    shipped_sources = [
        "tempmail/" + n.removeprefix("src/tempmail/")
        for n in sdist_members(artefacts.sdist)
        if n.startswith("src/tempmail/")
    ]
    assert package == sorted(shipped_sources)
    assert {"tempmail/__init__.py", "tempmail/py.typed", "tempmail/cli/__init__.py"} <= set(package)
    assert all(n.endswith((".py", "/py.typed")) for n in package), package
    assert sorted(set(names) - set(package)) == [
        f"{STEM}.dist-info/METADATA",
        f"{STEM}.dist-info/RECORD",
        f"{STEM}.dist-info/WHEEL",
        f"{STEM}.dist-info/entry_points.txt",
        f"{STEM}.dist-info/licenses/LICENSE",
    ]
    assert licence == (REPO / "LICENSE").read_text()
    headers = dict(
        line.split(": ", 1) for line in metadata.split("\n\n", 1)[0].splitlines() if ": " in line
    )
    assert headers["Name"] == DISTRIBUTION
    assert headers["Version"] == VERSION
    assert headers["License-Expression"] == "MIT"
    assert headers["License-File"] == "LICENSE"
    assert "[console_scripts]\ntempmail = tempmail.cli:main\n" in entry_points


def test_the_sdist_holds_what_a_packager_needs(artefacts: Artefacts) -> None:
    """The sdist: sources, unit tests, docs with the vectors, example config, units, licence."""
    members = sdist_members(artefacts.sdist)
    required = {
        "PKG-INFO",
        "pyproject.toml",
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "SECURITY.md",
        "config.toml.example",
        "docs/schemes.md",
        "packaging/systemd/tempmail.service",
        "src/tempmail/__init__.py",
        "src/tempmail/py.typed",
        "tests/conftest.py",
        "tests/helpers.py",
        "harness/__init__.py",  # how the tests start servers
        *SDIST_UNIT_TESTS,
    }
    assert sorted(required - set(members)) == []
    top_level = {name.split("/", 1)[0] for name in members}
    directories = {".gitignore", "docs", "harness", "packaging", "src", "tests"}
    assert top_level <= required | directories, top_level
    unwanted = [
        name
        for name in members
        if name.startswith(("tests/integration/", "tests/test_release.py"))
        or "__pycache__" in name
        or name.endswith((".pyc", ".whl"))
    ]
    assert unwanted == []
    assert (REPO / "LICENSE").read_text() in run(
        ["tar", "-xOzf", artefacts.sdist, f"{STEM}/LICENSE"]
    ).stdout


def test_unit_tests_pass_from_the_unpacked_sdist(
    artefacts: Artefacts, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A packager's run: unpack the sdist, PYTHONPATH=src, pytest on the unit tests."""
    run(["tar", "-xzf", artefacts.sdist, "-C", tmp_path, "--no-same-owner"])
    unpacked = tmp_path / STEM
    env = {**os.environ, "PYTHONPATH": str(unpacked / "src")}
    location = run(
        [sys.executable, "-c", "import tempmail; print(tempmail.__file__)"], cwd=unpacked, env=env
    )
    assert location.stdout == f"{unpacked / 'src' / 'tempmail' / '__init__.py'}\n"
    started = time.monotonic()
    result = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SDIST_UNIT_TESTS],
        cwd=unpacked,
        env=env,
    )
    summary = result.stdout.strip().splitlines()[-1]
    report(
        request,
        f"unit tests from the unpacked sdist: {summary} ({time.monotonic() - started:.1f} s)",
    )
    # Skips only where a tool is missing locally: TEMPMAIL_REQUIRE_ALL=1 (CI) passes through
    # and turns them into failures.
    assert re.fullmatch(r"\d+ passed(, \d+ skipped)? in [\d.]+s( \([\d:]+\))?", summary), summary


# --- a fresh virtual environment with nothing else --------------------------------------------


CLOSURE_PROGRAM = r"""
import json, re
from importlib import metadata
from packaging.requirements import Requirement

def key(name):
    return re.sub(r"[-_.]+", "-", name).lower()

installed = {key(d.metadata["Name"]): d for d in metadata.distributions()}
needed, todo = set(), ["tempmail-socketmap"]
while todo:
    name = key(todo.pop())
    if name in needed:
        continue
    needed.add(name)
    for text in installed[name].requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            todo.append(requirement.name)
print(json.dumps({"installed": sorted(installed), "needed": sorted(needed)}))
"""


def test_the_fresh_install_holds_the_wheel_and_its_dependencies_only(
    fresh_install: FreshInstall,
) -> None:
    """Nothing but tempmail-socketmap, its dependencies, and the venv's own pip and setuptools."""
    # packaging is vendored in pip; the program must not need anything the venv lacks.
    program = CLOSURE_PROGRAM.replace(
        "from packaging.requirements", "from pip._vendor.packaging.requirements"
    )
    result = run([fresh_install.venv / "bin" / "python", "-c", program], env=fresh_install.env)
    found = json.loads(result.stdout)
    assert "tempmail-socketmap" in found["needed"]
    assert {"anyio", "tomli-w", "tzdata"} <= set(found["needed"])
    assert sorted(set(found["installed"]) - set(found["needed"])) == ["pip", "setuptools"]
    run([fresh_install.venv / "bin" / "pip", "check"], env=fresh_install.env)


def test_the_fresh_install_prints_its_version(fresh_install: FreshInstall) -> None:
    """`tempmail --version` and `python -m tempmail --version` print pyproject's version."""
    assert fresh_install.tempmail("--version").stdout == f"tempmail {VERSION}\n"
    module = run(
        [fresh_install.venv / "bin" / "python", "-m", "tempmail", "--version"],
        env=fresh_install.env,
    )
    assert module.stdout == f"tempmail {VERSION}\n"


def test_the_fresh_install_prints_the_documented_addresses(
    fresh_install: FreshInstall, tmp_path: Path
) -> None:
    """`tempmail address` gives docs/schemes.md's vectors for "<Your secret>" on 2026-11-27."""
    path = write_config(tmp_path / "config.toml", config_data(secret="<Your secret>"))
    hmac = fresh_install.tempmail("-c", path, "address", "--date", "2026-11-27")
    assert hmac.stdout == "e1f74d45@example.org\n"
    md5 = fresh_install.tempmail("address", "--date", "2026-11-27", "--scheme", "md5", "-c", path)
    assert md5.stdout == "cad5b5f5@example.org\n"


@pytest.fixture
def served(fresh_install: FreshInstall, short_dir: Path) -> Iterator[ServerProcess]:
    """`tempmail serve` of the fresh install on a unix socket; as root it drops to nobody."""
    # The server runs as nobody after the drop: everything it opens later must be reachable.
    short_dir.chmod(0o755)
    secret = short_dir / "secret"
    secret.write_text("a secret for the fresh install\n")
    secret.chmod(0o600)
    data = {
        **config_data(secret=None, secret_file=str(secret)),
        "server": {"user": "nobody"},
        "socket": {"path": str(short_dir / "s.sock"), "mode": "0666"},
    }
    path = write_config(short_dir / "c.toml", data, mode=0o644)
    command = [fresh_install.venv / "bin" / "tempmail"]
    with ServerProcess(path, command=command, env=fresh_install.env) as server:
        yield server


def test_the_fresh_install_answers_lookups_through_tempmail_serve(
    fresh_install: FreshInstall, served: ServerProcess
) -> None:
    """Today's address resolves through the running server; a wrong one is NOTFOUND (exit 1)."""
    today = fresh_install.tempmail("-c", served.config, "address").stdout.splitlines()[0]
    found = fresh_install.tempmail("-c", served.config, "query", today)
    assert found.stdout == f"{RECIPIENT}\n"
    unknown = fresh_install.tempmail(
        "-c", served.config, "query", "0badc0de@example.org", check=False
    )
    assert (unknown.returncode, unknown.stdout) == (1, "")
    fresh_install.tempmail("-c", served.config, "query", "--self-test")
    assert served.stop(timeout=5) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_serve_as_root_drops_to_the_configured_user(
    fresh_install: FreshInstall, served: ServerProcess
) -> None:
    """Started as root, the server runs as nobody and still answers, from a readable install."""
    status = Path(f"/proc/{served.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["65534"] * 4
    served.wait_for("switched to user nobody", timeout=5)
    fresh_install.tempmail("-c", served.config, "query", "--self-test")
    assert served.stop(timeout=5) == 0


def test_the_fresh_install_lives_where_an_unprivileged_user_can_run_it(
    fresh_install: FreshInstall,
) -> None:
    """Every directory up to the venv's interpreter is searchable by others, the file readable."""
    interpreter = Path(os.path.realpath(fresh_install.venv / "bin" / "python"))
    assert interpreter.parts[:3] == ("/", "usr", "bin")
    for path in (fresh_install.venv / "bin" / "tempmail", interpreter):
        assert path.stat().st_mode & 0o005 == 0o005, path
        for parent in PurePosixPath(path).parents:
            assert Path(parent).stat().st_mode & 0o001, parent


def test_serve_as_root_refuses_a_user_who_could_not_read_the_installation(
    fresh_install: FreshInstall, service_user: pwd.struct_passwd, short_dir: Path
) -> None:
    """A venv the service user cannot read (under /root, in a 0700 checkout) is refused at
    start with one line and exit 78, instead of a traceback at the first import after the
    switch (issues 9 and 11)."""
    short_dir.chmod(0o755)
    data = {
        **config_data(),
        "server": {"user": service_user.pw_name},
        "socket": {"path": str(short_dir / "s.sock")},
    }
    path = write_config(short_dir / "c.toml", data)
    venv = fresh_install.venv
    venv.chmod(0o700)  # the session's install: made readable again below
    try:
        result = subprocess.run(
            [venv / "bin" / "tempmail", "-c", path, "serve"],
            capture_output=True,
            text=True,
            env=fresh_install.env,
            check=False,
            timeout=60,
        )
    finally:
        venv.chmod(0o755)
    assert (result.returncode, result.stdout) == (78, "")
    assert result.stderr == (
        f"tempmail: server.user: {service_user.pw_name} may not enter {venv} (mode 0700, owner "
        f"root:root), so the server would stop at its next import after switching to "
        f"'{service_user.pw_name}'; install tempmail where that user can read it, e.g. "
        "'python3 -m venv /opt/tempmail' (see README, Installing on a host)\n"
    )
    assert not (short_dir / "s.sock").exists()
