"""The socketmap client: targets, replies, and the raw reads that protocol tests rely on."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import pytest

from helpers import ScriptedServers, StartServer, config_data
from tempmail.client import Client, parse_target
from tempmail.errors import ProtocolError


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("unix:/run/tempmail/socket", (socket.AF_UNIX, "/run/tempmail/socket")),
        ("inet:127.0.0.1:10000", (socket.AF_INET, ("127.0.0.1", 10000))),
        ("inet:[::1]:10000", (socket.AF_INET6, ("::1", 10000))),
        ("inet:localhost:65535", (socket.AF_INET, ("localhost", 65535))),
    ],
)
def test_targets(target: str, parsed: tuple[socket.AddressFamily, object]) -> None:
    assert parse_target(target) == parsed


@pytest.mark.parametrize(
    "target", ["unix:", "inet:127.0.0.1", "inet::25", "inet:h:0", "inet:h:65536", "tcp:h:25", ""]
)
def test_malformed_targets(target: str) -> None:
    with pytest.raises(ValueError, match=r"^expected unix:PATH or inet:HOST:PORT") as caught:
        parse_target(target)
    assert str(caught.value) == f"expected unix:PATH or inet:HOST:PORT, got {target!r}"


def test_no_server_is_an_oserror(short_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Client(f"unix:{short_dir}/none")


def test_a_server_that_closes_without_replying(scripted_server: ScriptedServers) -> None:
    target = scripted_server.start(lambda connection: connection.recv(100))
    with Client(target) as client, pytest.raises(ProtocolError) as caught:
        client.query("tempmail", "a@example.org")
    assert str(caught.value) == "the server closed the connection without replying"


def test_read_exactly_says_what_arrived_before_the_close(
    scripted_server: ScriptedServers,
) -> None:
    target = scripted_server.start(lambda connection: connection.sendall(b"9:NOT"))
    with Client(target) as client, pytest.raises(ProtocolError) as caught:
        client.read_exactly(12)
    assert str(caught.value) == ("the server closed the connection after 5 of 12 bytes: b'9:NOT'")


def test_raw_reads_refuse_to_skip_a_partial_reply(scripted_server: ScriptedServers) -> None:
    """Bytes of a reply already buffered cannot be read raw: they would be lost or doubled."""
    target = scripted_server.start(lambda connection: connection.sendall(b"9:NOTFOUND ,3:OK "))
    with Client(target) as client:
        assert client.read_reply().status.value == "NOTFOUND"
        for read in (client.read_to_end, lambda: client.read_exactly(1)):
            with pytest.raises(ProtocolError) as caught:
                read()
            assert str(caught.value) == ("part of a reply is buffered: finish it with read_reply()")


def test_a_reset_ends_read_to_end(short_dir: Path) -> None:
    """A server that closes with unread bytes resets the connection: the end, not an error."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with Client(f"inet:127.0.0.1:{port}") as client:
            connection, _ = listener.accept()
            client.send_raw(b"bytes the server never reads")
            connection.sendall(b"abc")
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()
            received = client.read_to_end()
    assert b"abc".startswith(received)


def test_half_close_lets_the_server_finish(start_server: StartServer) -> None:
    """After finish_sending the server answers what it got, then closes: Postfix's EOF."""
    running = start_server()
    with running.connect() as client:
        client.send_raw(b"8:tempmail,")  # no space: malformed, PERM, and the end
        client.finish_sending()
        assert client.read_to_end() == (b"46:PERM malformed request: expected 'mapname key',")


def test_the_peer_pid_is_the_listener_on_unix_and_unknown_on_tcp(
    start_server: StartServer,
) -> None:
    """SO_PEERCRED names the process that listens (this one, for an in-process server)."""
    with start_server().connect() as client:
        assert client.peer_pid() == os.getpid()
    data = config_data()
    data["socket"] = {"type": "inet"}
    running = start_server(data)
    with running.connect() as client:
        assert client.peer_pid() is None
        assert client.query("tempmail", "x@example.org").data == ""
