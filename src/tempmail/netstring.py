"""Sans-I/O netstring codec (D. J. Bernstein's ``LENGTH:PAYLOAD,`` framing).

The decoder only buffers: ``feed(data)`` appends bytes (``b""`` means end of stream) and
``next_event()`` returns a payload, :class:`Oversized`, ``NEED_DATA`` or ``END``. It never
raises for "need more bytes"; it raises a :class:`NetstringError` subclass for input that can
never become a valid netstring, as soon as that is certain.

Limits:

* ``max_length``: payloads longer than this are *skipped* without being buffered and reported
  as :class:`Oversized`, so a server can answer them instead of dropping the connection.
* ``hard_limit``: a declared length above this is a protocol error, found while the digits
  arrive. The socketmap protocol's limit is ``socketmap.MAX_REPLY_LENGTH`` (Postfix's).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from tempmail.errors import ProtocolError


class Marker(enum.Enum):
    """Non-payload results of :meth:`NetstringDecoder.next_event`."""

    NEED_DATA = "NEED_DATA"
    END = "END"


NEED_DATA: Final = Marker.NEED_DATA
END: Final = Marker.END

_COLON: Final = ord(":")
_COMMA: Final = ord(",")
_ZERO: Final = ord("0")


@dataclass(frozen=True, slots=True)
class Oversized:
    """A well-formed netstring whose payload exceeded ``max_length`` and was discarded."""

    length: int


class NetstringError(ProtocolError):
    """Input that can never become a valid netstring; the stream cannot be resynchronised."""


class BadLength(NetstringError):
    """The length prefix is empty, has a non-digit, or has a leading zero."""


class LengthLimitExceeded(NetstringError):
    """The declared length is above the decoder's hard limit."""


class BadTerminator(NetstringError):
    """The byte after the payload is not ``,``."""


class Truncated(NetstringError):
    """The stream ended inside a netstring."""


def encode(payload: bytes) -> bytes:
    """Frame ``payload`` as a netstring."""
    return b"%d:%b," % (len(payload), payload)


class NetstringDecoder:
    """Incremental netstring decoder with bounded buffering."""

    __slots__ = ("_buf", "_eof", "_error", "_hard_limit", "_max_digits", "_max_length", "_skip")

    def __init__(self, *, max_length: int, hard_limit: int) -> None:
        if not 0 <= max_length <= hard_limit:
            raise ValueError(f"max_length must be between 0 and {hard_limit}")
        self._max_length = max_length
        self._hard_limit = hard_limit
        self._max_digits = len(str(hard_limit))
        self._buf = bytearray()
        self._eof = False
        self._error: NetstringError | None = None
        # While skipping an oversized payload: (declared length, bytes still to discard).
        self._skip: tuple[int, int] | None = None

    @property
    def max_length(self) -> int:
        """Payloads longer than this are skipped and reported as :class:`Oversized`."""
        return self._max_length

    @property
    def buffered(self) -> int:
        """Bytes held in the buffer: at most one incomplete frame once events are drained."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Add received bytes; an empty ``data`` marks the end of the stream."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise ValueError("data fed after end of stream")
        skip = self._skip
        if skip is not None and skip[1] and not self._buf:
            # Discard an oversized payload as it arrives instead of buffering it.
            dropped = min(skip[1], len(data))
            self._skip = (skip[0], skip[1] - dropped)
            data = data[dropped:]
        self._buf += data

    def next_event(self) -> bytes | Oversized | Marker:
        """Return the next payload, an :class:`Oversized` marker, ``NEED_DATA`` or ``END``."""
        if self._error is not None:
            raise self._error
        try:
            if self._skip is not None:
                return self._finish_skip()
            return self._next_frame()
        except NetstringError as exc:
            self._error = exc
            self._buf.clear()
            raise

    def _next_frame(self) -> bytes | Oversized | Marker:
        buf = self._buf
        if not buf:
            return END if self._eof else NEED_DATA
        colon = buf.find(b":", 0, self._max_digits + 1)
        if colon < 0:
            self._check_partial_length(buf)
            return self._need_more()
        if colon == 0:
            raise BadLength("netstring length is empty")
        digits = buf[:colon]
        if not digits.isdigit():
            raise BadLength(f"netstring length {bytes(digits)!r} is not a decimal number")
        if colon > 1 and buf[0] == _ZERO:
            raise BadLength(f"netstring length {bytes(digits)!r} has a leading zero")
        length = int(digits)
        if length > self._hard_limit:
            raise LengthLimitExceeded(
                f"netstring length {length} exceeds the limit of {self._hard_limit}"
            )
        start = colon + 1
        if length > self._max_length:
            available = min(length, len(buf) - start)
            del buf[: start + available]
            self._skip = (length, length - available)
            return self._finish_skip()
        end = start + length
        if len(buf) <= end:
            return self._need_more()
        if buf[end] != _COMMA:
            raise BadTerminator(f"netstring of length {length} is not terminated by ','")
        payload = bytes(buf[start:end])
        del buf[: end + 1]
        return payload

    def _check_partial_length(self, buf: bytearray) -> None:
        """Reject a length prefix as soon as no more bytes could make it valid."""
        head = bytes(buf[: self._max_digits + 1])
        if not head.isdigit():
            raise BadLength(f"netstring length {head!r} is not a decimal number")
        if len(head) > 1 and head[0] == _ZERO:
            raise BadLength(f"netstring length {head!r} has a leading zero")
        if len(head) > self._max_digits:
            raise LengthLimitExceeded(
                f"netstring length {head.decode()}... exceeds the limit of {self._hard_limit}"
            )

    def _finish_skip(self) -> Oversized | Marker:
        assert self._skip is not None  # noqa: S101 - internal invariant
        length, remaining = self._skip
        buf = self._buf
        if remaining:
            dropped = min(remaining, len(buf))
            del buf[:dropped]
            remaining -= dropped
            self._skip = (length, remaining)
            if remaining:
                return self._need_more()
        if not buf:
            return self._need_more()
        if buf[0] != _COMMA:
            raise BadTerminator(f"netstring of length {length} is not terminated by ','")
        del buf[:1]
        self._skip = None
        return Oversized(length)

    def _need_more(self) -> Marker:
        if self._eof:
            raise Truncated("stream ended inside a netstring")
        return NEED_DATA
