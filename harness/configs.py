"""The configuration file of a launched server: written from a dict, socket and user filled in."""

from __future__ import annotations

import copy
import os
import pwd
from pathlib import Path
from typing import Any, Final

import tomli_w

#: The identity every launched server serves unless told otherwise: both schemes accepted,
#: 8-digit codes, today and yesterday valid, UTC.
IDENTITY: Final[dict[str, Any]] = {
    "domain": "example.org",
    "recipient": "owner@example.net",
    "scheme": "hmac",
    "accept": ["hmac", "md5"],
    "length": 8,
    "window": 2,
    "timezone": "UTC",
}


def identity(secret: str, /, **keys: Any) -> dict[str, Any]:  # noqa: ANN401 - TOML values
    """:data:`IDENTITY` with ``secret``; keyword arguments override its keys (None removes one)."""
    merged = {**IDENTITY, "secret": secret, **keys}
    return {key: value for key, value in merged.items() if value is not None}


def one_identity(secret: str, /, **keys: Any) -> dict[str, Any]:  # noqa: ANN401 - TOML values
    """A config of one identity, ``default``: :func:`identity` in its table."""
    return {"identities": {"default": identity(secret, **keys)}}


def write_config(path: Path, data: dict[str, Any], mode: int = 0o600) -> Path:
    """Write ``data`` as TOML to ``path`` with ``mode`` (0600: it may hold an inline secret)."""
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    path.chmod(mode)
    return path


def serving_config(
    data: dict[str, Any], directory: Path, name: str, *, as_process: bool = False
) -> dict[str, Any]:
    """A copy of ``data`` that serves from ``directory``: what every launched server needs.

    Unless ``data`` names them: a unix socket ``directory/NAME.sock`` (keep ``directory``
    short: AF_UNIX paths are limited to about 108 bytes), or for ``type = "inet"`` port 0, so
    that the kernel picks a free port and the server reports it (no probing, no races). A
    process started as root refuses to serve without ``server.user`` (``as_process``): the
    current user is named.
    """
    data = copy.deepcopy(data)
    socket_table = data.setdefault("socket", {})
    if socket_table.get("type", "unix") == "unix":
        socket_table.setdefault("path", str(directory / f"{name}.sock"))
    else:
        socket_table.setdefault("port", 0)
    if as_process:
        data.setdefault("server", {}).setdefault("user", _current_user())
    return data


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry, as in some containers
        return str(os.geteuid())
