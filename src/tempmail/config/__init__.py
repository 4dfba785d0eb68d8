"""Configuration: TOML in, frozen and validated dataclasses out.

Every problem names the file and the dotted key, and all problems are reported at once.
``config.toml.example`` documents each key; a test loads it. The schema has one table per
identity (``[identities.NAME]``) so that several identities and key rotation fit without any
change to existing files.

The package, in the order a file is read:

* ``model``: what a configuration is (the frozen dataclasses, their limits, value syntax);
* ``loading``: ``load`` and ``parse``, and the [server], [socket], [metrics] and [publish]
  tables;
* ``identities``: the [identities.NAME] tables and their secrets;
* ``tables``: typed getters over one TOML table that record every problem with its key;
* ``dumping``: ``dump``, the inverse of ``parse`` (secrets left out).
"""

from __future__ import annotations

from tempmail.config.dumping import dump
from tempmail.config.loading import load, parse, resolve_path
from tempmail.config.model import (
    CONFIG_ENV,
    DEFAULT_PATH,
    DELIMITERS,
    LOCAL_PART_SYMBOLS,
    LOG_LEVELS,
    MAX_ADDRESS_LENGTH,
    MAX_UNIX_PATH,
    SECRET_ENV,
    WEAK_CODE_LENGTH,
    WEAK_SECRET_BYTES,
    Config,
    Identity,
    MetricsSettings,
    PublishSettings,
    ServerSettings,
    SocketSettings,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_PATH",
    "DELIMITERS",
    "LOCAL_PART_SYMBOLS",
    "LOG_LEVELS",
    "MAX_ADDRESS_LENGTH",
    "MAX_UNIX_PATH",
    "SECRET_ENV",
    "WEAK_CODE_LENGTH",
    "WEAK_SECRET_BYTES",
    "Config",
    "Identity",
    "MetricsSettings",
    "PublishSettings",
    "ServerSettings",
    "SocketSettings",
    "dump",
    "load",
    "parse",
    "resolve_path",
]
