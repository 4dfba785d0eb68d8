"""Sans-I/O socketmap messages, as specified in Postfix's socketmap_table(5).

A request is one netstring ``name SP key``; a reply is one netstring ``OK data``,
``NOTFOUND `` (with the space), ``TEMP reason``, ``TIMEOUT reason`` or ``PERM reason``.
Postfix refuses replies longer than ``socketmap_max_reply_size`` (100000 by default), so no
reply built here is longer than that.
"""

from __future__ import annotations

import enum
from typing import Final

from tempmail import netstring
from tempmail.errors import ProtocolError

#: Postfix's default socketmap_max_reply_size: the longest reply payload a client accepts.
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


class Reply:
    """An immutable reply; its wire encoding is computed once, at construction."""

    __slots__ = ("data", "status", "wire")

    status: Status
    data: str
    wire: bytes

    def __init__(self, status: Status, data: str = "") -> None:
        payload = f"{status.value} {data}".encode()
        if len(payload) > MAX_REPLY_LENGTH:
            if status in (Status.OK, Status.NOTFOUND):
                raise ValueError(f"an {status.value} reply must fit in {MAX_REPLY_LENGTH} bytes")
            # A reason is only informative: shorten it rather than break the protocol.
            payload = payload[:MAX_REPLY_LENGTH].decode(errors="ignore").encode()
            data = payload.decode()[len(status.value) + 1 :]
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "wire", netstring.encode(payload))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Reply):
            return NotImplemented
        return self.wire == other.wire

    def __hash__(self) -> int:
        return hash(self.wire)

    def __repr__(self) -> str:
        return f"Reply({self.status.value} {self.data!r})"


NOTFOUND: Final = Reply(Status.NOTFOUND)


def ok(data: str) -> Reply:
    """A successful lookup result."""
    return Reply(Status.OK, data)


def temp(reason: str) -> Reply:
    """A temporary failure: Postfix defers the mail and tries again later."""
    return Reply(Status.TEMP, _one_line(reason))


def perm(reason: str) -> Reply:
    """A permanent failure; Postfix logs the reason and defers (it is a configuration error)."""
    return Reply(Status.PERM, _one_line(reason))


def _one_line(reason: str) -> str:
    return " ".join(reason.split())


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
