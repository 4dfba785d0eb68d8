"""The server over real unix and TCP sockets."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import grp
import os
import pwd
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import anyio
import pytest

from helpers import RECIPIENT, SECRET, FakeClock, StartServer, at, config_data
from tempmail import config as config_module
from tempmail import connection, listeners, runtime, schemes, server, socketmap
from tempmail.errors import ServerError
from tempmail.handler import Handler, HandlerRef
from tempmail.netstring import encode
from tempmail.socketmap import Status

OK_REPLY = f"{len(RECIPIENT) + 3}:OK {RECIPIENT},".encode()
NOTFOUND = b"9:NOTFOUND ,"


def today_key(day: dt.date | None = None, secret: str = SECRET) -> str:
    day = day or dt.datetime.now(dt.UTC).date()
    return f"{schemes.code(schemes.HMAC, day, secret.encode(), 8)}@example.org"


def request(key: str) -> bytes:
    return socketmap.encode_request("tempmail", key)


@pytest.mark.parametrize("kind", ["unix", "inet"])
def test_lookups_over_unix_and_tcp(start_server: StartServer, kind: str) -> None:
    data = config_data()
    data["socket"] = {"type": kind}
    running = start_server(data)
    assert running.target.startswith(f"{kind}:")
    assert running.query(today_key()).data == RECIPIENT
    assert running.query(today_key().upper()).data == RECIPIENT
    assert running.query("nobody@example.org").status is Status.NOTFOUND


def test_tcp_binds_loopback_by_default(start_server: StartServer) -> None:
    data = config_data()
    data["socket"] = {"type": "inet"}
    assert start_server(data).target.startswith("inet:127.0.0.1:")


def test_many_requests_per_connection(start_server: StartServer) -> None:
    running = start_server()
    with running.connect() as client:
        for _ in range(200):
            assert client.query("tempmail", today_key()).data == RECIPIENT
            assert client.query("tempmail", "x@example.org").status is Status.NOTFOUND


def test_pipelined_requests_are_answered_in_order(start_server: StartServer) -> None:
    running = start_server()
    keys = [today_key() if i % 3 == 0 else f"n{i}@example.org" for i in range(300)]
    expected = b"".join(OK_REPLY if i % 3 == 0 else NOTFOUND for i in range(300))
    with running.connect() as client:
        client.send_raw(b"".join(request(k) for k in keys))
        assert client.read_exactly(len(expected)) == expected


def test_a_request_sent_byte_by_byte(start_server: StartServer) -> None:
    running = start_server()
    with running.connect() as client:
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for byte in request(today_key()):
            client.send_raw(bytes([byte]))
        assert client.read_exactly(len(OK_REPLY)) == OK_REPLY


def test_malformed_netstring_gets_perm_and_close(start_server: StartServer) -> None:
    running = start_server()
    with running.connect() as client:
        client.send_raw(b"12:tempmail abc;")
        reply = client.read_to_end()
    assert reply == encode(
        b"PERM malformed netstring: netstring of length 12 is not terminated by ','"
    )
    assert running.query(today_key()).data == RECIPIENT  # others are unaffected


def test_idle_connections_are_closed(start_server: StartServer) -> None:
    data = config_data()
    data["server"] = {"idle_timeout": 0.3}
    running = start_server(data)
    with running.connect() as client:
        client.send_raw(request(today_key()))
        assert client.read_exactly(len(OK_REPLY)) == OK_REPLY
        started = time.monotonic()
        assert client.read_to_end() == b""  # the server closed it
        assert 0.2 < time.monotonic() - started < 2.0
    assert running.server.stats.connections_idle_closed == 1


def test_a_slow_partial_request_does_not_count_as_activity(start_server: StartServer) -> None:
    """Dribbling bytes of one request never completes a request: closed after the timeout."""
    data = config_data()
    data["server"] = {"idle_timeout": 0.4}
    running = start_server(data)
    with running.connect() as client:
        started = time.monotonic()
        closed = False
        for byte in b"100:tempmail " + b"x" * 80:
            try:
                client.send_raw(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.05)
        if not closed:
            assert client.read_to_end() == b""
        assert time.monotonic() - started < 3.0


def test_connection_cap_makes_excess_clients_wait(start_server: StartServer) -> None:
    data = config_data()
    data["server"] = {"max_connections": 2}
    running = start_server(data)
    first, second = running.connect(), running.connect()
    for client in (first, second):
        client.send_raw(request(today_key()))
        assert client.read_exactly(len(OK_REPLY)) == OK_REPLY
    third = running.connect()  # accepted by the kernel's backlog, not yet by the server
    third.send_raw(request(today_key()))
    third.socket.settimeout(0.5)
    with pytest.raises(TimeoutError):
        third.read_exactly(1)
    assert running.server.open_connections == 2
    first.close()
    third.socket.settimeout(5)
    assert third.read_exactly(len(OK_REPLY)) == OK_REPLY
    second.close()
    third.close()


def test_day_changes_at_local_midnight_without_restart(start_server: StartServer) -> None:
    clock = FakeClock(at("2026-11-27T23:59:59+01:00"))
    running = start_server(config_data(timezone="Europe/Berlin"), clock=clock)
    new_day = today_key(dt.date(2026, 11, 28))
    old_day = today_key(dt.date(2026, 11, 26))
    with running.connect() as client:  # one connection across midnight, as Postfix keeps them
        assert client.query("tempmail", new_day).status is Status.NOTFOUND
        assert client.query("tempmail", old_day).data == RECIPIENT
        clock.now = at("2026-11-28T00:00:00+01:00")
        assert client.query("tempmail", new_day).data == RECIPIENT
        assert client.query("tempmail", old_day).status is Status.NOTFOUND


def test_reload_changes_secret_and_keeps_old_config_on_error(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    running = start_server()
    new_secret = "the rotated secret value"
    data = config_data(secret=new_secret)
    running.rewrite_config(data)
    assert running.reload() is True
    assert running.query(today_key(secret=new_secret)).data == RECIPIENT
    assert running.query(today_key()).status is Status.NOTFOUND
    running.rewrite_config({"identities": {"default": {"domain": "example.org"}}})
    assert running.reload() is False
    assert running.query(today_key(secret=new_secret)).data == RECIPIENT
    assert running.server.stats.reloads_ok == 1
    assert running.server.stats.reloads_failed == 1
    assert "reload failed (signal), still serving the previous configuration" in caplog.text
    assert "identities.default.recipient: missing" in caplog.text


def test_stop_closes_idle_connections_and_removes_the_socket(start_server: StartServer) -> None:
    running = start_server()
    path = Path(running.target.removeprefix("unix:"))
    with running.connect() as idle:
        idle.send_raw(request(today_key()))
        assert idle.read_exactly(len(OK_REPLY)) == OK_REPLY
        started = time.monotonic()
        running.portal.call(running.server.stop)
        assert idle.read_to_end() == b""
        assert time.monotonic() - started < 1.0
    deadline = time.monotonic() + 2
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not path.exists()


# --- unix socket setup --------------------------------------------------------------------


def settings(path: Path, **kwargs: object) -> config_module.SocketSettings:
    return config_module.SocketSettings(type="unix", path=path, **kwargs)  # type: ignore[arg-type]


def test_socket_mode_is_applied(short_dir: Path) -> None:
    for mode in (0o660, 0o600, 0o666):
        bound = listeners.bind(settings(short_dir / "s.sock", mode=mode))
        assert stat.S_IMODE((short_dir / "s.sock").stat().st_mode) == mode
        bound.close()
        assert not (short_dir / "s.sock").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a socket's owner needs root")
def test_socket_owner_and_group_by_name_and_id(short_dir: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid)
    for owner, grp_value in (("nobody", group.gr_name), (nobody.pw_uid, nobody.pw_gid)):
        bound = listeners.bind(settings(short_dir / "s.sock", owner=owner, group=grp_value))
        info = (short_dir / "s.sock").stat()
        assert (info.st_uid, info.st_gid) == (nobody.pw_uid, nobody.pw_gid)
        bound.close()


def test_unknown_owner_or_group(short_dir: Path) -> None:
    with pytest.raises(
        ServerError, match=r"socket\.owner: no user named 'no-such-user' on this system"
    ):
        listeners.bind(settings(short_dir / "s.sock", owner="no-such-user"))
    with pytest.raises(
        ServerError, match=r"socket\.group: no group named 'no-such-group' on this system"
    ):
        listeners.bind(settings(short_dir / "s.sock", group="no-such-group"))


def test_a_stale_socket_is_replaced(short_dir: Path) -> None:
    path = short_dir / "s.sock"
    crashed = socket.socket(socket.AF_UNIX)
    crashed.bind(str(path))
    crashed.close()  # the file stays, nobody listens: what a SIGKILLed server leaves
    bound = listeners.bind(settings(path))
    with socket.socket(socket.AF_UNIX) as probe:
        probe.connect(str(path))
    bound.close()


def test_a_live_socket_is_not_stolen(start_server: StartServer) -> None:
    running = start_server()
    path = Path(running.target.removeprefix("unix:"))
    with pytest.raises(
        ServerError, match=f"socket.path: another server is already listening on {path}"
    ):
        listeners.bind(settings(path))
    assert running.query(today_key()).data == RECIPIENT


def test_a_path_that_is_not_a_socket_is_never_deleted(short_dir: Path) -> None:
    path = short_dir / "important.txt"
    path.write_text("keep me")
    with pytest.raises(ServerError, match="exists and is not a socket; refusing to delete it"):
        listeners.bind(settings(path))
    assert path.read_text() == "keep me"


def test_missing_socket_directory(short_dir: Path) -> None:
    with pytest.raises(ServerError, match=r"^socket.path: the directory .*/missing does not exist"):
        listeners.bind(settings(short_dir / "missing" / "s.sock"))


def test_missing_socket_directory_advice_on_a_host() -> None:
    """The directory belongs to the service user: a root-owned one leaves a stale socket."""
    advice = listeners.missing_directory_advice(
        Path("/var/spool/postfix/tempmail"), "tm-svc", container=False
    )
    assert advice == (
        "socket.path: the directory /var/spool/postfix/tempmail does not exist; create it "
        "owned by the service user, so that it can remove the socket when it stops: "
        "'install -d -o tm-svc -g postfix -m 0750 /var/spool/postfix/tempmail'"
    )


def test_missing_socket_directory_advice_in_a_container() -> None:
    """install -d is no advice inside a container: the directory is a volume mount."""
    advice = listeners.missing_directory_advice(Path("/run/tempmail"), None, container=True)
    assert advice == (
        "socket.path: the directory /run/tempmail does not exist in this container; mount "
        "the volume shared with Postfix there (e.g. -v tempmail-socket:/run/tempmail), or set "
        "[socket] path to a file in the directory where it is mounted"
    )
    assert runtime.in_container({"container": "podman"})
    assert runtime.in_container({"KUBERNETES_SERVICE_HOST": "10.0.0.1"})


def test_a_socket_directory_that_cannot_be_written_names_the_fix() -> None:
    """Permission denied or a read-only file system: on a host, in a container."""
    denied = PermissionError(13, "Permission denied")
    read_only = OSError(30, "Read-only file system")
    where = Path("/run/tempmail")
    uid, gid = os.geteuid(), os.getegid()
    user = pwd.getpwuid(uid).pw_name
    assert listeners._directory_fix(where, denied, container=False) == (
        f"the server runs as {user} and must be able to enter and write /run/tempmail (e.g. "
        f"'chown {user} /run/tempmail && chmod u+rwx /run/tempmail')"
    )
    assert listeners._directory_fix(where, denied, container=True) == (
        f"this container runs as uid {uid}: the volume at /run/tempmail must let it enter and "
        f"write (owned by uid {uid}, or group {gid} with mode 0770; in Kubernetes, "
        f"fsGroup: {gid})"
    )
    assert listeners._directory_fix(where, read_only, container=True) == (
        "mount a volume at /run/tempmail (the socket is created there)"
    )
    assert listeners._directory_fix(where, read_only, container=False) == (
        "mount a writable file system at /run/tempmail (the socket is created there)"
    )


def test_closing_never_removes_a_successors_socket(short_dir: Path) -> None:
    path = short_dir / "s.sock"
    old = listeners.bind(settings(path))
    old.sock.close()
    path.unlink()
    new = listeners.bind(settings(path))  # a restarted server took the path
    old.close()
    assert path.exists()
    new.close()
    assert not path.exists()


def test_tcp_port_in_use(start_server: StartServer) -> None:
    data = config_data()
    data["socket"] = {"type": "inet"}
    running = start_server(data)
    port = int(running.target.rpartition(":")[2])
    with pytest.raises(
        ServerError, match=f"socket: cannot listen on inet:127.0.0.1:{port}: Address already in use"
    ):
        listeners.bind(config_module.SocketSettings(type="inet", port=port))


def test_a_socket_directory_that_is_a_file(short_dir: Path) -> None:
    (short_dir / "file").write_text("not a directory")
    with pytest.raises(ServerError) as caught:
        listeners.bind(settings(short_dir / "file" / "s.sock"))
    assert str(caught.value) == (
        f"socket.path: cannot open {short_dir}/file: Not a directory; {short_dir}/file is not "
        "a directory: socket.path must name a file in a directory"
    )


def test_systemd_passing_a_malformed_socket_count() -> None:
    with pytest.raises(ServerError, match=r"^LISTEN_FDS is not a number$"):
        listeners.inherited({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "three"})


def test_inherited_sockets_need_matching_pid() -> None:
    assert listeners.inherited({"LISTEN_PID": "1", "LISTEN_FDS": "1"}) == []
    assert listeners.inherited({}) == []


#: Run in a process of its own: fd 3 there is a connected socket, as a unit with Accept=yes
#: passes it.
_ACCEPT_YES = """
import os, socket, sys
from tempmail import listeners
from tempmail.errors import ServerError
client, served = socket.socketpair()
os.dup2(served.fileno(), 3)
try:
    listeners.inherited({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"})
except ServerError as exc:
    print(exc)
"""


def test_a_connected_socket_from_systemd_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _ACCEPT_YES], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout == (
        "inherited file descriptor 3 is not a listening socket; tempmail's socket unit needs "
        "Accept=no (the default)\n"
    )


def test_an_accept_error_that_persists_backs_off_instead_of_spinning(
    start_server: StartServer,
) -> None:
    """accept() failing with EINVAL forever (a connected socket) must not freeze the loop."""
    running = start_server()
    listening, peer = socket.socketpair()
    peer.sendall(b"x")  # readable, but accept() on it fails with EINVAL
    listening.setblocking(False)
    before = running.server.stats.accept_errors

    async def accept_for_a_while() -> None:
        with anyio.move_on_after(0.3):
            await running.server._accept_loop(listening)

    try:
        running.portal.call(accept_for_a_while)
    finally:
        listening.close()
        peer.close()
    # Backing off 10, 20, 40, 80, 160 ms: a handful of attempts, not millions.
    assert 1 <= running.server.stats.accept_errors - before <= 12
    assert running.query(today_key()).status is Status.OK


def test_at_the_cap_the_longest_idle_connection_makes_room(start_server: StartServer) -> None:
    """Idle connections cannot lock Postfix out: at max_connections the idlest is closed."""
    monotonic = FakeClock(1000.0)
    data = config_data()
    data["server"] = {"max_connections": 2}
    running = start_server(data, monotonic=monotonic)
    older, newer = running.connect(), running.connect()
    for client in (older, newer):
        client.send_raw(request(today_key()))
        assert client.read_exactly(len(OK_REPLY)) == OK_REPLY
        monotonic.now += 0.5
    monotonic.now += 1.0  # both idle for at least EVICT_IDLE_AFTER (1 s)
    with running.connect() as third:
        assert third.query("tempmail", today_key()).data == RECIPIENT
    assert older.read_to_end() == b""  # the idlest was closed
    newer.send_raw(request(today_key()))
    assert newer.read_exactly(len(OK_REPLY)) == OK_REPLY
    assert running.server.stats.connections_evicted == 1
    older.close()
    newer.close()


def test_recently_active_connections_are_not_evicted(start_server: StartServer) -> None:
    """A connection active within the last second is never closed to make room."""
    data = config_data()
    data["server"] = {"max_connections": 1}
    running = start_server(data)
    with running.connect() as busy, running.connect() as waiting:
        busy.send_raw(request(today_key()))
        assert busy.read_exactly(len(OK_REPLY)) == OK_REPLY
        waiting.send_raw(request(today_key()))
        waiting.socket.settimeout(0.3)
        with pytest.raises(TimeoutError):
            waiting.read_exactly(1)
        assert running.server.stats.connections_evicted == 0


def test_stop_does_not_wait_for_a_half_sent_request(start_server: StartServer) -> None:
    """A partial request cannot be answered: at shutdown it is dropped, not waited for."""
    running = start_server()
    with running.connect() as dribbler:
        dribbler.send_raw(b"40:tempmail abc")
        time.sleep(0.05)
        started = time.monotonic()
        running.portal.call(running.server.stop)
        assert dribbler.read_to_end() == b""
        assert time.monotonic() - started < 1.0


def test_a_client_that_connected_before_the_stop_gets_its_first_request_answered(
    start_server: StartServer,
) -> None:
    """It connected while the socket was there and is about to ask: it gets its answer.

    Before, such a client was closed unanswered when the stop found nothing from it in the
    kernel (benchmarks.chaos counted it "lost in flight", 1-6 per 30 restarts).
    """
    running = start_server()
    with running.connect() as client:
        deadline = time.monotonic() + 5
        while running.server.open_connections != 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        running.portal.call(running.server.stop)
        time.sleep(0.2)  # less than the grace for a first request
        assert client.query("tempmail", today_key()).data == RECIPIENT
        assert client.read_to_end() == b""  # then it is closed


def test_a_silent_client_does_not_hold_the_stop_longer_than_the_grace(
    start_server: StartServer,
) -> None:
    running = start_server()
    with running.connect() as silent:
        deadline = time.monotonic() + 5
        while running.server.open_connections != 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        started = time.monotonic()
        running.portal.call(running.server.stop)
        assert silent.read_to_end() == b""
        took = time.monotonic() - started
    assert connection.FIRST_REQUEST_GRACE <= took < connection.FIRST_REQUEST_GRACE + 0.5


def test_reload_warns_about_settings_that_need_a_restart(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    running = start_server()
    data = config_data()
    data["server"] = {"event_loop": "asyncio", "idle_timeout": 30}
    data["socket"] = {"path": running.target.removeprefix("unix:")}
    running.rewrite_config(data)
    assert running.reload() is True
    assert (
        "changes to server.event_loop take effect at the next restart; the running server "
        "keeps the previous values" in caplog.text
    )
    assert running.server.config.server.idle_timeout == 30


def test_at_the_cap_a_connection_that_does_not_read_makes_room_when_none_is_idle_long(
    start_server: StartServer,
) -> None:
    """The only idle connection is recent (Postfix's): the one not reading its replies goes."""
    monotonic = FakeClock(1000.0)  # never advances: the idle connection stays recent
    data = config_data()
    data["server"] = {"max_connections": 2}
    running = start_server(data, monotonic=monotonic)
    with running.connect() as postfix, running.connect() as hog:
        postfix.send_raw(request(today_key()))
        assert postfix.read_exactly(len(OK_REPLY)) == OK_REPLY
        hog.socket.setblocking(False)
        burst = memoryview(b"1: ," * 65536)  # PERM replies, never read
        with contextlib.suppress(BlockingIOError):
            while burst:
                burst = burst[hog.socket.send(burst) :]
        with running.connect() as third:
            third.socket.settimeout(5)
            assert third.query("tempmail", today_key()).data == RECIPIENT
        assert running.server.stats.connections_evicted_held == 1
        assert running.server.stats.connections_evicted == 0
        postfix.send_raw(request(today_key()))  # still served
        assert postfix.read_exactly(len(OK_REPLY)) == OK_REPLY


class _EndlessBacklog:
    """A listener whose backlog is never found empty, as a TCP socket's need not be at
    shutdown (it keeps its name, so clients may go on connecting)."""

    def __init__(self) -> None:
        self.passes = 0
        self.closed = False

    def unlink(self) -> None:
        pass

    def accept_pending(self, limit: int = 0) -> list[socket.socket]:  # noqa: ARG002
        self.passes += 1
        waiting, client = socket.socketpair()
        client.close()  # a client that connected and left
        return [waiting]

    def close(self) -> None:
        self.closed = True


def test_a_stop_ends_while_clients_keep_arriving(start_server: StartServer) -> None:
    running = start_server()
    endless = _EndlessBacklog()
    running.server._bound.append(endless)  # type: ignore[arg-type]
    running.portal.call(running.server.stop)
    running.task.result(timeout=30)
    assert endless.passes == server.SHUTDOWN_ACCEPT_PASSES
    assert endless.closed


class _Owner:
    def __init__(self) -> None:
        self.reports: list[int] = []

    def connection_opened(self, opened: connection.SocketmapConnection) -> None:
        pass

    def held_changed(self, changed: connection.SocketmapConnection, held: int) -> None:  # noqa: ARG002
        self.reports.append(held)

    def connection_closed(self, closed: connection.SocketmapConnection) -> None:
        pass


def test_a_connection_is_idle_from_when_it_opens_not_from_when_it_was_made() -> None:
    """At the cap an accepted client may wait seconds for room: that wait is not idleness."""
    monotonic = FakeClock(100.0)
    loaded = config_module.parse(config_data(), environ={})
    made = connection.SocketmapConnection(
        _Owner(), HandlerRef(Handler(loaded, time.time())), time.time, monotonic
    )
    monotonic.now = 160.0

    async def open_it() -> None:
        made.connection_made(cast("asyncio.Transport", object()))

    asyncio.run(open_it())
    assert made.last_active == 160.0


class _Transport:
    """Just enough of a transport: a write buffer whose size the test sets."""

    def __init__(self) -> None:
        self.buffered = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass

    def get_extra_info(self, name: str) -> None:  # noqa: ARG002
        return None


def test_after_the_server_recounts_what_a_connection_holds_growth_is_reported_again() -> None:
    """A write buffer that drained silently, then filled again, is reported: the server's
    recount (when all connections held too much) is where the next report counts from."""
    owner = _Owner()
    loaded = config_module.parse(config_data(), environ={})
    served = connection.SocketmapConnection(
        owner, HandlerRef(Handler(loaded, time.time())), time.time, time.monotonic
    )
    transport = _Transport()
    ask = request("nobody@example.org")

    async def run() -> None:
        served.connection_made(cast("asyncio.Transport", transport))
        transport.buffered = 60_000  # replies the client does not read
        served.data_received(ask)
        transport.buffered = 0  # then it read them all: no turn, no report
        assert served.measure_held() == 0  # the server's recount
        transport.buffered = 60_000  # and it stopped reading again
        served.data_received(ask)

    asyncio.run(run())
    assert owner.reports == [60_000, 60_000]


def test_a_stop_answers_every_request_already_sent_by_a_pipelining_client(
    start_server: StartServer,
) -> None:
    """Requests that arrived before the stop are answered, also those the kernel still held
    while the connection had paused reading to give the others their turn."""
    running = start_server()
    ask = request(today_key())
    with running.connect() as client:
        client.send_raw(ask * 8000)  # 192 KB: read at once, then answered turn by turn
        time.sleep(0.01)  # the server has read it and pauses reading between its turns
        client.send_raw(ask * 4000)  # so this waits in the kernel (it fits in the buffer)
        running.portal.call(running.server.stop)
        replies = client.read_to_end()
    assert len(replies) // len(OK_REPLY) == 12_000
    assert replies == OK_REPLY * 12_000
