"""Address schemes: pure functions from (date, secret, length) to a local part.

``md5`` (legacy) equals PHP's ``substr(md5(date("Ymd") . $secret), 0, $length)``;
``hmac`` equals PHP's ``substr(hash_hmac('sha256', date('Ymd'), $secret), 0, $length)``.
Secrets are UTF-8 encoded; the date is ``YYYYMMDD`` in the identity's time zone.
Tagged codes (see docs/schemes.md) use the HMAC message ``YYYYMMDD/tag``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import datetime as dt


@dataclass(frozen=True, slots=True)
class Scheme:
    """A named way of turning (date, secret) into a code."""

    name: str
    max_length: int  # hex digits in the digest
    digest: Callable[[bytes, bytes], str]  # (message, secret) -> lowercase hex digest


def _md5_digest(message: bytes, secret: bytes) -> str:
    # Legacy: the date and the secret are simply concatenated, as the PHP one-liner does.
    return hashlib.md5(message + secret, usedforsecurity=False).hexdigest()


def _hmac_digest(message: bytes, secret: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


MD5: Final = Scheme("md5", 32, _md5_digest)
HMAC: Final = Scheme("hmac", 64, _hmac_digest)
SCHEMES: Final[dict[str, Scheme]] = {MD5.name: MD5, HMAC.name: HMAC}

#: Tags are what an owner writes before the code: short, lowercase, safe in any MTA.
TAG_PATTERN: Final = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,30}[a-z0-9])?")


def date_message(day: dt.date) -> bytes:
    """The ``YYYYMMDD`` form of ``day``, as PHP's ``date("Ymd")`` prints it."""
    return b"%04d%02d%02d" % (day.year, day.month, day.day)


def code(scheme: Scheme, day: dt.date, secret: bytes, length: int) -> str:
    """The local part of the address valid on ``day``."""
    _check_length(scheme, length)
    return scheme.digest(date_message(day), secret)[:length]


def tagged_code(day: dt.date, tag: str, secret: bytes, length: int) -> str:
    """The code of a tagged address ``TAG.CODE``: HMAC-SHA256 over ``YYYYMMDD/tag``.

    Only the hmac scheme has tagged codes: the message differs from an untagged one (which is
    exactly eight digits), so a tagged code never equals an untagged one by construction.
    """
    _check_length(HMAC, length)
    if not TAG_PATTERN.fullmatch(tag):
        raise ValueError(f"invalid tag {tag!r}")
    return _hmac_digest(date_message(day) + b"/" + tag.encode("ascii"), secret)[:length]


def _check_length(scheme: Scheme, length: int) -> None:
    if not 1 <= length <= scheme.max_length:
        raise ValueError(f"{scheme.name} codes are 1 to {scheme.max_length} characters long")
