"""Hostile and broken input: every case of issue 5 with the exact bytes the server answers.

Policy under test (session.py): a malformed netstring gets one ``PERM malformed netstring:``
reply and the connection is closed; a well-framed but odd request gets an answer and the
connection stays open; a request over ``max_query_length`` gets ``NOTFOUND`` without being
buffered; EOF inside a request closes the connection without a reply.

Each case is checked twice: against the sans-I/O decoder (the exception type, whole and
byte by byte) and against a real server on a real socket (the reply bytes, and whether the
server closed the connection or still answers on it).
"""

from __future__ import annotations

import socket

import pytest

from helpers import RECIPIENT, FakeClock, StartServer, config_data
from helpers_hostile import (
    NOTFOUND,
    addresses,
    identity,
    ok,
    perm_malformed,
    reply_wire,
    request,
    still_open,
)
from tempmail import socketmap
from tempmail.netstring import (
    END,
    NEED_DATA,
    BadLength,
    BadTerminator,
    LengthLimitExceeded,
    NetstringDecoder,
    NetstringError,
    Oversized,
    Truncated,
)
from tempmail.socketmap import MAX_REPLY_LENGTH

IDENT = identity()
VALID = addresses(IDENT)[0]  # today's hmac address at the fixed test instant
CODE, _, DOMAIN = VALID.partition("@")
MAX_QUERY = 512  # the default server.max_query_length
PREFIX = len("tempmail ")

# --- malformed netstrings: one PERM, then the connection is closed --------------------------

MALFORMED = [
    pytest.param(
        b"22:tempmail x@example.org22:",
        BadTerminator,
        "netstring of length 22 is not terminated by ','",
        id="missing-comma",
    ),
    pytest.param(
        b"22:tempmail x@example.org;",
        BadTerminator,
        "netstring of length 22 is not terminated by ','",
        id="semicolon-terminator",
    ),
    pytest.param(
        b"22:tempmail x@example.org\n",
        BadTerminator,
        "netstring of length 22 is not terminated by ','",
        id="newline-terminator",
    ),
    pytest.param(
        b"21:tempmail x@example.org,",
        BadTerminator,
        "netstring of length 21 is not terminated by ','",
        id="length-too-short",
    ),
    pytest.param(
        b"01:a,", BadLength, "netstring length b'01' has a leading zero", id="leading-zero"
    ),
    pytest.param(b"00:,", BadLength, "netstring length b'00' has a leading zero", id="zero-zero"),
    pytest.param(
        b"0022:tempmail x@example.org,",
        BadLength,
        "netstring length b'0022' has a leading zero",
        id="leading-zeros",
    ),
    pytest.param(
        b"18446744073709551616:tempmail x@example.org,",
        LengthLimitExceeded,
        "netstring length 1844674... exceeds the limit of 100000",
        id="2**64",
    ),
    pytest.param(
        b"100001:",
        LengthLimitExceeded,
        "netstring length 100001 exceeds the limit of 100000",
        id="hard-limit-plus-one",
    ),
    pytest.param(
        b"999999:",
        LengthLimitExceeded,
        "netstring length 999999 exceeds the limit of 100000",
        id="six-nines",
    ),
    pytest.param(b":,", BadLength, "netstring length is empty", id="empty-length"),
    pytest.param(
        b"abc:tempmail,", BadLength, "netstring length b'abc' is not a decimal number", id="abc"
    ),
    pytest.param(b"-1:,", BadLength, "netstring length b'-1' is not a decimal number", id="neg"),
    pytest.param(
        b"+5:hello,", BadLength, "netstring length b'+5' is not a decimal number", id="plus"
    ),
    pytest.param(
        b" 5:hello,", BadLength, "netstring length b' 5' is not a decimal number", id="space"
    ),
    pytest.param(
        b"5 :hello,", BadLength, "netstring length b'5 ' is not a decimal number", id="space2"
    ),
    pytest.param(
        b"0x1f:tempmail x@example.org,",
        BadLength,
        "netstring length b'0x1f' is not a decimal number",
        id="hex",
    ),
    pytest.param(
        b"\xef\xbc\x95:hello,",  # FULLWIDTH DIGIT FIVE: a digit to str.isdigit, not to us
        BadLength,
        "netstring length b'\\xef\\xbc\\x95' is not a decimal number",
        id="unicode-digit",
    ),
    pytest.param(
        b"\x00:,", BadLength, "netstring length b'\\x00' is not a decimal number", id="nul"
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\n\r\n",
        BadLength,
        "netstring length b'GET / H' is not a decimal number",
        id="http",
    ),
    pytest.param(
        b"123456789",  # only digits, no colon: refused at the seventh digit
        LengthLimitExceeded,
        "netstring length 1234567... exceeds the limit of 100000",
        id="only-digits",
    ),
    pytest.param(
        b"12,", BadLength, "netstring length b'12,' is not a decimal number", id="digits-comma"
    ),
]


