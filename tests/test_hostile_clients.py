"""Hostile and broken clients: idle and slowloris crowds, more clients than the cap, clients
that vanish mid-request or mid-reply, reset their connections or never read their replies.

Each test counts what a leak would leave behind: the server's open connections, the tasks in
its event loop and this process's file descriptors, before and after.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import select
import selectors
import socket
import statistics
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import RunningServer
from helpers import RECIPIENT, FakeClock, StartServer, config_data, wait_until
from helpers_hostile import (
    NOTFOUND,
    addresses,
    baseline,
    identity,
    ok,
    request,
    settled,
    task_count,
)
from tempmail import config as config_module
from tempmail import listeners
from tempmail.client import Client
from tempmail.handler import Handler

IDENT = identity()
VALID = addresses(IDENT)[0]


def _server_data(**server: object) -> dict[str, object]:
    data = config_data()
    data["server"] = server
    return data


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (EOF or reset), without blocking."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


# --- 1000 idle and 200 slowloris clients ---------------------------------------------------

IDLE_TIMEOUT = 4.0
IDLE_CLIENTS = 1000
SLOW_CLIENTS = 200


class _Slowloris(threading.Thread):
    """Sends one byte of a request per second on each socket (never completes one in time)."""

    def __init__(self, socks: list[socket.socket]) -> None:
        super().__init__(daemon=True)
        self.socks = socks
        self.stop = threading.Event()
        self.sent = 0
        self.refused = 0  # sends that failed because the server had closed the connection
        self.payload = request(VALID)

    def run(self) -> None:
        alive = list(self.socks)
        index = 0
        while alive and not self.stop.is_set():
            byte = self.payload[index % len(self.payload) : index % len(self.payload) + 1]
            for sock in list(alive):
                try:
                    sock.send(byte)
                    self.sent += 1
                except OSError:
                    alive.remove(sock)
                    self.refused += 1
            index += 1
            self.stop.wait(1.0)


def _well_behaved_latencies(running: RunningServer, until: float) -> list[float]:
    """Lookups until ``until``: on a Postfix-like persistent connection and on new ones."""
    latencies: list[float] = []
    with running.connect() as persistent:
        while time.monotonic() < until:
            for use_new in (False, True):
                start = time.perf_counter()
                reply = running.query(VALID) if use_new else persistent.query("tempmail", VALID)
                latencies.append(time.perf_counter() - start)
                assert reply.data == RECIPIENT
    return latencies


def _wait_for_server_closes(socks: list[socket.socket], timeout: float) -> dict[int, float]:
    """When the server closed each socket (index -> monotonic time); fails on any reply."""
    closed_at: dict[int, float] = {}
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(socks):
            selector.register(sock, selectors.EVENT_READ, index)
        deadline = time.monotonic() + timeout
        while len(closed_at) < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                now = time.monotonic()
                sock = socks[key.data]
                try:
                    received = sock.recv(65536)
                except ConnectionResetError:
                    received = b""
                assert received == b"", f"a hostile client got a reply: {received!r}"
                closed_at[key.data] = now
                selector.unregister(sock)
    return closed_at


@pytest.mark.timeout(90)
def test_idle_and_slowloris_crowds_do_not_slow_down_well_behaved_clients(
    start_server: StartServer,
) -> None:
    _raise_nofile(2 * (IDLE_CLIENTS + SLOW_CLIENTS) + 512)
    data = _server_data(idle_timeout=IDLE_TIMEOUT, max_connections=2000)
    running = start_server(data, clock=FakeClock())
    tasks, fds = baseline(running)

    with contextlib.ExitStack() as stack:  # every socket is closed, even if the test fails
        hostile: list[tuple[socket.socket, float]] = []
        for _ in range(IDLE_CLIENTS + SLOW_CLIENTS):
            client = stack.enter_context(running.connect())
            hostile.append((client.socket, time.monotonic()))
        connected = time.monotonic()
        wait_until(lambda: running.server.open_connections == IDLE_CLIENTS + SLOW_CLIENTS)
        slowloris = _Slowloris([s for s, _ in hostile[IDLE_CLIENTS:]])
        slowloris.start()
        stack.callback(slowloris.join)
        stack.callback(slowloris.stop.set)

        # Well-behaved clients while the crowd is connected: one Postfix-like persistent
        # connection and one new connection per lookup, alternately.
        measure_until = hostile[0][1] + IDLE_TIMEOUT - 0.5
        assert measure_until - connected > 1.0, "connecting the crowd took too long"
        latencies = _well_behaved_latencies(running, measure_until)
        assert running.server.stats.connections_idle_closed == 0  # the crowd was all there

        p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
        print(
            f"\nwell-behaved lookups with {IDLE_CLIENTS} idle + {SLOW_CLIENTS} slowloris "
            f"clients: n={len(latencies)} p50={p50 * 1000:.2f} ms p99={p99 * 1000:.2f} ms "
            f"max={max(latencies) * 1000:.2f} ms"
        )
        assert len(latencies) >= 200
        assert p99 < 0.050

        # Every hostile connection is closed by the server after the idle timeout, not
        # before, and none got a reply (a slowloris never completes a request in time).
        sweep = min(1.0, IDLE_TIMEOUT / 4)
        closed_at = _wait_for_server_closes([s for s, _ in hostile], IDLE_TIMEOUT + sweep + 5)
        assert len(closed_at) == len(hostile)
        lifetimes = [closed_at[i] - opened for i, (_, opened) in enumerate(hostile)]
        print(
            f"hostile connections closed after {min(lifetimes):.2f}..{max(lifetimes):.2f} s "
            f"(idle_timeout {IDLE_TIMEOUT} s); slowloris bytes sent: {slowloris.sent}"
        )
        assert min(lifetimes) >= IDLE_TIMEOUT
        assert max(lifetimes) <= IDLE_TIMEOUT + sweep + (connected - hostile[0][1]) + 2.0
        assert running.server.stats.connections_idle_closed == IDLE_CLIENTS + SLOW_CLIENTS
        assert running.server.stats.lookups_ok == len(latencies)
    wait_until(settled(running, tasks, fds), what="connections, tasks and fds to settle")


# --- the connection cap ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_clients_over_the_cap_wait_and_are_served_once_room_frees(
    start_server: StartServer,
) -> None:
    running = start_server(_server_data(max_connections=5, idle_timeout=60), clock=FakeClock())
    tasks, fds = baseline(running)
    with contextlib.ExitStack() as stack:
        _over_the_cap(running, stack, tasks)
    assert running.query(VALID).data == RECIPIENT  # service is normal again
    wait_until(settled(running, tasks, fds))
    stats = running.server.stats
    assert (stats.connections_total, stats.lookups_ok) == (206, 201)


def _over_the_cap(running: RunningServer, stack: contextlib.ExitStack, tasks: int) -> None:
    """Five clients fill the cap; 200 more wait, unaccepted; each is served as room frees."""
    holders = [stack.enter_context(running.connect()) for _ in range(5)]
    wait_until(lambda: running.server.open_connections == 5)
    cap_tasks = task_count(running)
    assert cap_tasks == tasks  # connections are transport callbacks, not tasks

    # 200 more clients connect (the kernel queues them) and send a lookup each.
    excess = [stack.enter_context(running.connect()) for _ in range(200)]
    for client in excess:
        client.send_raw(request(VALID))
    readable, _, _ = select.select([client.socket for client in excess], [], [], 0.3)
    assert readable == []  # nobody over the cap is answered ...
    assert running.server.open_connections == 5  # ... or even accepted: no memory, no task
    assert task_count(running) == cap_tasks

    for client in holders:
        client.close()
    for client in excess:  # accepted in arrival order as room frees up; each gets its answer
        assert client.read_exactly(len(ok(RECIPIENT))) == ok(RECIPIENT)
        client.close()


def test_idle_timeout_frees_a_full_server(start_server: StartServer) -> None:
    running = start_server(_server_data(max_connections=3, idle_timeout=0.5), clock=FakeClock())
    tasks, fds = baseline(running)
    with contextlib.ExitStack() as stack:
        holders = [stack.enter_context(running.connect()) for _ in range(3)]
        wait_until(lambda: running.server.open_connections == 3)
        start = time.monotonic()
        assert running.query(VALID).data == RECIPIENT  # waits for the idle holders' closing
        waited = time.monotonic() - start
        assert 0.4 < waited < 3.0
        assert all(_closed_by_peer(client.socket) for client in holders)
    wait_until(settled(running, tasks, fds))
    assert running.server.stats.connections_idle_closed == 3


def test_a_graceful_stop_answers_requests_already_sent(start_server: StartServer) -> None:
    running = start_server(clock=FakeClock())
    with running.connect() as client:
        wait_until(lambda: running.server.open_connections == 1)
        client.send_raw(request(VALID) * 3)
        running.portal.call(running.server.stop)
        assert client.read_to_end() == ok(RECIPIENT) * 3


def test_a_graceful_stop_answers_requests_waiting_in_the_accept_queue(
    start_server: StartServer,
) -> None:
    running = start_server(_server_data(max_connections=1), clock=FakeClock())
    with running.connect() as holder, running.connect() as waiting:
        wait_until(lambda: running.server.open_connections == 1)  # the holder is served
        waiting.send_raw(request(VALID))  # queued by the kernel: the server is at its cap
        holder.send_raw(request(VALID))
        running.portal.call(running.server.stop)
        assert holder.read_to_end() == ok(RECIPIENT)
        assert waiting.read_to_end() == ok(RECIPIENT)


@pytest.fixture
def two_listener_server(short_dir: Path, start_server: StartServer) -> RunningServer:
    """A server on two unix sockets (as with systemd socket activation), max_connections 1."""
    bound = [listeners.bind(config_module.SocketSettings(path=short_dir / name)) for name in "ab"]
    data = _server_data(max_connections=1, idle_timeout=60)
    return start_server(data, bound=bound, clock=FakeClock())


def test_a_server_with_two_listening_sockets_answers_on_both(
    two_listener_server: RunningServer,
) -> None:
    server = two_listener_server.server
    for target in server.addresses:
        with Client(target, timeout=2) as client:
            assert client.query("tempmail", VALID).data == RECIPIENT
    assert not two_listener_server.task.done()
    wait_until(lambda: server.open_connections == 0)


def test_every_listener_keeps_accepting_after_the_cap_was_reached(
    two_listener_server: RunningServer,
) -> None:
    server = two_listener_server.server
    target_a, target_b = server.addresses
    first = Client(target_a, timeout=2)
    assert first.query("tempmail", VALID).data == RECIPIENT  # the cap (1) is reached
    with Client(target_b, timeout=5) as second:
        second.send_raw(request(VALID))  # accepted by loop B, waiting for room
        assert server.open_connections == 1
        first.close()
        assert second.read_reply().data == RECIPIENT  # served once the first one left
    wait_until(lambda: server.open_connections == 0)
    for target in (target_b, target_a):  # both loops must have woken up
        with Client(target, timeout=2) as client:
            assert client.query("tempmail", VALID).data == RECIPIENT


# --- clients that vanish --------------------------------------------------------------------


def _fill(client: Client, data: bytes, limit: int = 64 << 20) -> int:
    """Send ``data`` repeatedly without blocking until the kernel refuses more; bytes sent."""
    client.socket.setblocking(False)
    sent = 0
    try:
        while sent < limit:
            sent += client.socket.send(data)
    except BlockingIOError:
        pass
    return sent


def _reset(client: Client) -> None:
    """Close with SO_LINGER 0: TCP sends RST instead of FIN."""
    client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


MANY_REQUESTS = request(VALID) * 4000  # ~110 kB of requests, ~90 kB of replies


@pytest.mark.parametrize("transport", ["unix", "inet"])
@pytest.mark.parametrize(
    "behaviour",
    [
        "close-idle",
        "close-mid-length",
        "close-mid-request",
        "close-mid-oversized",
        "close-mid-reply",
        "reset-idle",
        "reset-mid-request",
        "reset-mid-reply",
        "shutdown-write-then-close",
    ],
)
def test_vanishing_clients_leave_nothing_behind(
    start_server: StartServer, transport: str, behaviour: str
) -> None:
    data = _server_data(idle_timeout=60)
    data["socket"] = {"type": transport}
    running = start_server(data, clock=FakeClock())
    tasks, fds = baseline(running)
    for _ in range(20):
        client = running.connect()
        action, _, moment = behaviour.partition("-")
        if moment == "mid-length":
            client.send_raw(b"2")
        elif moment == "mid-request":
            client.send_raw(request(VALID)[:12])
        elif moment == "mid-oversized":
            client.send_raw(b"90000:tempmail " + b"x" * 30000)
        elif moment == "mid-reply":
            _fill(client, MANY_REQUESTS)
        elif moment == "write-then-close":
            client.send_raw(request(VALID)[:5])
            client.finish_sending()
        if action == "reset" and transport == "inet":
            _reset(client)
        else:
            client.close()
    stats = running.server.stats
    wait_until(lambda: stats.connections_total == 20, what="every connection to be accepted")
    wait_until(settled(running, tasks, fds), what=f"{behaviour} connections to be cleaned up")
    assert stats.protocol_errors == 0
    assert stats.connections_idle_closed == 0  # all noticed at once, not by the sweeper
    assert running.query(VALID).data == RECIPIENT


def test_a_client_that_never_reads_is_held_back_and_closed(start_server: StartServer) -> None:
    running = start_server(_server_data(idle_timeout=0.5), clock=FakeClock())
    tasks, fds = baseline(running)
    with running.connect() as client:
        sent = _fill(client, MANY_REQUESTS)
        # Backpressure: once the socket buffers are full the server stops reading, so the
        # client cannot push more than the kernel buffers hold (~260 kB here; limit 64 MB).
        print(f"\na never-reading client could send {sent} bytes before the kernel refused")
        assert sent < 4 << 20
        stats = running.server.stats
        wait_until(lambda: stats.connections_idle_closed == 1, timeout=5)  # by the sweeper
        assert stats.lookups_ok > 0  # it was answered until it stopped reading
        client.socket.settimeout(5)  # blocking again, as Client reads
        received = client.read_to_end()  # ends at the close, or at the reset
    # What arrived is the start of the replies to what was sent (the last one may be cut
    # short by the close, which a client sees as an error, i.e. Postfix defers): no more.
    assert (ok(RECIPIENT) * (sent // len(request(VALID)))).startswith(received)
    wait_until(settled(running, tasks, fds))
    assert running.query(VALID).data == RECIPIENT


def _settled_count(read: Callable[[], int], quiet: float = 0.3, timeout: float = 30) -> int:
    """Wait until a counter has stopped changing for ``quiet`` seconds; its value."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError("the counter never settled")
        time.sleep(0.02)
        if (now := read()) != last:
            last, since = now, time.monotonic()
    return last


