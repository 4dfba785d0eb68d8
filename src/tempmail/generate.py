"""Which addresses an identity has: pure functions of (identity, instant or date)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tempmail import schemes, window

if TYPE_CHECKING:
    import datetime as dt

    from tempmail.config import Identity


@dataclass(frozen=True, slots=True)
class Address:
    """One temporary address and where it comes from."""

    local: str
    domain: str
    day: dt.date
    scheme: str
    identity: str
    tag: str | None = None

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def address_on(
    identity: Identity,
    day: dt.date,
    *,
    scheme: schemes.Scheme | None = None,
    tag: str | None = None,
    secret_index: int = 0,
) -> Address:
    """The address ``identity`` hands out on ``day`` (at its first domain, first secret)."""
    scheme = scheme or identity.scheme
    secret = identity.secrets[secret_index].reveal()
    if tag is None:
        local = schemes.code(scheme, day, secret, identity.length)
    else:
        local = f"{tag}.{schemes.tagged_code(day, tag, secret, identity.length)}"
        scheme = schemes.HMAC
    return Address(local, identity.domain, day, scheme.name, identity.name, tag)


def current_addresses(
    identity: Identity,
    now: float,
    *,
    scheme: schemes.Scheme | None = None,
    tag: str | None = None,
) -> list[Address]:
    """The addresses valid at ``now``, today's first."""
    days = identity.window if tag is None else identity.tag_window
    span = window.span_at(now, identity.timezone, days)
    return [address_on(identity, day, scheme=scheme, tag=tag) for day in span.dates]