def _drain(decoder: NetstringDecoder, chunks: list[bytes]) -> None:
    for chunk in chunks:
        decoder.feed(chunk)
        while decoder.next_event() is not NEED_DATA:
            pass


@pytest.mark.parametrize(("raw", "error", "message"), MALFORMED)
def test_decoder_rejects_malformed(raw: bytes, error: type[NetstringError], message: str) -> None:
    # Whole, and one byte at a time: the same error type (the message shows the bytes seen).
    for chunks in ([raw], [raw[i : i + 1] for i in range(len(raw))]):
        decoder = socketmap.decoder(MAX_QUERY)
        with pytest.raises(error) as caught:
            _drain(decoder, chunks)
        if len(chunks) == 1:
            assert str(caught.value) == message
        assert decoder.buffered == 0
        # The decoder stays broken: the stream cannot be resynchronised.
        with pytest.raises(error):
            decoder.next_event()


@pytest.mark.parametrize(("raw", "error", "message"), MALFORMED)
def test_server_answers_malformed_with_perm_and_closes(
    start_server: StartServer, raw: bytes, error: type[NetstringError], message: str
) -> None:
    running = start_server(clock=FakeClock())
    with running.connect() as client:
        client.send_raw(raw)
        assert client.read_to_end() == perm_malformed(message)
    assert running.server.stats.protocol_errors == 1
    assert running.query(VALID).data == RECIPIENT  # and the server is fine


def test_valid_request_then_garbage_in_one_write(start_server: StartServer) -> None:
    running = start_server(clock=FakeClock())
    with running.connect() as client:
        client.send_raw(request(VALID) + b"7:garbage;")
        assert client.read_to_end() == ok(RECIPIENT) + perm_malformed(
            "netstring of length 7 is not terminated by ','"
        )


# --- well-framed requests that are odd: an answer, and the connection stays open ------------

ODD = [
    pytest.param(b"0:,", "PERM malformed request: expected 'mapname key'", id="empty-0:,"),
    pytest.param(
        b"8:tempmail,", "PERM malformed request: expected 'mapname key'", id="no-space-no-key"
    ),
    pytest.param(request(b""), "NOTFOUND ", id="empty-key"),
    pytest.param(
        request(VALID, map_name=b"virtual"),
        "PERM unknown map name 'virtual'; this server answers 'tempmail' "
        "(check virtual_alias_maps in main.cf)",
        id="wrong-map-name",
    ),
    pytest.param(
        request(VALID, map_name=b"tempmail\x00"),
        "PERM unknown map name 'tempmail\\x00'; this server answers 'tempmail' "
        "(check virtual_alias_maps in main.cf)",
        id="nul-in-map-name",
    ),
    pytest.param(
        request(VALID, map_name=b"\xfftempmail"),
        "PERM unknown map name '\\xfftempmail'; this server answers 'tempmail' "
        "(check virtual_alias_maps in main.cf)",
        id="invalid-utf8-map-name",
    ),
    pytest.param(request(b"\x00"), "NOTFOUND ", id="nul-key"),
    pytest.param(request(CODE + "\x00@" + DOMAIN), "NOTFOUND ", id="nul-before-at"),
    pytest.param(request(VALID + "\x00"), "NOTFOUND ", id="nul-at-end"),
    pytest.param(request("\x00" + VALID), "NOTFOUND ", id="nul-at-start"),
    pytest.param(request(b"\xff\xfe@example.org"), "NOTFOUND ", id="invalid-utf8"),
    pytest.param(request(VALID.encode() + b"\xff"), "NOTFOUND ", id="valid-plus-invalid-utf8"),
    pytest.param(request(b"\xc0\xae@example.org"), "NOTFOUND ", id="overlong-utf8"),
    pytest.param(request(b"\xed\xa0\x80@example.org"), "NOTFOUND ", id="surrogate-utf8"),
    pytest.param(request(CODE.encode() + b"\xcc\x81@" + DOMAIN.encode()), "NOTFOUND ", id="nfd"),
    pytest.param(request('"a b"@example.org'), "NOTFOUND ", id="quoted-space"),
    pytest.param(request(f'"{CODE}"@{DOMAIN}'), "NOTFOUND ", id="quoted-valid-code"),
    pytest.param(request(f"{CODE} @{DOMAIN}"), "NOTFOUND ", id="space-before-at"),
    pytest.param(request(" " + VALID), "NOTFOUND ", id="leading-space"),
    pytest.param(request(VALID + " "), "NOTFOUND ", id="trailing-space"),
    pytest.param(request(f"{CODE}@{DOMAIN}."), "NOTFOUND ", id="trailing-dot-domain"),
    pytest.param(request(DOMAIN), "NOTFOUND ", id="bare-domain"),
    pytest.param(request("@" + DOMAIN), "NOTFOUND ", id="at-domain"),
    pytest.param(request(CODE), "NOTFOUND ", id="bare-code"),
    pytest.param(request(CODE + "@"), "NOTFOUND ", id="code-at"),
    pytest.param(request(f"x@{CODE}@{DOMAIN}"), "NOTFOUND ", id="two-ats"),
    pytest.param(request(f"+{CODE}@{DOMAIN}"), "NOTFOUND ", id="extension-only"),
    pytest.param(request(f"{CODE}\r\n@{DOMAIN}"), "NOTFOUND ", id="crlf"),
    pytest.param(request(f"{CODE}'; DROP TABLE x;--@{DOMAIN}"), "NOTFOUND ", id="sql"),
    pytest.param(request(f"{CODE}$(reboot)@{DOMAIN}"), "NOTFOUND ", id="shell"),
    pytest.param(request(f"{CODE}%n%s%x@{DOMAIN}"), "NOTFOUND ", id="format-string"),
    pytest.param(request(VALID.upper()), f"OK {RECIPIENT}", id="upper-case-is-valid"),
    pytest.param(request(f"{CODE}+a b\"c'@{DOMAIN}"), f"OK {RECIPIENT}", id="odd-extension"),
]


