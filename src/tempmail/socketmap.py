"""Sans-I/O socketmap messages, as specified in Postfix's socketmap_table(5).

A request is one netstring ``name SP key``; a reply is one netstring ``OK data``,
``NOTFOUND `` (with the space), ``TEMP reason``, ``TIMEOUT reason`` or ``PERM reason``.
Postfix refuses replies longer than ``socketmap_max_reply_size`` (100000 by default), so no
reply built here is longer than that.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from tempmail import netstring
from tempmail.errors import ProtocolError

#: Postfix's default socketmap_max_reply_size: the longest reply payload Postfix reads. It is
#: also the decoders' hard limit for requests (``NetstringDecoder(hard_limit=...)``): no
#: Postfix request comes near it, so one bound covers every netstring either side sends.
MAX_REPLY_LENGTH: Final = 100_000


class Status(enum.Enum):
    """The status word that starts every reply."""

    OK = "OK"
    NOTFOUND = "NOTFOUND"
    TEMP = "TEMP"
    TIMEOUT = "TIMEOUT"
    PERM = "PERM"


class MalformedRequest(ProtocolError):
    """A well-framed request that is not ``name SP key``."""


class MalformedReply(ProtocolError):
    """A reply that is not a socketmap reply."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply; its wire encoding is computed once, at construction (replies are reused).

    No reply may be longer than Postfix reads (:data:`MAX_REPLY_LENGTH`): :func:`temp` and
    :func:`perm` shorten their reasons to fit; anything else that long raises ValueError.
    """

    status: Status
    data: str = ""
    #: The whole netstring, as sent: derived from ``status`` and ``data``.
    wire: bytes = field(init=False, compare=False)

    def __post_init__(self) -> None:
        payload = f"{self.status.value} {self.data}".encode()
        if len(payload) > MAX_REPLY_LENGTH:
            raise ValueError(f"an {self.status.value} reply must fit in {MAX_REPLY_LENGTH} bytes")
        # The one derived field of a frozen dataclass is set here, once.
        object.__setattr__(self, "wire", netstring.encode(payload))

    def __repr__(self) -> str:
        return f"Reply({self.status.value} {self.data!r})"


NOTFOUND: Final = Reply(Status.NOTFOUND)


def ok(data: str) -> Reply:
    """A successful lookup result."""
    return Reply(Status.OK, data)


def temp(reason: str) -> Reply:
    """A temporary failure: Postfix defers the mail and tries again later."""
    return Reply(Status.TEMP, _reason(Status.TEMP, reason))


def perm(reason: str) -> Reply:
    """A permanent failure; Postfix logs the reason and defers (it is a configuration error)."""
    return Reply(Status.PERM, _reason(Status.PERM, reason))


def _reason(status: Status, reason: str) -> str:
    """``reason`` on one line, shortened to fit a reply: a reason is only informative."""
    text = " ".join(reason.split())
    encoded = text.encode()
    room = MAX_REPLY_LENGTH - len(status.value) - 1
    if len(encoded) <= room:
        return text
    return encoded[:room].decode(errors="ignore")  # never a character cut in half


def decoder(max_length: int = MAX_REPLY_LENGTH) -> netstring.NetstringDecoder:
    """A decoder of socketmap netstrings (requests or replies).

    Payloads longer than ``max_length`` are skipped and reported as ``Oversized``; a declared
    length above Postfix's limit is a protocol error as soon as its digits arrive.
    """
    return netstring.NetstringDecoder(max_length=max_length, hard_limit=MAX_REPLY_LENGTH)


def parse_request(payload: bytes) -> tuple[bytes, bytes]:
    """Split a request payload into (map name, key) at the first space."""
    name, space, key = payload.partition(b" ")
    if not space:
        raise MalformedRequest("request has no space between map name and key")
    return name, key


def encode_request(name: str, key: str) -> bytes:
    """Frame a request as the Postfix client does."""
    return netstring.encode(f"{name} {key}".encode())


def parse_reply(payload: bytes) -> Reply:
    """Parse a reply payload (as a client); Postfix also accepts a status without the space."""
    word, _, rest = payload.partition(b" ")
    try:
        status = Status(word.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedReply(f"unknown reply status {word[:20]!r}") from None
    try:
        data = rest.decode()
    except UnicodeDecodeError:
        raise MalformedReply("reply data is not UTF-8") from None
    return Reply(status, data)
