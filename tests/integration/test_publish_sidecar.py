"""deploy/compose/compose.publish.yaml as docs/publishing.md tells an operator to use it.

A copy of deploy/compose gets the documented ``publish`` directory (owned by the sidecar's
uid), the documented ``[publish]`` table in config/config.toml and a secret; docker-compose
then starts the sidecar with compose.yaml, compose.publish.yaml and a small override for this
machine (the images this checkout built, labels; compose never builds). The published files
must appear in the shared directory with today's address, and a web server's container that
mounts the directory read-only, as an unprivileged user, must read them. The example's nginx
image is not started: there is no registry to pull it from, and what a web server needs of the
files (read access through a read-only mount) is what the stand-in checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import require_tool, wait_until

from .addresses import wait_past_utc_midnight
from .engine import LABELS, LABELS_YAML, REPO, Images, compose_copy, missing_prerequisite
from .operator_steps import new_secret, run, write_secret_directory
from .sidecar import TEMPMAIL_UID

pytestmark = pytest.mark.containers

DOCS = REPO / "docs" / "publishing.md"
#: Where the web service of compose.publish.yaml sees the directory (read-only).
WEB_DIR = "/usr/share/nginx/html/tempmail"
#: nginx's unprivileged user in its images: the web server reads as someone else entirely.
WEB_UID = 101
#: A local image with a shell and cat, built by .ci/make-base-image.sh (no registry here).
STAND_IN_IMAGE = "debian:bookworm-slim"

OVERRIDE = """\
services:
  tempmail:
    image: {sidecar}
    labels: {labels}
"""


def documented_publish_table() -> str:
    """The [publish] table docs/publishing.md gives for compose."""
    found = re.search(
        r"<!-- publish: compose-config -->\n```toml\n(.*?)\n```", DOCS.read_text(), re.DOTALL
    )
    assert found
    return found.group(1)


@dataclass
class Project:
    compose: str
    directory: Path
    name: str

    def __call__(self, *args: str) -> str:
        files = ["-f", "compose.yaml", "-f", "compose.publish.yaml", "-f", "override.yaml"]
        return run([self.compose, "-p", self.name, *files, *args], cwd=self.directory)


@pytest.fixture(scope="module")
def project(docker_images: Images) -> Iterator[Project]:
    """The sidecar of deploy/compose with the publish override, started as documented."""
    compose = require_tool("docker-compose", "docker-compose")
    if os.geteuid() != 0:
        missing_prerequisite("the publish directory must be given to uid 10001 (chown)")
    with compose_copy("tempmail-publish-") as directory:
        (directory / "override.yaml").write_text(
            OVERRIDE.format(sidecar=docker_images.sidecar, labels=LABELS_YAML)
        )
        write_secret_directory(directory / "secrets", new_secret())
        # install -d -o 10001 -g 10001 -m 0755 publish
        (directory / "publish").mkdir(mode=0o755)
        os.chown(directory / "publish", TEMPMAIL_UID, TEMPMAIL_UID)
        config = directory / "config" / "config.toml"
        config.write_text(config.read_text() + "\n" + documented_publish_table() + "\n")
        started = Project(compose, directory, f"tempmail-publish-{uuid.uuid4().hex[:8]}")
        try:
            started("up", "-d", "--no-build", "tempmail")
            yield started
        finally:
            with contextlib.suppress(AssertionError):
                started("down", "--volumes", "--timeout", "10")


@pytest.mark.timeout(120)
def test_the_sidecar_publishes_todays_address_into_the_shared_directory(
    project: Project, docker_images: Images
) -> None:
    """address.txt and address.json appear, hold today's address, and a web server reads them."""
    wait_past_utc_midnight(margin=30)
    published = project.directory / "publish"
    wait_until(
        lambda: (published / "address.txt").exists() and (published / "address.json").exists(),
        30,
        0.1,
        "the published files",
    )
    printed = project("exec", "-T", "tempmail", "tempmail", "address").split()
    text = (published / "address.txt").read_text()
    (entry,) = json.loads((published / "address.json").read_text())
    assert text == f"{printed[0]}\n"
    assert (entry["identity"], entry["address"], entry["scheme"]) == (
        "default",
        printed[0],
        "hmac",
    )
    for name in ("address.txt", "address.json"):
        info = (published / name).stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o644, TEMPMAIL_UID)
    assert sorted(p.name for p in published.iterdir()) == ["address.json", "address.txt"]
    # The web server's side: a read-only mount, another unprivileged user.
    seen = docker_images.client.containers.run(
        STAND_IN_IMAGE,
        ["cat", f"{WEB_DIR}/address.txt", f"{WEB_DIR}/address.json"],
        user=f"{WEB_UID}:{WEB_UID}",
        network_mode="none",
        volumes={str(published): {"bind": WEB_DIR, "mode": "ro"}},
        labels=LABELS,
        remove=True,
    ).decode()
    assert seen == text + (published / "address.json").read_text()
