"""The status request: what a running server serves, checked end to end, for health probes.

A client sends the request ``_status KEY`` (any key) on the lookup socket. ``_status`` can never
be a configured map name (config/loading.py requires a letter or digit first), so Postfix never
asks it and no sender can reach it through Postfix. The reply is ``OK`` with one line of JSON:

* ``map_name``, ``version``, ``pid``;
* ``config``: the generation being served (1 at start, +1 per successful reload), when it was
  loaded, and from which file;
* ``reloads``: how many succeeded and failed, and whether the last one failed and why (a broken
  file on disk is visible here while the previous configuration keeps serving);
* ``identities``: for each, its name, domains and ``self_test``: today's address, computed from
  the configuration being served and looked up through the same table as Postfix's lookups,
  resolves to the identity's recipient (``"ok"``) or not (``"failed"``).

Health probes (``tempmail query --self-test --socket S --map N``) therefore test the server and
the configuration it serves, never the file on disk. No address, recipient or secret is ever
part of the reply: a valid address must not end up in probe output or in an orchestrator's
events.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from tempmail import generate, socketmap, version
from tempmail.socketmap import Status

if TYPE_CHECKING:
    from tempmail.config import Config
    from tempmail.lookup import Resolver
    from tempmail.stats import Stats

#: The map name of status requests: not a valid configured map name, so never Postfix's.
STATUS_MAP: Final = "_status"


@dataclass(frozen=True, slots=True)
class IdentityHealth:
    """The self-test of one identity: its name and whether today's address resolved."""

    name: str
    ok: bool


def self_test(config: Config, resolver: Resolver, now: float) -> tuple[IdentityHealth, ...]:
    """Look up today's address of every identity through ``resolver``, as a lookup would."""
    results = []
    for identity in config.identities:
        address = generate.current_addresses(identity, now)[0]
        result = resolver.resolve(str(address).encode(), now)
        ok = result.reply.status is Status.OK and result.reply.data == identity.recipient
        results.append(IdentityHealth(identity.name, ok))
    return tuple(results)


def report(config: Config, resolver: Resolver, stats: Stats, now: float) -> dict[str, Any]:
    """The status of a server serving ``config``, as a JSON-ready dictionary."""
    health = {h.name: h.ok for h in self_test(config, resolver, now)}
    return {
        "version": version(),
        "pid": os.getpid(),
        "map_name": config.server.map_name,
        "config": {
            "generation": stats.config_generation,
            "loaded_at": _iso(stats.config_loaded_at),
            "file": str(config.path) if config.path else None,
        },
        "reloads": {
            "ok": stats.reloads_ok,
            "failed": stats.reloads_failed,
            "last_ok": stats.last_reload_ok,
            "last_error": stats.last_reload_error or None,
        },
        "identities": [
            {
                "name": identity.name,
                "domains": list(identity.domains),
                "self_test": "ok" if health[identity.name] else "failed",
            }
            for identity in config.identities
        ],
    }


def reply(config: Config, resolver: Resolver, stats: Stats, now: float) -> socketmap.Reply:
    """The ``OK`` reply to a status request: the report as one line of JSON.

    A reply must fit Postfix's limit; with thousands of identities the domain lists go first,
    then the identity list (the counts of healthy and failed identities stay).
    """
    data = report(config, resolver, stats, now)
    text = _dumps(data)
    if len(text) <= _MAX_DATA:
        return socketmap.ok(text)
    for identity in data["identities"]:
        del identity["domains"]
    text = _dumps(data)
    if len(text) <= _MAX_DATA:
        return socketmap.ok(text)
    identities = data.pop("identities")
    data["identities_ok"] = sum(i["self_test"] == "ok" for i in identities)
    data["identities_failed"] = len(identities) - data["identities_ok"]
    return socketmap.ok(_dumps(data))


#: Room for the JSON in a reply: the limit less "OK " and a margin for non-ASCII names.
_MAX_DATA: Final = socketmap.MAX_REPLY_LENGTH - 1000


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True)


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def parse(reply: socketmap.Reply) -> dict[str, Any]:
    """The report in a status reply, for clients; raises ValueError when it is not one."""
    if reply.status is not Status.OK:
        raise ValueError(f"{reply.status.value} {reply.data}".strip())
    try:
        data = json.loads(reply.data)
    except json.JSONDecodeError:
        raise ValueError("the reply is not a status report") from None
    if not isinstance(data, dict) or "config" not in data or "reloads" not in data:
        raise ValueError("the reply is not a status report")
    return data
