"""The netstring decoder, fed whole and one byte at a time."""

from __future__ import annotations

import pytest

from tempmail import socketmap
from tempmail.netstring import (
    END,
    NEED_DATA,
    BadLength,
    BadTerminator,
    LengthLimitExceeded,
    NetstringError,
    Oversized,
    Truncated,
    encode,
)


def decode_all(data: bytes, *, max_length: int = 512, chunk: int | None = None) -> list[object]:
    """Feed ``data`` (whole or in chunks), then EOF; collect every event until END or an error."""
    decoder = socketmap.decoder(max_length)
    events: list[object] = []
    if chunk is None:
        pieces = [data] if data else []
    else:
        pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in [*pieces, b""]:
        decoder.feed(piece)
        while True:
            try:
                event = decoder.next_event()
            except NetstringError as exc:
                events.append(type(exc))
                return events
            if event is NEED_DATA:
                break
            events.append(event)
            if event is END:
                return events
    return events


VALID = [
    pytest.param(b"", [END], id="empty-stream"),
    pytest.param(b"0:,", [b"", END], id="empty-payload"),
    pytest.param(b"5:hello,", [b"hello", END], id="one"),
    pytest.param(b"3:abc,3:def,", [b"abc", b"def", END], id="two-in-one-write"),
    pytest.param(b"3:a\x00c,", [b"a\x00c", END], id="nul-byte"),
    pytest.param(b"2:\xff\xfe,", [b"\xff\xfe", END], id="invalid-utf8-is-just-bytes"),
    pytest.param(b"4:1:a,,", [b"1:a,", END], id="netstring-inside"),
    pytest.param(b"600:" + b"x" * 600 + b",", [Oversized(600), END], id="oversized-skipped"),
    pytest.param(
        b"600:" + b"x" * 600 + b",5:hello,", [Oversized(600), b"hello", END], id="resync-after-skip"
    ),
]

INVALID = [
    pytest.param(b":,", [BadLength], id="empty-length"),
    pytest.param(b"01:a,", [BadLength], id="leading-zero"),
    pytest.param(b"00:,", [BadLength], id="two-zeros"),
    pytest.param(b"a:b,", [BadLength], id="non-digit-length"),
    pytest.param(b"1a:b,", [BadLength], id="digit-then-letter"),
    pytest.param(b"-1:,", [BadLength], id="negative"),
    pytest.param(b" 1:a,", [BadLength], id="leading-space"),
    pytest.param(b"5:hello;", [BadTerminator], id="semicolon-terminator"),
    pytest.param(b"5:hello", [Truncated], id="missing-comma-at-eof"),
    pytest.param(b"5:helloX5:hello,", [BadTerminator], id="missing-comma"),
    pytest.param(b"3:abc,3:de", [b"abc", Truncated], id="truncated-second"),
    pytest.param(b"12345", [Truncated], id="only-digits"),
    pytest.param(b"100001:", [LengthLimitExceeded], id="over-hard-limit"),
    pytest.param(b"18446744073709551616:", [LengthLimitExceeded], id="uint64-overflow"),
    pytest.param(b"9999999", [LengthLimitExceeded], id="seven-digits-no-colon"),
    pytest.param(b"600:" + b"x" * 600 + b";", [BadTerminator], id="oversized-bad-terminator"),
    pytest.param(b"600:xx", [Truncated], id="oversized-truncated"),
]


@pytest.mark.parametrize(("data", "expected"), VALID + INVALID)
@pytest.mark.parametrize("chunk", [None, 1, 7], ids=["whole", "bytewise", "chunks-of-7"])
def test_decoding(data: bytes, expected: list[object], chunk: int | None) -> None:
    """Each input gives the same events whether it arrives whole or in pieces."""
    assert decode_all(data, chunk=chunk) == expected


def test_errors_are_reported_as_soon_as_certain() -> None:
    """A bad length prefix is rejected before the rest of the frame arrives."""
    decoder = socketmap.decoder(512)
    decoder.feed(b"1x")
    with pytest.raises(BadLength, match="not a decimal number"):
        decoder.next_event()
    decoder = socketmap.decoder(512)
    decoder.feed(b"1234567")
    with pytest.raises(LengthLimitExceeded, match=r"1234567\.\.\. exceeds the limit of 100000"):
        decoder.next_event()


def test_a_broken_decoder_stays_broken() -> None:
    """After an error the stream cannot be resynchronised: every call raises the same error."""
    decoder = socketmap.decoder(512)
    decoder.feed(b"x:")
    with pytest.raises(BadLength) as first:
        decoder.next_event()
    with pytest.raises(BadLength) as second:
        decoder.next_event()
    assert first.value is second.value
    assert decoder.buffered == 0


def test_oversized_payload_is_never_buffered() -> None:
    """Bytes of a payload over max_length are dropped as they arrive."""
    decoder = socketmap.decoder(16)
    decoder.feed(b"90000:")
    assert decoder.next_event() is NEED_DATA
    for _ in range(90):
        decoder.feed(b"y" * 1000)
        assert decoder.next_event() is NEED_DATA
        assert decoder.buffered == 0
    decoder.feed(b",2:ok,")
    assert decoder.next_event() == Oversized(90000)
    assert decoder.next_event() == b"ok"


def test_payload_at_the_limit_is_delivered() -> None:
    """A payload of exactly max_length bytes is a normal frame; one more byte is oversized."""
    assert decode_all(encode(b"k" * 64), max_length=64) == [b"k" * 64, END]
    assert decode_all(encode(b"k" * 65), max_length=64) == [Oversized(65), END]


def test_encode() -> None:
    assert encode(b"") == b"0:,"
    assert encode(b"OK a@b") == b"6:OK a@b,"


def test_feeding_after_eof_is_a_programming_error() -> None:
    decoder = socketmap.decoder(10)
    decoder.feed(b"")
    with pytest.raises(ValueError, match="after end of stream"):
        decoder.feed(b"1:a,")


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="between 0 and 100000"):
        socketmap.decoder(100_001)
