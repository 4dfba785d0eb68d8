"""A small blocking socketmap client: for ``tempmail query``, health probes and tests."""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Self

from tempmail import netstring, socketmap
from tempmail.errors import ProtocolError

if TYPE_CHECKING:
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
    """One connection; several queries may be sent over it, as Postfix does.

    Besides queries, it reads what a test of the protocol needs: the exact bytes the server
    sent (:meth:`read_exactly`, :meth:`read_to_end`) after arbitrary bytes went out
    (:meth:`send_raw`), and half-closes (:meth:`finish_sending`). Every read waits at most
    ``timeout`` seconds (None: as long as it takes).
    """

    def __init__(self, target: str, timeout: float | None = 5.0) -> None:
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
        self._decoder = socketmap.decoder()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def socket(self) -> socket.socket:
        """The connected socket, for what only a socket does (options, non-blocking sends)."""
        return self._sock

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()

    def query(self, map_name: str, key: str) -> Reply:
        """Send one request and wait for its reply."""
        self._sock.sendall(socketmap.encode_request(map_name, key))
        return self.read_reply()

    def read_reply(self) -> Reply:
        """Read one reply (after a request sent with :meth:`send_raw`)."""
        while (event := self._decoder.next_event()) is netstring.NEED_DATA:
            self._decoder.feed(self._sock.recv(65536))
        if event is netstring.END:
            raise ProtocolError("the server closed the connection without replying")
        # Nothing is skipped as Oversized: a longer reply is a protocol error (the hard limit).
        assert isinstance(event, bytes)  # noqa: S101 - see above
        return socketmap.parse_reply(event)

    def send_raw(self, data: bytes) -> None:
        """Send arbitrary bytes: a request of one's own making, malformed or in pieces."""
        self._sock.sendall(data)

    def finish_sending(self) -> None:
        """Half-close: the server reads the end of the stream and may still reply."""
        self._sock.shutdown(socket.SHUT_WR)

    def read_exactly(self, size: int) -> bytes:
        """The next ``size`` bytes exactly as the server sent them.

        Raises :class:`ProtocolError` with what did arrive if the server closes first.
        """
        self._check_no_partial_reply()
        received = bytearray()
        while len(received) < size:
            chunk = self._sock.recv(min(size - len(received), 65536))
            if not chunk:
                raise ProtocolError(
                    f"the server closed the connection after {len(received)} of {size} bytes: "
                    f"{bytes(received[:200])!r}"
                )
            received += chunk
        return bytes(received)

    def read_to_end(self) -> bytes:
        """Everything the server sends until it closes the connection (a reset ends it too)."""
        self._check_no_partial_reply()
        received = bytearray()
        try:
            while chunk := self._sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # the server closed with unread bytes pending: what came before still counts
        return bytes(received)

    def _check_no_partial_reply(self) -> None:
        """Raw reads go on where :meth:`read_reply` stopped; a partial reply cannot be unread."""
        if self._decoder.buffered:
            raise ProtocolError("part of a reply is buffered: finish it with read_reply()")

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
