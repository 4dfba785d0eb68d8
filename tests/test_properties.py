"""Property tests (hypothesis) of the codec, the session, the lookup and a live server.

The invariants of issue 5: the codec never raises anything but its own error types and never
buffers more than its limit; how the input is split into reads never changes the outcome; the
server never crashes or stops answering other clients, whatever one client sends.
The long fuzzing run is in fuzz/ (atheris); these run in a few seconds with the normal suite.
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from helpers import RECIPIENT, FakeClock, StartServer, config_data, wait_until
from helpers_hostile import (
    NOW,
    addresses,
    baseline,
    ok,
    parse_replies,
    request,
    settled,
)
from tempmail import generate, netstring, socketmap
from tempmail.config import parse
from tempmail.handler import Handler, HandlerRef
from tempmail.lookup import Resolver
from tempmail.netstring import (
    END,
    NEED_DATA,
    NetstringError,
    Oversized,
    Truncated,
)
from tempmail.session import Session
from tempmail.socketmap import MAX_REPLY_LENGTH, Status

if TYPE_CHECKING:
    from collections.abc import Iterable

#: 200 examples per property keeps the suite fast; TEMPMAIL_HYPOTHESIS_EXAMPLES runs deeper.
EXAMPLES = int(os.environ.get("TEMPMAIL_HYPOTHESIS_EXAMPLES", "200"))
FAST = settings(max_examples=EXAMPLES, deadline=None)
MAX_LENGTH = 64

Event = bytes | Oversized | type[NetstringError] | str

PLAIN = parse(config_data()).identities[0]  # accepts hmac and md5, window 2
TAGGED = parse(config_data(tags=True)).identities[0]
#: Requests the server answers OK (today's and yesterday's, plain and tagged) or NOTFOUND.
REQUESTS = [
    request(str(address))
    for address in [
        *generate.current_addresses(PLAIN, NOW),
        *generate.current_addresses(TAGGED, NOW, tag="shop"),
    ]
] + [request("nobody@example.org"), request("example.org"), request(b"x" * 600)]


def _split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def _decode(chunks: list[bytes], *, eof: bool, max_length: int = MAX_LENGTH) -> list[Event]:
    """Every event of a decoder fed ``chunks``; the last is an error type, END or NEED_DATA.

    Checks the buffering bound: once the events are drained the decoder holds at most one
    incomplete frame (6 length digits, the colon and up to ``max_length`` payload bytes).
    """
    decoder = socketmap.decoder(max_length)
    bound = max_length + len(str(MAX_REPLY_LENGTH)) + 1  # one incomplete frame
    events: list[Event] = []
    try:
        for chunk in [*filter(None, chunks), b""] if eof else filter(None, chunks):
            held = decoder.buffered
            decoder.feed(chunk)
            assert decoder.buffered <= held + len(chunk)  # skipped bytes are never added
            while True:
                event = decoder.next_event()
                if event is NEED_DATA:
                    assert decoder.buffered <= bound
                    break
                if event is END:
                    events.append("END")
                    return events
                assert isinstance(event, bytes | Oversized)
                events.append(event)
    except NetstringError as exc:  # anything else fails the test
        events.append(type(exc))
        assert decoder.buffered == 0
        return events
    events.append("NEED_DATA")
    return events


payloads = st.lists(st.binary(max_size=2 * MAX_LENGTH), max_size=8)
cut_points = st.lists(st.integers(min_value=0, max_value=10_000), max_size=20)

# Bytes that look like netstrings often enough to reach every branch of the decoder.
netstringish = st.lists(
    st.one_of(
        st.binary(max_size=12),
        st.sampled_from([b":", b",", b"0", b"00", b"1", b"9", b";", b"\x00", b" ", b"100000"]),
        st.sampled_from(REQUESTS),
        st.builds(netstring.encode, st.binary(max_size=2 * MAX_LENGTH)),
        st.integers(min_value=0, max_value=2 * MAX_REPLY_LENGTH).map(lambda n: b"%d:" % n),
    ),
    max_size=10,
).map(b"".join)


@FAST
@given(payloads, cut_points)
def test_encoded_payloads_decode_whatever_the_reads(items: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(netstring.encode(p) for p in items)
    expected: list[Event] = [p if len(p) <= MAX_LENGTH else Oversized(len(p)) for p in items]
    assert _decode(_split(wire, cuts), eof=True) == [*expected, "END"]


@FAST
@given(netstringish, cut_points, st.booleans())
def test_any_input_gives_the_same_events_however_it_is_split(
    data: bytes, cuts: list[int], eof: bool
) -> None:
    whole = _decode([data], eof=eof)
    assert _decode(_split(data, cuts), eof=eof) == whole
    assert _decode([data[i : i + 1] for i in range(len(data))], eof=eof) == whole


@FAST
@given(st.binary(max_size=300), cut_points)
def test_random_bytes_raise_only_netstring_errors(data: bytes, cuts: list[int]) -> None:
    events = _decode(_split(data, cuts), eof=True)
    assert events[-1] == "END" or (
        isinstance(events[-1], type) and issubclass(events[-1], NetstringError)
    )


@FAST
@given(st.integers(min_value=MAX_LENGTH + 1, max_value=MAX_REPLY_LENGTH), cut_points)
def test_oversized_payloads_are_never_buffered(length: int, cuts: list[int]) -> None:
    wire = netstring.encode(b"z" * length) + netstring.encode(b"after")
    assert _decode(_split(wire, cuts), eof=True) == [Oversized(length), b"after", "END"]


@FAST
@given(st.lists(st.binary(max_size=2 * MAX_LENGTH), min_size=1, max_size=5), st.integers())
def test_eof_inside_a_frame_is_truncated(items: list[bytes], cut: int) -> None:
    head = b"".join(netstring.encode(p) for p in items[:-1])
    last = netstring.encode(items[-1])
    partial = last[: 1 + cut % (len(last) - 1)]  # at least one byte, never the whole frame
    expected: list[Event] = [p if len(p) <= MAX_LENGTH else Oversized(len(p)) for p in items[:-1]]
    assert _decode([head + partial], eof=True) == [*expected, Truncated]


# --- the session: bytes in, well-formed replies out ----------------------------------------

_HANDLER = Handler(parse(config_data(tags=True)), NOW)


@FAST
@given(netstringish, cut_points)
def test_session_answers_every_request_with_a_well_formed_reply(
    data: bytes, cuts: list[int]
) -> None:
    session = Session(HandlerRef(_HANDLER))
    out: list[bytes] = []
    closed = False
    for chunk in [*_split(data, cuts), b""]:
        wire, closed = session.receive(chunk, NOW)
        out.append(wire)
        assert session.buffered <= 512 + 7
        if closed:
            break
    assert closed
    replies = parse_replies(b"".join(out))
    requests = _decode([data], eof=True, max_length=512)
    answered = [e for e in requests if isinstance(e, bytes | Oversized)]
    protocol_error = isinstance(requests[-1], type) and requests[-1] is not Truncated
    assert len(replies) == len(answered) + protocol_error
    if protocol_error:
        assert replies[-1].status is Status.PERM
        assert replies[-1].data.startswith("malformed netstring: ")
    for reply in replies:
        assert reply.status in (Status.OK, Status.NOTFOUND, Status.PERM)
        assert reply.status is not Status.OK or reply.data.startswith(RECIPIENT.split("@")[0])


# --- the lookup ---------------------------------------------------------------------------

_RESOLVER = Resolver((PLAIN,), "+", NOW)
_ALL_VALID = {
    address.local
    for scheme in PLAIN.accept
    for address in generate.current_addresses(PLAIN, NOW, scheme=scheme)
}
_OK = socketmap.ok(RECIPIENT)


@FAST
@given(st.binary(max_size=80))
def test_arbitrary_keys_are_not_found(key: bytes) -> None:
    local = key.lower().rpartition(b"@")[0]
    assume(not any(local.startswith(code.encode()) for code in _ALL_VALID))
    assert _RESOLVER.resolve(key, NOW).reply.status is Status.NOTFOUND


@FAST
@given(
    st.sampled_from(sorted(_ALL_VALID)),
    st.lists(st.booleans(), min_size=8, max_size=8),
    st.text(st.characters(codec="utf-8", exclude_characters="@"), max_size=20),
)
def test_valid_codes_match_in_any_case_with_any_extension(
    local: str, upper: list[bool], extension: str
) -> None:
    cased = "".join(c.upper() if u else c for c, u in zip(local, upper, strict=True))
    for key in (f"{cased}@Example.ORG", f"{cased}+{extension}@example.org"):
        assert _RESOLVER.resolve(key.encode(), NOW).reply == _OK


@FAST
@given(
    st.sampled_from(sorted(_ALL_VALID)),
    st.integers(min_value=0, max_value=7),
    st.sampled_from("0123456789abcdef"),
)
def test_a_code_with_one_wrong_digit_is_not_found(local: str, index: int, digit: str) -> None:
    mutated = local[:index] + digit + local[index + 1 :]
    expected = Status.OK if mutated in _ALL_VALID else Status.NOTFOUND
    assert _RESOLVER.resolve(f"{mutated}@example.org".encode(), NOW).reply.status is expected


# --- a live server -------------------------------------------------------------------------


def test_a_live_server_survives_random_clients(start_server: StartServer) -> None:
    running = start_server(clock=FakeClock())
    tasks, fds = baseline(running)
    canary = running.connect()
    valid = addresses(PLAIN)[0]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(netstringish, st.booleans())
    def one_client(data: bytes, close_early: bool) -> None:
        with running.connect() as client:
            if data:
                client.send_raw(data)
            if not close_early:
                client.finish_sending()
                parse_replies(client.read_to_end())  # only whole, valid replies
        # Every other client is still answered, on an old connection and on a new one.
        assert canary.query("tempmail", valid).data == RECIPIENT
        with running.connect() as other:
            other.send_raw(request(valid))
            assert other.read_exactly(len(ok(RECIPIENT))) == ok(RECIPIENT)

    one_client()
    canary.close()
    wait_until(settled(running, tasks, fds))