def test_a_client_that_never_reads_cannot_make_the_server_hold_much(
    start_server: StartServer,
) -> None:
    running = start_server(_server_data(idle_timeout=60), clock=FakeClock())
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        with running.connect() as client:
            # "1: ," is a well-formed request for map name "" and key "": 4 bytes in, a
            # PERM "unknown map name" reply of about 100 bytes out.
            _fill(client, b"1: ," * 16384)
            _settled_count(lambda: running.server.stats.lookups_perm)
            held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    print(f"\nserver memory held for one client that never reads: {held / 1024:.0f} KiB")
    assert held < 512 * 1024  # a few reads and replies of 64 KiB, not 24 times that


def test_many_short_lived_connections_leak_nothing(start_server: StartServer) -> None:
    running = start_server(clock=FakeClock())
    tasks, fds = baseline(running)
    for index in range(500):
        with running.connect() as client:
            client.send_raw(request(VALID if index % 2 else "x@example.org"))
            expected = ok(RECIPIENT) if index % 2 else NOTFOUND
            assert client.read_exactly(len(expected)) == expected
    wait_until(settled(running, tasks, fds))
    assert running.server.stats.connections_total == 500


def test_an_unexpected_error_closes_only_that_connection(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = Handler.answer

    def answer(self: Handler, payload: bytes, now: float) -> object:
        if b"boom" in payload:
            raise RuntimeError("simulated bug")
        return original(self, payload, now)

    monkeypatch.setattr(Handler, "answer", answer)
    running = start_server(clock=FakeClock())
    tasks, fds = baseline(running)
    with running.connect() as bystander, running.connect() as victim:
        assert bystander.query("tempmail", VALID).data == RECIPIENT
        victim.send_raw(request("boom@example.org"))
        victim.socket.settimeout(5)
        assert victim.read_to_end() == b""  # closed, no reply
        assert bystander.query("tempmail", VALID).data == RECIPIENT
    wait_until(settled(running, tasks, fds))
    assert "unexpected error while serving a connection" in caplog.text


# --- reloads under load ----------------------------------------------------------------------


class _LoadClient(threading.Thread):
    """Looks up a valid and an invalid address in a loop; counts wrong or failed answers."""

    def __init__(self, target: str, persistent: bool) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.persistent = persistent
        self.stop = threading.Event()
        self.lookups = 0
        self.failures: list[str] = []

    def run(self) -> None:
        client = Client(self.target, timeout=5) if self.persistent else None
        try:
            while not self.stop.is_set():
                for key, expected in ((VALID, f"OK {RECIPIENT}"), ("no@example.org", "NOTFOUND ")):
                    try:
                        if client is None:
                            with Client(self.target, timeout=5) as once:
                                reply = once.query("tempmail", key)
                        else:
                            reply = client.query("tempmail", key)
                        got = f"{reply.status.value} {reply.data}"
                    except OSError as exc:
                        got = f"error {errno.errorcode.get(exc.errno or 0, exc)}"
                    self.lookups += 1
                    if got != expected:
                        self.failures.append(got)
        finally:
            if client is not None:
                client.close()


RELOADS = 30


def _wait_for_progress(loaders: list[_LoadClient], lookups: int) -> None:
    """Until every client has done ``lookups`` more lookups."""
    marks = [loader.lookups + lookups for loader in loaders]
    wait_until(lambda: all(c.lookups >= n for c, n in zip(loaders, marks, strict=True)))


@pytest.mark.timeout(60)
def test_reloads_under_load_lose_no_lookup(start_server: StartServer) -> None:
    data = config_data()
    running = start_server(data, clock=FakeClock())
    loaders = [_LoadClient(running.target, persistent=i % 2 == 0) for i in range(4)]
    for loader in loaders:
        loader.start()
    other_identity = {**data["identities"]["default"], "domain": "example.com"}
    results = []
    for index in range(RELOADS):
        if index % 3 == 2:  # a broken config: the old one must stay in force
            running.config_path.write_text("[identities.default\nsecret = ")
        else:
            changed = config_data()
            changed["server"] = {"max_query_length": 256 + index, "idle_timeout": 30 + index}
            if index % 2:
                changed["identities"]["other"] = other_identity
            running.rewrite_config(changed)
        results.append(running.reload())
        # Let every client finish a few lookups with this configuration before the next.
        _wait_for_progress(loaders, 4)
    for loader in loaders:
        loader.stop.set()
    for loader in loaders:
        loader.join(timeout=10)
    lookups = sum(loader.lookups for loader in loaders)
    failures = [f for loader in loaders for f in loader.failures]
    print(f"\n{RELOADS} reloads under load: {lookups} lookups, {len(failures)} failed")
    assert failures == []
    assert lookups > 100
    assert results == [index % 3 != 2 for index in range(RELOADS)]
    stats = running.server.stats
    assert (stats.reloads_ok, stats.reloads_failed) == (20, 10)
    assert statistics.mean([loader.lookups for loader in loaders]) > 10
