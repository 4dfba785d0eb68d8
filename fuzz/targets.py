"""What the fuzzers check: one function per target, bytes in, an AssertionError on a bug.

Shared by the atheris harness (``fuzz_codec.py``) and the plain-Python fallback
(``random_fuzz.py``). Each target raises nothing for correct behaviour; anything else it
raises (including an exception of the wrong type from tempmail) is a finding.

Invariants (issue 5):

* the netstring decoder raises only :class:`NetstringError` subclasses, never buffers more
  than one incomplete frame once drained, stays broken after an error, and produces the same
  events whatever the input's split into reads;
* a server session answers every complete request with one well-formed reply, closes after a
  protocol error with one ``PERM``, and holds at most one bounded incomplete request;
* the client's reply parser raises only :class:`ProtocolError`;
* the lookup never raises and answers OK only for an address that is valid now.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Final

from harness import identity
from tempmail import config, generate, socketmap
from tempmail.errors import ProtocolError
from tempmail.handler import Handler, HandlerRef
from tempmail.lookup import Resolver
from tempmail.netstring import (
    END,
    NEED_DATA,
    NetstringDecoder,
    NetstringError,
    Oversized,
    Truncated,
)
from tempmail.session import Session
from tempmail.socketmap import MAX_REPLY_LENGTH, Status

# The session logs every protocol error; millions of them are noise here (and slow).
logging.disable(logging.CRITICAL)

#: A fixed instant: the set of valid addresses is the same in every run.
NOW: Final = dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC).timestamp()
RECIPIENT: Final = "owner@example.net"
_IDENTITY: Final = identity(
    "fuzzing secret that is long enough", recipient=RECIPIENT, tags=True, revoked_tags=["gone"]
)
CONFIG: Final = config.parse(
    {"server": {"max_query_length": 128}, "identities": {"default": _IDENTITY}}
)
IDENTITY: Final = CONFIG.identities[0]
HANDLER: Final = Handler(CONFIG, NOW)
RESOLVER: Final = Resolver(CONFIG.identities, "+", NOW)
#: Every address valid at NOW (both schemes, both days, tag "shop"), for seeds and checks.
VALID: Final = [
    str(address)
    for scheme in IDENTITY.accept
    for address in generate.current_addresses(IDENTITY, NOW, scheme=scheme)
] + [str(a) for a in generate.current_addresses(IDENTITY, NOW, tag="shop")]
_VALID_CODES: Final = {address.split("@")[0] for address in VALID}
_LENGTH_DIGITS: Final = len(str(MAX_REPLY_LENGTH))


def _chunks(data: bytes, sizes: bytes) -> list[bytes]:
    """Split ``data`` into reads whose sizes come from the fuzzer (1 to 256 bytes each)."""
    out, start, index = [], 0, 0
    while start < len(data):
        size = sizes[index % len(sizes)] + 1 if sizes else len(data)
        out.append(data[start : start + size])
        start += size
        index += 1
    return out


def decode_all(chunks: list[bytes], max_length: int, eof: bool) -> list[object]:
    """Every event; ends with the error type, "END" or "NEED_DATA". Checks the bounds."""
    decoder = socketmap.decoder(max_length)
    events: list[object] = []
    try:
        reads = [chunk for chunk in chunks if chunk]  # b"" would mean end of stream
        for chunk in [*reads, b""] if eof else reads:
            held = decoder.buffered
            decoder.feed(chunk)
            if decoder.buffered > held + len(chunk):
                raise AssertionError("feed() grew the buffer by more than it was given")
            if _drain(decoder, max_length, events):
                return events
    except NetstringError as exc:
        _check_stays_broken(decoder, exc)
        events.append(type(exc))
        return events
    events.append("NEED_DATA")
    return events


def _drain(decoder: NetstringDecoder, max_length: int, events: list[object]) -> bool:
    """Append events until NEED_DATA (False) or END (True)."""
    bound = max_length + _LENGTH_DIGITS + 1  # one incomplete frame
    while True:
        event = decoder.next_event()
        if event is NEED_DATA:
            if decoder.buffered > bound:
                raise AssertionError(f"{decoder.buffered} bytes buffered > {bound}")
            return False
        if event is END:
            events.append("END")
            return True
        if not isinstance(event, Oversized) and len(event) > max_length:
            raise AssertionError(f"unexpected event {event!r}")
        events.append(event)


def _check_stays_broken(decoder: NetstringDecoder, error: NetstringError) -> None:
    if decoder.buffered:
        raise AssertionError("the buffer was kept after an error")
    try:
        decoder.next_event()
    except NetstringError as again:
        if again is not error:
            raise AssertionError("a second error after the first") from None
    else:
        raise AssertionError("the decoder recovered after an error")


def split_header(data: bytes) -> tuple[int, bool, bytes, bytes]:
    """The fuzzer's choices, then the stream.

    Byte 0: bit 7 = end of stream after the data; bytes 1-2: max_length (mod 300); byte 3:
    how many read sizes follow (mod 8); then the read sizes; the rest is the stream.
    """
    if len(data) < 4:
        return 64, True, b"", data
    count = data[3] % 8
    return (
        int.from_bytes(data[1:3], "big") % 300,
        bool(data[0] & 0x80),
        data[4 : 4 + count],
        data[4 + count :],
    )


def target_decoder(data: bytes) -> None:
    """The decoder alone, fed whole, in fuzzer-chosen reads and byte by byte."""
    max_length, eof, sizes, stream = split_header(data)
    whole = decode_all([stream], max_length, eof)
    if decode_all(_chunks(stream, sizes), max_length, eof) != whole:
        raise AssertionError("the events depend on how the input was split")
    if len(stream) < 200:
        ones = [stream[i : i + 1] for i in range(len(stream))]
        if decode_all(ones, max_length, eof) != whole:
            raise AssertionError("byte-by-byte decoding differs")


def target_session(data: bytes) -> None:
    """A server session: every complete request gets exactly one well-formed reply."""
    _, _, sizes, stream = split_header(data)
    session = Session(HandlerRef(HANDLER))
    wire = bytearray()
    closed = False
    for chunk in [*_chunks(stream, sizes), b""]:
        written, closed = session.receive(chunk, NOW)
        wire += written
        if session.buffered > CONFIG.server.max_query_length + _LENGTH_DIGITS + 1:
            raise AssertionError(f"session holds {session.buffered} bytes")
        if closed:
            break
    if not closed:
        raise AssertionError("end of stream did not close the session")
    events = decode_all([stream], CONFIG.server.max_query_length, eof=True)
    requests = [e for e in events if isinstance(e, bytes | Oversized)]
    error = events[-1] if isinstance(events[-1], type) else None
    replies = _parse_replies(bytes(wire))
    expected = len(requests) + (error is not None and error is not Truncated)
    if len(replies) != expected:
        raise AssertionError(f"{len(replies)} replies to {expected} answerable requests")
    for request, reply in zip(requests, replies, strict=False):
        _check_reply(request, reply)
    if error is not None and error is not Truncated:
        last = replies[-1]
        if last.status is not Status.PERM or not last.data.startswith("malformed netstring: "):
            raise AssertionError(f"a protocol error was answered {last!r}")


def _check_reply(request: bytes | Oversized, reply: socketmap.Reply) -> None:
    if isinstance(request, Oversized):
        if reply != socketmap.NOTFOUND:
            raise AssertionError(f"an oversized request got {reply!r}")
        return
    name, space, key = request.partition(b" ")
    if not space or name != b"tempmail":
        if reply.status is not Status.PERM:
            raise AssertionError(f"{request!r} got {reply!r}")
        return
    if reply.status is Status.OK:
        local = key.lower().rpartition(b"@")[0].split(b"+")[0]
        if local.decode(errors="replace") not in _VALID_CODES:
            raise AssertionError(f"{key!r} was answered {reply!r}")
    elif reply.status is not Status.NOTFOUND:
        raise AssertionError(f"{key!r} was answered {reply!r}")


def _parse_replies(wire: bytes) -> list[socketmap.Reply]:
    decoder = socketmap.decoder()
    decoder.feed(wire)
    decoder.feed(b"")
    replies: list[socketmap.Reply] = []
    while (event := decoder.next_event()) is not END:
        if event is NEED_DATA or isinstance(event, Oversized):
            raise AssertionError(f"the server wrote {event!r}")
        replies.append(socketmap.parse_reply(event))
    return replies


def target_client(data: bytes) -> None:
    """What ``tempmail query`` does with a server's bytes: only ProtocolError may come out."""
    decoder = socketmap.decoder()
    decoder.feed(data)
    decoder.feed(b"")
    try:
        while (event := decoder.next_event()) is not END:
            if isinstance(event, bytes):
                reply = socketmap.parse_reply(event)
                if reply.wire != socketmap.Reply(reply.status, reply.data).wire:
                    raise AssertionError("a parsed reply does not round-trip")
    except ProtocolError:
        pass


def target_lookup(data: bytes) -> None:
    """Any key: no exception, and OK only for a valid address (any case, any extension)."""
    result = RESOLVER.resolve(data, NOW)
    if result.reply.status is Status.OK:
        _check_reply(b"tempmail " + data, result.reply)
    elif result.reply != socketmap.NOTFOUND:
        raise AssertionError(f"{data!r} was answered {result.reply!r}")


TARGETS: Final = (target_decoder, target_session, target_client, target_lookup)


def run_all(data: bytes) -> None:
    """One input through every target."""
    for target in TARGETS:
        target(data)
