"""Socketmap replies and requests, as socketmap_table(5) specifies them."""

from __future__ import annotations

import pytest

from tempmail import socketmap
from tempmail.socketmap import (
    MAX_REPLY_LENGTH,
    NOTFOUND,
    MalformedReply,
    MalformedRequest,
    Reply,
    Status,
)


def test_reply_wire_formats() -> None:
    """Each status word is followed by one space, NOTFOUND included."""
    assert socketmap.ok("owner@example.net").wire == b"20:OK owner@example.net,"
    assert NOTFOUND.wire == b"9:NOTFOUND ,"
    assert socketmap.temp("try later").wire == b"14:TEMP try later,"
    assert socketmap.perm("bad map").wire == b"12:PERM bad map,"


def test_reasons_are_one_line() -> None:
    """A reason with newlines or runs of spaces is folded into one log-friendly line."""
    assert socketmap.perm("a\nb\t  c").data == "a b c"


def test_long_reasons_are_cut_to_postfix_limit() -> None:
    """No reply is longer than Postfix's socketmap_max_reply_size (100000)."""
    reply = socketmap.temp("é" * 60_000)  # 120000 bytes of UTF-8
    payload = reply.wire.split(b":", 1)[1][:-1]
    assert len(payload) <= MAX_REPLY_LENGTH
    payload.decode()  # still valid UTF-8: no character was cut in half


def test_an_ok_reply_is_never_cut() -> None:
    with pytest.raises(ValueError, match="must fit"):
        socketmap.ok("x" * MAX_REPLY_LENGTH)


def test_replies_are_immutable_values() -> None:
    reply = socketmap.ok("a@b.c")
    with pytest.raises(AttributeError):
        reply.data = "other"  # type: ignore[misc]  # the point of the test
    assert reply == Reply(Status.OK, "a@b.c")
    assert len({reply, Reply(Status.OK, "a@b.c")}) == 1
    assert repr(reply) == "Reply(OK 'a@b.c')"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"tempmail a@b.c", (b"tempmail", b"a@b.c")),
        (b'tempmail "a b"@b.c', (b"tempmail", b'"a b"@b.c')),  # split on the FIRST space
        (b"tempmail ", (b"tempmail", b"")),
        (b" key", (b"", b"key")),
    ],
)
def test_parse_request(payload: bytes, expected: tuple[bytes, bytes]) -> None:
    assert socketmap.parse_request(payload) == expected


def test_a_request_without_space_is_malformed() -> None:
    with pytest.raises(MalformedRequest):
        socketmap.parse_request(b"tempmail")


def test_encode_request() -> None:
    assert socketmap.encode_request("tempmail", "a@b.c") == b"14:tempmail a@b.c,"


@pytest.mark.parametrize(
    ("payload", "status", "data"),
    [
        (b"OK x@y.z", Status.OK, "x@y.z"),
        (b"NOTFOUND ", Status.NOTFOUND, ""),
        (b"NOTFOUND", Status.NOTFOUND, ""),  # Postfix accepts it without the space
        (b"TIMEOUT slow", Status.TIMEOUT, "slow"),
        (b"PERM no", Status.PERM, "no"),
    ],
)
def test_parse_reply(payload: bytes, status: Status, data: str) -> None:
    reply = socketmap.parse_reply(payload)
    assert (reply.status, reply.data) == (status, data)


@pytest.mark.parametrize("payload", [b"YES x", b"", b"\xff", b"OK \xff"])
def test_parse_reply_rejects_garbage(payload: bytes) -> None:
    with pytest.raises(MalformedReply):
        socketmap.parse_reply(payload)