@pytest.mark.parametrize(("raw", "expected"), ODD)
def test_server_answers_odd_requests_and_stays_open(
    start_server: StartServer, raw: bytes, expected: str
) -> None:
    running = start_server(clock=FakeClock())
    with running.connect() as client:
        client.send_raw(raw)
        wire = reply_wire(expected)
        assert client.read_exactly(len(wire)) == wire
        assert still_open(client, IDENT)
    assert running.server.stats.protocol_errors == 0


# --- framing: splits, pipelining, EOF -----------------------------------------------------


def test_request_split_into_one_byte_writes(start_server: StartServer) -> None:
    running = start_server(clock=FakeClock())
    raw = request(VALID) + request("nobody@example.org")
    with running.connect() as client:
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1024)
        for i in range(len(raw)):
            client.send_raw(raw[i : i + 1])
        expected = ok(RECIPIENT) + NOTFOUND
        assert client.read_exactly(len(expected)) == expected
        assert still_open(client, IDENT)


def test_many_requests_in_one_write_are_answered_in_order(start_server: StartServer) -> None:
    running = start_server(clock=FakeClock())
    yesterday = addresses(IDENT)[1]
    keys = [VALID, "x@example.org", yesterday, "example.org", VALID.upper()] * 400
    expected = {VALID: ok(RECIPIENT), yesterday: ok(RECIPIENT), VALID.upper(): ok(RECIPIENT)}
    wire = b"".join(expected.get(k, NOTFOUND) for k in keys)
    with running.connect() as client:
        client.send_raw(b"".join(request(k) for k in keys))  # 2000 requests, ~55 kB, one write
        assert client.read_exactly(len(wire)) == wire
        assert still_open(client, IDENT)
    stats = running.server.stats
    assert (stats.lookups_ok, stats.lookups_notfound) == (1200 + 1, 800)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(request(VALID)[:-1], id="before-comma"),
        pytest.param(request(VALID)[:10], id="mid-payload"),
        pytest.param(b"22:", id="after-colon"),
        pytest.param(b"22", id="mid-length"),
        pytest.param(b"12345", id="only-digits"),
        pytest.param(b"600:" + b"x" * 300, id="mid-oversized-payload"),
        pytest.param(b"600:" + b"x" * 600, id="oversized-before-comma"),
    ],
)
def test_eof_inside_a_request_closes_without_reply(start_server: StartServer, raw: bytes) -> None:
    running = start_server(clock=FakeClock())
    with running.connect() as client:
        client.send_raw(request(VALID) + raw)
        client.finish_sending()
        assert client.read_to_end() == ok(RECIPIENT)  # the complete request is answered
    stats = running.server.stats
    assert (stats.protocol_errors, stats.lookups) == (0, 1)


