"""systemd integration, emulated: a NOTIFY_SOCKET datagram socket and an inherited listener."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import PYTHON_M_TEMPMAIL, ServerProcess, write_config
from helpers import RECIPIENT, SECRET, config_data
from tempmail import schemes
from tempmail.client import Client
from tempmail.systemd import Notifier


@pytest.fixture
def notify_socket(short_dir: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket standing in for systemd's notification socket."""
    path = short_dir / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    yield str(path), sock
    sock.close()


def messages(sock: socket.socket, count: int) -> list[str]:
    return [sock.recv(4096).decode() for _ in range(count)]


def test_notifier_messages(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    notifier = Notifier(path)
    notifier.ready("serving")
    notifier.reloading()
    notifier.status("busy")
    notifier.stopping()
    ready, reloading, status, stopping = messages(sock, 4)
    assert ready == "READY=1\nSTATUS=serving"
    assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert int(reloading.rpartition("=")[2]) > 0
    assert (status, stopping) == ("STATUS=busy", "STOPPING=1")


def test_abstract_namespace_address() -> None:
    name = f"tempmail-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        Notifier(f"@{name}").ready("x")
        assert sock.recv(100) == b"READY=1\nSTATUS=x"


def test_without_notify_socket_nothing_happens(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    notifier.ready("x")
    assert caplog.records == []


def test_a_missing_notify_socket_is_not_fatal(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        Notifier(str(short_dir / "gone")).ready("x")
    assert "cannot notify systemd" in caplog.text


def dev_config(short_dir: Path) -> Path:
    data = config_data()
    data["server"] = {"user": "root"} if os.geteuid() == 0 else {}
    data["socket"] = {"path": str(short_dir / "configured.sock")}
    return write_config(short_dir / "c.toml", data)


def test_readiness_reload_and_stop_notifications(
    short_dir: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    """Type=notify: READY=1 once listening, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1."""
    path, sock = notify_socket
    with ServerProcess(dev_config(short_dir), env={**os.environ, "NOTIFY_SOCKET": path}) as server:
        (ready,) = messages(sock, 1)
        assert ready == f"READY=1\nSTATUS=serving on unix:{short_dir / 'configured.sock'}"
        assert (short_dir / "configured.sock").exists()  # ready means the socket answers
        server.signal(signal.SIGHUP)
        reloading, ready_again = messages(sock, 2)
        assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert ready_again.startswith("READY=1\n")
        server.signal(signal.SIGTERM)
        assert messages(sock, 1) == ["STOPPING=1"]
        assert server.wait(timeout=5) == 0


def test_socket_activation(short_dir: Path) -> None:
    """With LISTEN_PID/LISTEN_FDS the server uses the inherited socket and leaves its file."""
    activated = short_dir / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(activated))
    listener.listen()
    fd = listener.fileno()
    # What systemd does: the socket becomes fd 3 and LISTEN_PID is the service's own pid
    # (exec keeps the pid of the shell that sets it).
    wrapper = f'exec 3<&{fd}; exec {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"'
    command = ["bash", "-c", wrapper, "bash", *PYTHON_M_TEMPMAIL]
    server = ServerProcess(dev_config(short_dir), command=command, pass_fds=(fd,))
    with server:
        listener.close()
        assert "using 1 socket(s) from systemd" in server.log
        assert server.addresses == [f"unix:{activated}"]
        assert f"listening on unix:{activated} (from systemd)" in server.log
        day = dt.datetime.now(dt.UTC).date()
        key = f"{schemes.code(schemes.HMAC, day, SECRET.encode(), 8)}@example.org"
        with Client(server.target) as client:
            assert client.query("tempmail", key).data == RECIPIENT
        assert not (short_dir / "configured.sock").exists()
        assert server.stop(timeout=5) == 0
        assert activated.exists(), "systemd owns the socket file; the service must not remove it"
