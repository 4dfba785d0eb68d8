"""The per-connection protocol policy, without sockets."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest

from helpers import RECIPIENT, SECRET, at, config_data
from tempmail import schemes
from tempmail.config import parse
from tempmail.handler import Handler, HandlerRef
from tempmail.netstring import encode
from tempmail.session import Session

NOW = at("2026-11-27T12:00:00+00:00")
CODE = schemes.code(schemes.HMAC, dt.date(2026, 11, 27), SECRET.encode(), 8)
OK_REPLY = f"{len(RECIPIENT) + 3}:OK {RECIPIENT},".encode()
NOTFOUND = b"9:NOTFOUND ,"


def session(**server: Any) -> tuple[Session, Handler]:
    data = config_data()
    data["server"] = server
    handler = Handler(parse(data, environ={}), NOW)
    return Session(HandlerRef(handler)), handler


def request(key: str, name: str = "tempmail") -> bytes:
    return encode(f"{name} {key}".encode())


def test_one_request() -> None:
    s, _ = session()
    assert s.receive(request(f"{CODE}@example.org"), NOW) == (OK_REPLY, False)


def test_pipelined_requests_are_answered_in_order_in_one_write() -> None:
    s, _ = session()
    data = request("x@example.org") + request(f"{CODE}@example.org") + request("y@example.org")
    assert s.receive(data, NOW) == (NOTFOUND + OK_REPLY + NOTFOUND, False)


def test_a_request_split_across_reads() -> None:
    s, _ = session()
    data = request(f"{CODE}@example.org")
    replies = b"".join(s.receive(data[i : i + 1], NOW)[0] for i in range(len(data)))
    assert replies == OK_REPLY
    assert s.buffered == 0


def test_wrong_map_name_is_perm_with_a_reason() -> None:
    s, handler = session()
    reply, close = s.receive(request(f"{CODE}@example.org", "virtual"), NOW)
    assert reply == encode(
        b"PERM unknown map name 'virtual'; this server answers 'tempmail' "
        b"(check virtual_alias_maps in main.cf)"
    )
    assert close is False
    assert handler.stats.lookups_perm == 1


def test_custom_map_name() -> None:
    s, _ = session(map_name="trash")
    assert s.receive(request(f"{CODE}@example.org", "trash"), NOW)[0] == OK_REPLY


def test_request_without_key_is_perm_and_connection_stays() -> None:
    s, _ = session()
    assert s.receive(b"8:tempmail,0:,", NOW) == (
        encode(b"PERM malformed request: expected 'mapname key'") * 2,
        False,
    )


def test_oversized_query_is_notfound_not_perm() -> None:
    """PERM would make Postfix defer the mail forever; a too-long key is simply unknown."""
    s, handler = session(max_query_length=64)
    long_key = "a" * 100 + "@example.org"
    assert s.receive(request(long_key) + request(f"{CODE}@example.org"), NOW) == (
        NOTFOUND + OK_REPLY,
        False,
    )
    assert handler.stats.oversized_queries == 1


def test_query_at_the_limit_is_looked_up() -> None:
    key = f"{CODE}+{'x' * 40}@example.org"
    s, _ = session(max_query_length=len("tempmail ") + len(key))
    assert s.receive(request(key), NOW)[0] == OK_REPLY


def test_malformed_netstring_gets_perm_and_close(caplog: pytest.LogCaptureFixture) -> None:
    s, handler = session()
    with caplog.at_level(logging.WARNING, "tempmail.session"):
        reply, close = s.receive(request("a@example.org") + b"x:junk", NOW)
    assert reply == NOTFOUND + encode(
        b"PERM malformed netstring: netstring length b'x' is not a decimal number"
    )
    assert close is True
    assert handler.stats.protocol_errors == 1
    assert "closing a connection after a protocol error" in caplog.text


def test_clean_end_of_stream() -> None:
    s, _ = session()
    assert s.receive(request("a@example.org"), NOW) == (NOTFOUND, False)
    assert s.receive(b"", NOW) == (b"", True)


def test_end_of_stream_inside_a_request_closes_without_reply() -> None:
    s, _ = session()
    assert s.receive(b"20:tempmail abc", NOW) == (b"", False)
    assert s.receive(b"", NOW) == (b"", True)


def test_a_reload_applies_to_open_connections() -> None:
    s, handler = session()
    ref = s._ref
    assert s.receive(request(f"{CODE}@example.org"), NOW)[0] == OK_REPLY
    ref.handler = Handler(
        parse(config_data(secret="a completely new secret"), environ={}), NOW, handler.stats
    )
    assert s.receive(request(f"{CODE}@example.org"), NOW)[0] == NOTFOUND


def test_statistics() -> None:
    s, handler = session()
    s.receive(request(f"{CODE}@example.org") * 2 + request("no@example.org"), NOW)
    stats = handler.stats
    assert (stats.lookups_ok, stats.lookups_notfound, stats.lookups) == (2, 1, 3)
    assert stats.served_by_date == {"2026-11-27": 2}


def test_debug_log_has_one_line_per_lookup_without_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, "tempmail"):
        s, _ = session()
        s.receive(request(f"{CODE}@example.org") + request("no\x00pe@example.org"), NOW)
    lines = [r.getMessage() for r in caplog.records if r.name == "tempmail.handler"]
    assert lines == [
        f"lookup key={CODE}@example.org result=OK identity=default date=2026-11-27 scheme=hmac",
        "lookup key=no\\x00pe@example.org result=NOTFOUND",
    ]
    assert SECRET not in caplog.text
