"""Addresses computed on the host by tempmail itself, from an identity table and its secrets.

The tests compute an address here and use it against a server in a container; both must
agree on the day, so the helpers that wait past a midnight are here too.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
from typing import Any
from zoneinfo import ZoneInfo

from tempmail import config as config_module
from tempmail import generate, schemes


def identity_from(
    table: dict[str, Any], secrets: list[str], name: str = "default"
) -> config_module.Identity:
    """An identity table (as in a config file) parsed by tempmail with these secrets inline."""
    data = copy.deepcopy(table)
    for key in ("secret", "secret_file", "previous_secrets", "previous_secret_files"):
        data.pop(key, None)
    data["secret"] = secrets[0]
    if secrets[1:]:
        data["previous_secrets"] = secrets[1:]
    return config_module.parse({"identities": {name: data}}, environ={}).identities[0]


def address_of(
    table: dict[str, Any],
    secret: str,
    days_ago: int = 0,
    *,
    tag: str | None = None,
    scheme: str | None = None,
) -> str:
    """The address of ``table``'s identity with ``secret`` on the local day ``days_ago``."""
    identity = identity_from(table, [secret])
    today = dt.datetime.now(identity.timezone).date()
    chosen = schemes.SCHEMES[scheme] if scheme else None
    day = today - dt.timedelta(days=days_ago)
    return str(generate.address_on(identity, day, scheme=chosen, tag=tag))


def wait_past_midnight(margin: float, timezone: dt.tzinfo = dt.UTC) -> None:
    """Sleep past the next midnight in ``timezone`` if it is less than ``margin`` seconds away,
    so that an address computed now is still the day's when it is used."""
    now = dt.datetime.now(timezone)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(0), tzinfo=timezone)
    left = (midnight - now).total_seconds()
    if left < margin:
        time.sleep(left + 1)


def wait_past_utc_midnight(margin: float) -> None:
    """Sleep past the next UTC midnight if it is less than ``margin`` seconds away."""
    wait_past_midnight(margin, dt.UTC)


def zone_of(table: dict[str, Any]) -> dt.tzinfo:
    """The time zone of an identity table (UTC when it names none, as tempmail's default)."""
    return ZoneInfo(table.get("timezone", "UTC"))
