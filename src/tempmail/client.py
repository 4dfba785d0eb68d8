"""A small blocking socketmap client: for ``tempmail query``, health probes and tests."""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Self

from tempmail import netstring, socketmap
from tempmail.errors import ProtocolError

if TYPE_CHECKING:
    from types import TracebackType

    from tempmail.socketmap import Reply


def parse_target(target: str) -> tuple[socket.AddressFamily, str | tuple[str, int]]:
    """Parse ``unix:PATH`` or ``inet:HOST:PORT`` (``inet:[::1]:PORT`` for IPv6)."""
    kind, _, rest = target.partition(":")
    if kind == "unix" and rest:
        return socket.AF_UNIX, rest
    if kind == "inet":
        host, _, port = rest.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if host and port.isdigit() and 0 < int(port) < 65536:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            return family, (host, int(port))
    raise ValueError(f"expected unix:PATH or inet:HOST:PORT, got {target!r}")


class Client:
    """One connection; several queries may be sent over it, as Postfix does."""

    def __init__(self, target: str, timeout: float = 5.0) -> None:
        family, address = parse_target(target)
        if isinstance(address, tuple):
            self._sock = socket.create_connection(address, timeout=timeout)
        else:
            self._sock = socket.socket(family, socket.SOCK_STREAM)
            self._sock.settimeout(timeout)
            try:
                self._sock.connect(address)
            except OSError:
                self._sock.close()
                raise
        self._decoder = netstring.NetstringDecoder(max_length=socketmap.MAX_REPLY_LENGTH)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()

    def query(self, map_name: str, key: str) -> Reply:
        """Send one request and wait for its reply."""
        self._sock.sendall(socketmap.encode_request(map_name, key))
        return self.read_reply()

    def read_reply(self) -> Reply:
        """Read one reply (after a request sent with :meth:`send_raw`)."""
        while True:
            event = self._decoder.next_event()
            if isinstance(event, bytes):
                return socketmap.parse_reply(event)
            if event is netstring.END:
                raise ProtocolError("the server closed the connection without replying")
            if isinstance(event, netstring.Oversized):  # pragma: no cover - limit is the maximum
                raise ProtocolError("reply too long")
            self._decoder.feed(self._sock.recv(65536))

    def peer_pid(self) -> int | None:
        """The PID of the process that listens on a unix socket (SO_PEERCRED), else None.

        The kernel records it when the socket starts listening, so it cannot be forged by the
        server's replies; with systemd's socket activation it is systemd's own PID.
        """
        if self._sock.family != socket.AF_UNIX:
            return None
        credentials = self._sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
        )
        pid, _, _ = struct.unpack("3i", credentials)
        return int(pid)

    def send_raw(self, data: bytes) -> None:
        """Send arbitrary bytes (tests use this for malformed requests)."""
        self._sock.sendall(data)
