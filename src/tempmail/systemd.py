"""systemd's readiness protocol (sd_notify(3)), without libsystemd.

A service with ``Type=notify`` tells systemd it is ready by sending ``READY=1`` as a datagram
to the unix socket named in ``$NOTIFY_SOCKET``; around a reload it sends ``RELOADING=1`` (with
``MONOTONIC_USEC``) and then ``READY=1`` again; when stopping, ``STOPPING=1``. Without
``$NOTIFY_SOCKET`` every call does nothing. Socket activation (``$LISTEN_FDS``) is handled in
:mod:`tempmail.listeners`.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends state changes to systemd, or nowhere when not run by systemd."""

    def __init__(self, address: str | None) -> None:
        # "@name" is a socket in the abstract namespace, written with a leading NUL byte.
        self._address = "\0" + address[1:] if address and address.startswith("@") else address

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        """The notifier for ``$NOTIFY_SOCKET``."""
        return cls(environ.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        """Whether a notification socket was given."""
        return self._address is not None

    def ready(self, status: str) -> None:
        """The service is ready (after start or after a reload)."""
        self._send(f"READY=1\nSTATUS={status}")

    def reloading(self) -> None:
        """A reload begins; systemd needs the monotonic time to match it with the request."""
        self._send(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        """The service is shutting down."""
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        """A free-form status line for `systemctl status`."""
        self._send(f"STATUS={text}")

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode())
        except OSError as exc:  # systemd gone or misconfigured: never fatal for the service
            log.warning("cannot notify systemd at %s: %s", self._address, exc)
