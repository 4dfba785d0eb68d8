"""Address schemes: pure functions from (date, secret, length) to a local part.

``md5`` (legacy) equals PHP's ``substr(md5(date("Ymd") . $secret), 0, $length)``;
``hmac`` equals PHP's ``substr(hash_hmac('sha256', date('Ymd'), $secret), 0, $length)``.
Secrets are UTF-8 encoded; the date is ``YYYYMMDD`` in the identity's time zone.

Tagged codes (docs/schemes.md) carry what the server needs to check them with one HMAC: a day
hint, a key id, then HMAC-SHA256 over ``tag2/YYYYMMDD/tag``. The 1.x tagged codes (HMAC over
``YYYYMMDD/tag``, no hint) are kept for addresses handed out before the upgrade.
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


#: Hex digits of the day hint: the local date's day number modulo 16**3 = 4096, so the hint
#: names one date in any window of up to 4096 days (tag_window is at most 366).
DAY_HINT_DIGITS: Final = 3
_DAY_HINT_MODULUS: Final = 16**DAY_HINT_DIGITS
#: Hex digits of the key id that names the secret a tagged code was made with.
KEY_ID_DIGITS: Final = 1
#: What a tagged code carries before its HMAC digits.
TAG_PREFIX_DIGITS: Final = DAY_HINT_DIGITS + KEY_ID_DIGITS
#: The HMAC messages of key ids and tagged codes. Neither starts with a digit, so neither is
#: ever an untagged message (``YYYYMMDD``) or a 1.x tagged one (``YYYYMMDD/tag``).
_KEY_ID_MESSAGE: Final = b"key-id"
_TAG_MESSAGE_PREFIX: Final = b"tag2/"
_EPOCH_ORDINAL: Final = 719163  # dt.date(1970, 1, 1).toordinal()


def day_hint(day: dt.date) -> str:
    """The day hint of a tagged code: ``day``'s number since 1970-01-01, modulo 4096, in hex."""
    return f"{(day.toordinal() - _EPOCH_ORDINAL) % _DAY_HINT_MODULUS:03x}"


def key_id(secret: bytes) -> str:
    """The key id of a tagged code: the first hex digit of HMAC-SHA256(secret, "key-id").

    It tells the server which secret made a code, so that it computes one HMAC, not one per
    secret. It is the same for every code of a secret, so it reveals nothing about a date or
    a tag, and 4 bits of a PRF output reveal nothing useful about the secret.
    """
    return _hmac_digest(_KEY_ID_MESSAGE, secret)[:KEY_ID_DIGITS]


def tag_mac(day: dt.date, tag: str, secret: bytes, length: int) -> str:
    """The HMAC digits of a tagged code: HMAC-SHA256(secret, ``tag2/YYYYMMDD/tag``), cut."""
    _check_length(HMAC, length)
    _check_tag(tag)
    message = _TAG_MESSAGE_PREFIX + date_message(day) + b"/" + tag.encode()
    return _hmac_digest(message, secret)[:length]


def tagged_code(day: dt.date, tag: str, secret: bytes, length: int) -> str:
    """The code of a tagged address ``TAG.CODE``: day hint, key id, then ``length`` HMAC digits.

    Only the hmac scheme has tagged codes. The code is ``length + 4`` digits long, so it is
    never mistaken for a 1.x tagged code (``length`` digits) of the same identity.
    """
    return day_hint(day) + key_id(secret) + tag_mac(day, tag, secret, length)


def legacy_tagged_code(day: dt.date, tag: str, secret: bytes, length: int) -> str:
    """The code of a tempmail 1.x tagged address: HMAC-SHA256 over ``YYYYMMDD/tag``, cut.

    Checking one means trying every date and secret; only addresses handed out before the
    upgrade (``legacy_tags_until``) are checked this way.
    """
    _check_length(HMAC, length)
    _check_tag(tag)
    return _hmac_digest(date_message(day) + b"/" + tag.encode(), secret)[:length]


def _check_tag(tag: str) -> None:
    if not TAG_PATTERN.fullmatch(tag):
        raise ValueError(f"invalid tag {tag!r}")


def _check_length(scheme: Scheme, length: int) -> None:
    if not 1 <= length <= scheme.max_length:
        raise ValueError(f"{scheme.name} codes are 1 to {scheme.max_length} characters long")
