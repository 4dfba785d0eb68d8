"""The inverse of parsing: a :class:`Config` back to TOML data, secrets left out."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

from tempmail import schemes

if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed import DataclassInstance

from tempmail.config.model import (
    Config,
    Identity,
)


def dump(config: Config) -> dict[str, Any]:
    """The TOML data of ``config``, the inverse of :func:`parse`.

    ``parse(dump(c), path=c.path)`` equals ``c`` when its secrets come from files (or from the
    same environment): secrets are never written. ``secret_file`` and
    ``previous_secret_files`` keep their (absolute) paths, an inline ``secret`` or
    ``previous_secrets`` is left out, and whoever means to write one adds it. Every setting
    is written, defaults included, so a generated file shows where the socket is and how
    addresses are made; only ``accept`` and ``tag_window`` are left out while they equal
    what they default to (``[scheme]``, ``window``). The result holds only dicts, lists,
    str, int, float, bool and dates, ready for tomli-w.
    """
    data: dict[str, Any] = {
        field.name: _dump_fields(getattr(config, field.name))  # [server], [socket], ...
        for field in dataclasses.fields(config)
        if field.name not in _NOT_SECTIONS
    }
    data["identities"] = {identity.name: _dump_identity(identity) for identity in config.identities}
    return data


#: Fields of Config that are not sections: where and how it was read, and the identities.
_NOT_SECTIONS: Final = frozenset({"path", "warnings", "files", "identities"})
#: Fields of Identity that are not keys of its table.
_NOT_IDENTITY_KEYS: Final = frozenset({"name", "secrets", "domains"})


def _dump_identity(identity: Identity) -> dict[str, Any]:
    table: dict[str, Any] = (
        {"domain": identity.domain}
        if len(identity.domains) == 1
        else {"domains": list(identity.domains)}
    )
    table |= _dump_fields(identity, skip=_NOT_IDENTITY_KEYS)
    # Keys whose default follows another key are left out while they follow it, so that they
    # keep following it when that key is edited later.
    if identity.accept == (identity.scheme,):
        del table["accept"]
    if identity.tag_window == identity.window:
        del table["tag_window"]
    return table


def _dump_fields(settings: DataclassInstance, skip: Collection[str] = ()) -> dict[str, Any]:
    """Each field of a settings dataclass as a TOML value; None (unset) is left out."""
    table = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name in _FILE_MODES:
            table[field.name] = f"{value:04o}"
        elif field.name not in skip and value is not None:
            table[field.name] = _toml_value(value, field.name)
    return table


#: Fields that hold a file mode: an int here, an octal string in the file ("0660").
_FILE_MODES: Final = frozenset({"mode"})


#: How values that TOML has no type for are written (parse() reads them back).
_TOML_FORMS: Final[tuple[tuple[type, Callable[[Any], str]], ...]] = (
    (Path, str),
    (enum.Enum, lambda member: member.value),
    (schemes.Scheme, lambda scheme: scheme.name),
    (ZoneInfo, lambda zone: zone.key),
)


def _toml_value(value: object, name: str) -> Any:  # noqa: ANN401 - any TOML value
    if isinstance(value, bool | int | float | str | dt.date):
        return value
    if isinstance(value, tuple | frozenset):
        items = [_toml_value(item, name) for item in value]
        return sorted(items) if isinstance(value, frozenset) else items
    for kind, form in _TOML_FORMS:
        if isinstance(value, kind):
            return form(value)
    # A new setting of a new type: say which, rather than write something parse() refuses.
    message = f"config.dump: no TOML form for {name} ({type(value).__name__})"
    raise TypeError(message)
