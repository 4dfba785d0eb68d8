"""What every container test shares: the checkout, the images it built, labels, compose copies.

The fixtures that build the images and hand them out are in conftest.py; test modules import
these names from here (pytest discourages importing from a conftest).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION: str = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
    "version"
]
SIDECAR_IMAGE = os.environ.get("TEMPMAIL_IMAGE", f"localhost/tempmail:{VERSION}")
POSTFIX_IMAGE = os.environ.get("TEMPMAIL_POSTFIX_IMAGE", f"localhost/tempmail-postfix:{VERSION}")
#: Labels on every container and volume the tests make, to find leftovers:
#: docker ps -a --filter label=org.tempmail.integration-test=1
LABELS = {"org.tempmail.integration-test": "1"}
#: LABELS as a YAML flow mapping, for the tests' compose overrides.
LABELS_YAML = "{" + ", ".join(f'"{k}": "{v}"' for k, v in LABELS.items()) + "}"


@contextlib.contextmanager
def compose_copy(prefix: str) -> Iterator[Path]:
    """A copy of deploy/compose whose relative paths still work (its ``../../container`` is
    this checkout's), for a test to add its override and secrets to; removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        directory = workdir / "deploy" / "compose"
        shutil.copytree(REPO / "deploy" / "compose", directory)
        (workdir / "container").symlink_to(REPO / "container")
        yield directory
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class Images:
    """The engine's client and the names of the two images built from this checkout."""

    client: Any  # docker.DockerClient (the docker package has no type hints)
    sidecar: str
    postfix: str


def missing_prerequisite(message: str) -> None:
    """Skip locally; fail when TEMPMAIL_REQUIRE_ALL=1 (CI), where nothing may be skipped."""
    if os.environ.get("TEMPMAIL_REQUIRE_ALL") == "1":
        pytest.fail(message + " (TEMPMAIL_REQUIRE_ALL=1: nothing may be skipped)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server that cannot be told to bind port 0
    (Postfix's smtpd in a container with host networking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
