"""Fixtures for the container tests: a reachable engine, freshly built images, running stacks.

The images are built from this checkout by .ci/build-images.sh once per session, right after
collection (outside any test's timeout), and only if a selected test needs them. Cached
builds take about a second. TEMPMAIL_SKIP_BUILD=1 uses the images as they are.

No engine: skip with the reason, or fail when TEMPMAIL_REQUIRE_ALL=1 (CI). A failed build
always fails. Images are never pulled: there may be no registry, and the tests must run
what this checkout builds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from .engine import POSTFIX_IMAGE, REPO, SIDECAR_IMAGE, Images, missing_prerequisite
from .stack import Stack, stacks

BUILD_SCRIPT = REPO / ".ci" / "build-images.sh"
BUILD_TIMEOUT = 1200


@dataclass
class _Prepared:
    images: Images | None = None
    missing: str | None = None  # a prerequisite is missing: skip (fail in CI)
    error: str | None = None  # something is broken: fail


_PREPARED = pytest.StashKey[_Prepared]()


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if any("docker_images" in getattr(item, "fixturenames", ()) for item in session.items):
        t0 = time.monotonic()
        prepared = _prepare()
        session.config.stash[_PREPARED] = prepared
        if prepared.images is not None:
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(
                    f"tempmail integration: images {SIDECAR_IMAGE}, {POSTFIX_IMAGE} "
                    f"ready in {time.monotonic() - t0:.1f} s"
                )


def pytest_sessionfinish(session: pytest.Session) -> None:
    prepared = session.config.stash.get(_PREPARED, None)
    if prepared is not None and prepared.images is not None:
        prepared.images.client.close()


def _prepare() -> _Prepared:
    import docker  # noqa: PLC0415 - only when container tests are selected

    unreachable = _engine_unreachable()
    if unreachable:
        return _Prepared(missing=unreachable)
    client = docker.from_env()
    if os.environ.get("TEMPMAIL_SKIP_BUILD") != "1":
        try:
            build = subprocess.run(
                [str(BUILD_SCRIPT)],
                env={**os.environ, "BUILD_QUIET": "1"},
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return _Prepared(error=f"{BUILD_SCRIPT} took longer than {BUILD_TIMEOUT} s")
        if build.returncode != 0:
            tail = "\n".join((build.stdout + build.stderr).splitlines()[-40:])
            return _Prepared(error=f"{BUILD_SCRIPT} failed ({build.returncode}):\n{tail}")
    for image in (SIDECAR_IMAGE, POSTFIX_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            # testcontainers would try to pull it; there may be no registry at all.
            return _Prepared(error=f"image {image} is not built locally; run {BUILD_SCRIPT}")
    return _Prepared(images=Images(client, SIDECAR_IMAGE, POSTFIX_IMAGE))


def _engine_unreachable() -> str | None:
    """Why no engine answers, or None. Probed with a plain socket for unix:// hosts: a
    failing docker.from_env() leaves its socket to the garbage collector, whose
    ResourceWarning would then fail some unrelated test (filterwarnings = error)."""
    import docker  # noqa: PLC0415

    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(5)
                probe.connect(host.removeprefix("unix://"))
        with contextlib.closing(docker.from_env()) as client:
            client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable engine
        return f"no Docker engine reachable at {host}: {exc}"
    return None


@pytest.fixture(scope="session")
def docker_images(request: pytest.FixtureRequest) -> Images:
    """The engine's client and the names of the two images built from this checkout."""
    prepared = request.config.stash.get(_PREPARED, None)
    if prepared is None:  # collected lazily (should not happen): prepare now
        prepared = _prepare()
        request.config.stash[_PREPARED] = prepared
    if prepared.missing:
        missing_prerequisite(prepared.missing)
    if prepared.error:
        pytest.fail(prepared.error)
    assert prepared.images is not None
    return prepared.images


@pytest.fixture(scope="module")
def make_stack(docker_images: Images) -> Iterator[Callable[..., Stack]]:
    """Start stacks (make_stack(config, **options), see Stack); removed at the end of the
    module."""
    with stacks(docker_images) as make:
        yield make