def test_eof_between_requests_closes_cleanly(start_server: StartServer) -> None:
    running = start_server(clock=FakeClock())
    with running.connect() as client:
        client.send_raw(request(VALID) + request(VALID))
        client.finish_sending()
        assert client.read_to_end() == ok(RECIPIENT) * 2


# --- the max query length ----------------------------------------------------------------


def _padded(total_payload: int) -> str:
    """Today's address with an extension, so the request payload is exactly this long."""
    padding = total_payload - PREFIX - len(VALID) - 1
    return f"{CODE}+{'p' * padding}@{DOMAIN}"


@pytest.mark.parametrize(
    ("payload_length", "expected"),
    [
        pytest.param(MAX_QUERY - 1, f"OK {RECIPIENT}", id="limit-minus-one"),
        pytest.param(MAX_QUERY, f"OK {RECIPIENT}", id="at-limit"),
        pytest.param(MAX_QUERY + 1, "NOTFOUND ", id="limit-plus-one"),
        pytest.param(10 * MAX_QUERY, "NOTFOUND ", id="ten-times"),
    ],
)
def test_keys_at_and_beyond_the_max_query_length(
    start_server: StartServer, payload_length: int, expected: str
) -> None:
    running = start_server(clock=FakeClock())
    raw = request(_padded(payload_length))
    assert raw.startswith(b"%d:" % payload_length)
    with running.connect() as client:
        client.send_raw(raw)
        wire = reply_wire(expected)
        assert client.read_exactly(len(wire)) == wire
        assert still_open(client, IDENT)
    assert running.server.stats.oversized_queries == (payload_length > MAX_QUERY)


def test_hard_limit_payload_is_skipped_and_answered(start_server: StartServer) -> None:
    running = start_server(clock=FakeClock())
    with running.connect() as client:
        client.send_raw(b"%d:tempmail " % MAX_REPLY_LENGTH)
        # The rest arrives in pieces, as a slow sender's would.
        body = b"x" * (MAX_REPLY_LENGTH - PREFIX)
        for start in range(0, len(body), 8192):
            client.send_raw(body[start : start + 8192])
        client.send_raw(b"," + request(VALID))
        expected = NOTFOUND + ok(RECIPIENT)
        assert client.read_exactly(len(expected)) == expected
    assert running.server.stats.oversized_queries == 1


def test_hard_limit_plus_one_is_refused_before_the_payload(start_server: StartServer) -> None:
    running = start_server(clock=FakeClock())
    with running.connect() as client:
        client.send_raw(b"%d:" % (MAX_REPLY_LENGTH + 1))  # no payload needed for the refusal
        assert client.read_to_end() == perm_malformed(
            "netstring length 100001 exceeds the limit of 100000"
        )


def test_configured_max_query_length_is_used(start_server: StartServer) -> None:
    data = config_data()
    data["server"] = {"max_query_length": 64}
    running = start_server(data, clock=FakeClock())
    with running.connect() as client:
        client.send_raw(request(_padded(64)) + request(_padded(65)))
        expected = ok(RECIPIENT) + NOTFOUND
        assert client.read_exactly(len(expected)) == expected


# --- the decoder never buffers what it skips --------------------------------------------


def test_decoder_skips_an_oversized_payload_without_buffering_it() -> None:
    decoder = socketmap.decoder(MAX_QUERY)
    decoder.feed(b"%d:" % MAX_REPLY_LENGTH)
    assert decoder.next_event() is NEED_DATA
    high_water = decoder.buffered
    for _ in range(MAX_REPLY_LENGTH // 1000):
        decoder.feed(b"y" * 1000)
        assert decoder.next_event() is NEED_DATA
        high_water = max(high_water, decoder.buffered)
    decoder.feed(b",3:a b,")
    assert decoder.next_event() == Oversized(MAX_REPLY_LENGTH)
    assert decoder.next_event() == b"a b"
    assert decoder.next_event() is NEED_DATA
    assert high_water == 0


def test_decoder_eof_states() -> None:
    decoder = socketmap.decoder(MAX_QUERY)
    decoder.feed(b"3:abc,")
    decoder.feed(b"")
    assert decoder.next_event() == b"abc"
    assert decoder.next_event() is END
    truncated = socketmap.decoder(MAX_QUERY)
    truncated.feed(b"3:ab")
    truncated.feed(b"")
    with pytest.raises(Truncated):
        truncated.next_event()
