"""deploy/compose: its paths agree with the images and its config loads (no engine needed).

The sidecar flags are the ones the end-to-end stack runs with (stack.py); this keeps the
compose file from drifting away from what is tested.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no stubs installed; only safe_load is used

from tempmail import config as config_module

from .conftest import REPO
from .stack import CONFIG_DIR, POSTFIX_SOCKET_DIR, SIDECAR_SOCKET_DIR

pytestmark = pytest.mark.containers

COMPOSE = REPO / "deploy" / "compose"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return dict(data["services"])


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path -> (source, options)."""
    found = {}
    for entry in service["volumes"]:
        source, target, *options = entry.split(":")
        found[target] = (source, options[0] if options else "rw")
    return found


def test_sidecar_is_locked_down(services: dict[str, Any]) -> None:
    sidecar = services["tempmail"]
    assert sidecar["network_mode"] == "none"
    assert sidecar["read_only"] is True
    assert sidecar["cap_drop"] == ["ALL"]
    assert sidecar["security_opt"] == ["no-new-privileges:true"]


def test_paths_agree(services: dict[str, Any]) -> None:
    config = tomllib.loads((COMPOSE / "config.toml").read_text())
    sidecar, postfix = mounts(services["tempmail"]), mounts(services["postfix"])
    socket_path = Path(config["socket"]["path"])
    assert str(socket_path.parent) == SIDECAR_SOCKET_DIR
    # The same named volume on both sides; Postfix reads through it only.
    assert sidecar[SIDECAR_SOCKET_DIR][0] == postfix[POSTFIX_SOCKET_DIR][0]
    assert postfix[POSTFIX_SOCKET_DIR][1] == "ro"
    assert f"{CONFIG_DIR}/config.toml" in sidecar
    assert config["identities"]["default"]["secret_file"] in sidecar
    env = services["postfix"]["environment"]
    assert env["TEMPMAIL_DOMAINS"] == config["identities"]["default"]["domain"]


def test_config_loads() -> None:
    data = tomllib.loads((COMPOSE / "config.toml").read_text())
    identity = data["identities"]["default"]
    del identity["secret_file"]
    identity["secret"] = "a secret of at least sixteen bytes"
    loaded = config_module.parse(data, environ={})
    assert loaded.identities[0].recipient == "user@localhost"
    assert not loaded.warnings
