"""Load on a server: a pipelining flood, and the latency of a well-behaved client beside it."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Self

from tempmail import socketmap
from tempmail.client import Client

if TYPE_CHECKING:
    from collections.abc import Sequence


class Flood:
    """One connection that sends ``keys`` over and over and reads what comes back.

    Two threads: one sends batches of pipelined requests as fast as the server takes them,
    one drains the replies and counts their bytes (a flood that stopped reading would only be
    held back by the kernel's buffers, not served).
    """

    def __init__(self, target: str, keys: Sequence[str], *, batch: int = 2000) -> None:
        self._client = Client(target, timeout=None)
        requests = [socketmap.encode_request("tempmail", key) for key in keys]
        self._batch = b"".join(requests * max(1, batch // len(requests)))
        self._stop = threading.Event()
        self.replied = 0  # bytes of replies received so far
        self._threads = [
            threading.Thread(target=self._send, name="flood-send"),
            threading.Thread(target=self._read, name="flood-read"),
        ]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # Both directions: a sender blocked in sendall and the reader return at once.
        self._client.socket.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(30)
        self._client.close()

    def _send(self) -> None:
        while not self._stop.is_set():
            try:
                self._client.send_raw(self._batch)
            except OSError:
                return

    def _read(self) -> None:
        sock = self._client.socket
        while True:
            try:
                chunk = sock.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            self.replied += len(chunk)


def lookup_latencies(target: str, key: str, recipient: str, count: int) -> list[float]:
    """Seconds per lookup of ``key``: ``count`` in a row on one connection, as Postfix asks.

    Each must map to ``recipient``; a wrong answer raises RuntimeError.
    """
    found = []
    with Client(target, timeout=120) as client:
        for _ in range(count):
            started = time.perf_counter()
            reply = client.query("tempmail", key)
            found.append(time.perf_counter() - started)
            if reply.data != recipient:
                raise RuntimeError(f"{key}: wrong reply {reply!r}")
    return found
