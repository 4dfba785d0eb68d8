"""The built images say what they are: OCI labels from pyproject.toml and the commit, and the
sidecar runs the version its label names."""

from __future__ import annotations

import json
import subprocess
import tomllib

import pytest

from .engine import LABELS, REPO, Images

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

pytestmark = pytest.mark.containers


def image_labels(image: str) -> dict[str, str]:
    """The labels as `docker image inspect` reports them."""
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image],
        capture_output=True,
        text=True,
        check=True,
    )
    labels: dict[str, str] = json.loads(result.stdout)
    return labels


def test_images_carry_the_version_the_source_and_the_commit(docker_images: Images) -> None:
    """version and source are pyproject's; revision is a commit of this checkout's history."""
    revisions = set()
    for image in (docker_images.sidecar, docker_images.postfix):
        labels = image_labels(image)
        assert labels["org.opencontainers.image.version"] == PROJECT["version"], image
        assert labels["org.opencontainers.image.source"] == PROJECT["urls"]["Source"], image
        assert labels["org.opencontainers.image.licenses"] == "MIT", image
        revisions.add(labels["org.opencontainers.image.revision"])
    assert len(revisions) == 1, revisions
    (revision,) = revisions
    assert len(revision) == 40, revision
    # HEAD when the images were built; other work may have been committed since.
    ancestor = subprocess.run(
        ["git", "-C", str(REPO), "merge-base", "--is-ancestor", revision, "HEAD"], check=False
    )
    assert ancestor.returncode == 0, f"{revision} is not in this checkout's history"


def test_the_sidecar_runs_the_version_its_label_names(docker_images: Images) -> None:
    """`tempmail --version` inside the sidecar image prints the labelled version."""
    output = docker_images.client.containers.run(
        docker_images.sidecar,
        ["--version"],
        network_mode="none",
        labels=LABELS,
        remove=True,
    )
    assert output.decode() == f"tempmail {PROJECT['version']}\n"
