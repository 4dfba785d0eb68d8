"""Where the server runs: in a container, or on a host. Advice in errors depends on it.

On a host, a missing directory or file is created (``install -d``, ``tempmail init``); in a
container the same advice is wrong: the directory or file is a volume mount the container was
started without.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


def in_container(environ: Mapping[str, str]) -> bool:
    """Whether we run in a container: told so explicitly, never guessed from leftovers.

    ``$container`` is systemd's container interface (podman and systemd-nspawn set it; the
    sidecar image sets ``container=oci``), podman also writes /run/.containerenv, and
    Kubernetes sets ``$KUBERNETES_SERVICE_HOST`` in every pod. Docker's /.dockerenv is not
    used: hosts made from container images (some CI machines) keep it.
    """
    return (
        "container" in environ
        or "KUBERNETES_SERVICE_HOST" in environ
        or Path("/run/.containerenv").exists()
    )
