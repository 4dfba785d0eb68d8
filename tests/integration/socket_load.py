"""Pipelined lookups on the sidecar's socket, run inside a container of the sidecar image.

The fault tests start this file with the image's Python (which has tempmail installed), from a
read-only mount, in a container with the shared socket volume (fault_tools.SocketClient). It
speaks through :class:`tempmail.client.Client` and records, for every batch of pipelined
requests, when the write returned and how many replies came back, so that a shutdown can be
judged against the server's own "received SIGTERM" log time. At the end it prints one line,
``RESULT {json}``.

What it does is read from ``$SPEC`` (JSON, see :class:`Spec`). Modes:

* ``load``: every connection pipelines batches until SIGTERM, reconnecting when the server is
  gone; "recovered" is printed once, when a batch is answered after a connection failed;
* ``freeze``: every connection is served once (its warm-up batch), then "ready" is printed; on
  SIGUSR1 each connection writes one batch, "sent" is printed once all have, and each waits
  for its replies.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from tempmail.client import Client
from tempmail.errors import ProtocolError
from tempmail.netstring import NetstringError, Truncated
from tempmail.socketmap import MalformedReply, Reply, encode_request

#: How long one read or connect may take before the batch counts as failed.
TIMEOUT = 10.0


@dataclass(frozen=True)
class Spec:
    """What to ask, where, and how hard."""

    socket: str  # the target, unix:PATH
    mode: Literal["load", "freeze"]
    map_name: str
    keys: tuple[tuple[str, str], ...]  # (key, the reply it must get as "STATUS data")
    connections: int
    batch: int  # requests written at once on a connection
    pause: float  # seconds between two batches of a connection ("load")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        data = json.loads(text)
        data["keys"] = tuple((key, reply) for key, reply in data["keys"])
        return cls(**data)


@dataclass(frozen=True)
class Batch:
    """One batch of pipelined requests, as the client saw it."""

    connection: int
    sent: float | None  # time.time() when the write returned (None: the write failed)
    done: float  # when the last reply arrived, or the connection failed
    answered: int  # replies received
    outcome: str  # "answered", "closed" (end of stream), or what went wrong (an errno name)
    wrong: int  # replies that differ from the expected ones
    size: int  # requests in the batch


def reply_text(reply: Reply) -> str:
    """A reply as the spec writes it: ``OK user@localhost``, ``NOTFOUND `` (with the space)."""
    return f"{reply.status.value} {reply.data}"


def failure_name(exc: Exception) -> str:
    """A short name for why a batch was not answered."""
    if isinstance(exc, Truncated):
        return "closed"  # the stream ended inside a reply
    if isinstance(exc, NetstringError | MalformedReply):
        return type(exc).__name__  # a broken reply: never expected of the server
    if isinstance(exc, ProtocolError):
        return "closed"  # the stream ended between replies
    if isinstance(exc, OSError):
        return errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    raise exc


class LoadClient:
    """The threads of one run; see the module docstring."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.stop = threading.Event()
        self.go = threading.Event()
        self.batches: list[Batch] = []
        self.connect_errors: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._ready = 0
        self._sent = 0
        self._gap = False
        self._recovered = False

    def run(self) -> dict[str, Any]:
        """Run every connection until the mode's end; what they recorded."""
        target = self._load if self.spec.mode == "load" else self._freeze
        threads = [
            threading.Thread(target=target, args=(index,), daemon=True)
            for index in range(self.spec.connections)
        ]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads) and not self.stop.is_set():
            time.sleep(0.02)
        for thread in threads:
            thread.join(15)
        with self._lock:
            return {
                "batches": [dataclasses.asdict(batch) for batch in self.batches],
                "connect_errors": dict(self.connect_errors),
            }

    def _requests(self, offset: int) -> tuple[bytes, list[str]]:
        """A batch starting at key ``offset``: the bytes to write and the replies expected."""
        keys = self.spec.keys
        chosen = [keys[(offset + i) % len(keys)] for i in range(self.spec.batch)]
        payload = b"".join(encode_request(self.spec.map_name, key) for key, _ in chosen)
        return payload, [expected for _, expected in chosen]

    def _connect(self) -> Client | None:
        try:
            return Client(self.spec.socket, timeout=TIMEOUT)
        except OSError as exc:
            with self._lock:
                self.connect_errors[failure_name(exc)] += 1
                self._gap = True
            return None

    def _receive(self, client: Client, expected: list[str]) -> tuple[list[str], str]:
        replies: list[str] = []
        try:
            while len(replies) < len(expected):
                replies.append(reply_text(client.read_reply()))
        except (ProtocolError, OSError) as exc:
            return replies, failure_name(exc)
        return replies, "answered"

    def _record(
        self,
        index: int,
        sent: float | None,
        expected: list[str],
        received: tuple[list[str], str],
    ) -> str:
        """Keep what one batch got; its outcome."""
        replies, outcome = received
        wrong = sum(got != wanted for got, wanted in zip(replies, expected, strict=False))
        batch = Batch(index, sent, time.time(), len(replies), outcome, wrong, len(expected))
        with self._lock:
            self.batches.append(batch)
        return outcome

    def _send(self, index: int, client: Client, offset: int) -> tuple[float | None, list[str]]:
        """Write the batch at ``offset``; when the write returned (None: it failed, and the
        batch is recorded as such), and the replies expected."""
        payload, expected = self._requests(offset)
        try:
            client.send_raw(payload)
        except OSError as exc:
            self._record(index, None, expected, ([], failure_name(exc)))
            return None, expected
        return time.time(), expected

    def _exchange(self, index: int, client: Client, offset: int) -> bool:
        """Write one batch and read its replies; whether all came."""
        sent, expected = self._send(index, client, offset)
        if sent is None:
            return False
        return self._record(index, sent, expected, self._receive(client, expected)) == "answered"

    def _load(self, index: int) -> None:
        offset = index * self.spec.batch
        while not self.stop.is_set():
            client = self._connect()
            if client is None:
                time.sleep(0.02)
                continue
            with client:
                while not self.stop.is_set() and self._exchange(index, client, offset):
                    offset += self.spec.batch
                    self._note_recovery()
                    if self.spec.pause:
                        time.sleep(self.spec.pause)

    def _note_recovery(self) -> None:
        with self._lock:
            if self._gap and not self._recovered:
                self._recovered = True
                say("recovered")

    def _freeze(self, index: int) -> None:
        client = self._connect()
        if client is None:
            say("cannot connect")
            return
        with client:
            if not self._exchange(index, client, 0):  # the server has accepted and served us
                say("warm-up failed")
                return
            with self._lock:
                self._ready += 1
                if self._ready == self.spec.connections:
                    say("ready")
            self.go.wait()
            sent, expected = self._send(index, client, index * self.spec.batch)
            with self._lock:
                self._sent += 1
                if self._sent == self.spec.connections:
                    say("sent")
            if sent is not None:
                self._record(index, sent, expected, self._receive(client, expected))


def say(text: str) -> None:
    """One line for the test, which reads the container's log."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main() -> None:
    client = LoadClient(Spec.from_json(os.environ["SPEC"]))
    signal.signal(signal.SIGTERM, lambda *_: client.stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: client.go.set())
    say("RESULT " + json.dumps(client.run()))


if __name__ == "__main__":
    main()
