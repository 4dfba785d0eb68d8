"""The example Postfix image of a stack: started with the main.cf lines the test gives it.

Postfix runs with host networking and listens on 127.0.0.1 at a free port; the socket volume
is mounted read-only where tempmail's lines say the socket is (``connect()`` works through a
read-only mount). The image's entrypoint applies ``TEMPMAIL_POSTFIX_CONFIG`` with the README's
``xargs -r -d '\\n' postconf -e``; what a test passes there is normally what ``tempmail
postfix-config`` printed (the guard), or, in the controls, a lookup without the guard.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

# testcontainers would otherwise start its reaper (Ryuk), an image from a registry.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker.errors
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from helpers import wait_until

from .engine import LABELS
from .sending import SENDER, make_message

#: Where Postfix sees the shared socket volume.
POSTFIX_SOCKET_DIR = "/var/spool/postfix/tempmail"
#: Postfix's queues (maildrop holds what sendmail submitted and cleanup has not accepted).
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


def unguarded_lines(domains: str, map_name: str = "tempmail") -> str:
    """The lookup without the guard (tempmail asked about every recipient): the controls'."""
    return (
        f"virtual_alias_domains = {domains}\n"
        f"virtual_alias_maps = socketmap:unix:tempmail/socket:{map_name}\n"
        "recipient_delimiter = +\n"
    )


def with_other_domains(lines: str, domains: tuple[str, ...]) -> str:
    """``lines`` with more virtual alias domains, as a Postfix that serves domains of its own
    has them (what ``tempmail postfix-config --merge`` keeps)."""
    if not domains:
        return lines
    name = "virtual_alias_domains = "
    changed = [
        f"{line} {' '.join(domains)}" if line.startswith(name) else line
        for line in lines.splitlines()
    ]
    assert changed != lines.splitlines(), f"no {name!r} line in {lines!r}"
    return "\n".join(changed) + "\n"


def sendmail_in(container: Any, address: str, subject: str, body: str = "hello\n") -> None:
    """Submit a message with Postfix's sendmail inside ``container`` (a docker SDK container):
    maildrop, then pickup and cleanup, as a local program submits mail."""
    text = make_message(address, subject, body).as_string()
    result = container.exec_run(
        ["sh", "-c", 'printf "%s" "$MESSAGE" | sendmail -i -f "$1" -- "$2"', "sh", SENDER, address],
        environment={"MESSAGE": text},
    )
    assert result.exit_code == 0, result.output.decode(errors="replace")


class PostfixContainer:
    """One container of the example Postfix image (see the module docstring)."""

    def __init__(
        self, client: Any, image: str, name: str, volume: str, port: int, main_cf_lines: str
    ) -> None:
        self.client = client
        self.image = image
        self.name = name
        self.volume = volume
        self.port = port
        #: What the entrypoint applies (TEMPMAIL_POSTFIX_CONFIG).
        self.main_cf_lines = main_cf_lines
        self._container: DockerContainer | None = None

    def start(self) -> None:
        """Create and start it; returns once it answers SMTP."""
        self._container = (
            DockerContainer(self.image)
            .with_name(self.name)
            .with_kwargs(network_mode="host", labels=LABELS)
            .with_env("SMTP_PORT", str(self.port))
            .with_env("TEMPMAIL_POSTFIX_CONFIG", self.main_cf_lines)
            .with_volume_mapping(self.volume, POSTFIX_SOCKET_DIR, "ro")
            .waiting_for(LogMessageWaitStrategy("daemon started").with_poll_interval(0.05))
        )
        self._container.start()
        self.wait_smtp_ready()

    def close(self) -> None:
        if self._container is not None:
            with contextlib.suppress(docker.errors.APIError):
                self._container.stop()  # removes the container

    def docker(self) -> Any:
        """The docker SDK container object."""
        assert self._container is not None, f"{self.name} is not started"
        return self._container.get_wrapped_container()

    def _banner(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                return sock.recv(512).startswith(b"220")
        except OSError:
            return False

    def wait_smtp_ready(self, timeout: float = 30) -> None:
        wait_until(self._banner, timeout, 0.05, f"{self.name}: the SMTP banner")

    def restart(self) -> None:
        """docker restart; returns once it answers SMTP again."""
        self.docker().restart(timeout=10)
        self.wait_smtp_ready()

    def exec(self, command: str) -> str:
        """Run a shell command inside; its output (it must exit 0)."""
        result = self.docker().exec_run(["sh", "-c", command])
        text: str = result.output.decode(errors="replace")
        assert result.exit_code == 0, f"{command!r} in {self.name}: {result.exit_code}: {text}"
        return text

    def logs(self) -> str:
        return str(self.docker().logs().decode(errors="replace"))

    def sendmail(self, address: str, subject: str, body: str = "hello\n") -> None:
        """Submit with Postfix's sendmail inside the container (see :func:`sendmail_in`)."""
        sendmail_in(self.docker(), address, subject, body)

    def queued(self) -> list[str]:
        """Files in Postfix's queues, as queue/ID."""
        dirs = " ".join(f"/var/spool/postfix/{q}" for q in QUEUES)
        output = self.exec(f"find {dirs} -type f 2>/dev/null || true")
        return [line.removeprefix("/var/spool/postfix/") for line in output.split()]

    def flush(self) -> None:
        """postqueue -f: retry deferred mail now and wake pickup for the maildrop."""
        self.exec("postqueue -f")

    def socket_exists(self) -> bool:
        """Whether a socket is in the shared volume, seen from here."""
        result = self.docker().exec_run(["test", "-S", f"{POSTFIX_SOCKET_DIR}/socket"])
        return bool(result.exit_code == 0)

    def reload_with(self, *settings: str) -> None:
        """``postconf -e`` these ``name = value`` settings, then ``postfix reload``."""
        quoted = " ".join("'" + setting.replace("'", "'\\''") + "'" for setting in settings)
        # Postfix's programs wait until main.cf is two seconds old: date it back (entrypoint.sh).
        self.exec(
            f"postconf -e {quoted} && touch -d '10 seconds ago' /etc/postfix/main.cf"
            " && postfix reload"
        )

    def disable_inflow_control(self) -> None:
        """Turn off Postfix's inflow control (``in_flow_delay``, 1 s by default).

        Every MAIL FROM takes a token that qmgr gives back only when it has delivered a
        message. SMTP sessions that stop after RCPT (address probes, and the fault tests'
        load) use the tokens up, and from then on each MAIL FROM waits the full second:
        measured here, 5 ms per session before a few seconds of probes, 1.005 s after. A load
        test would measure Postfix's throttle instead of tempmail. (Postfix's own behaviour.)
        """
        self.reload_with("in_flow_delay = 0")
        assert self.exec("postconf -h in_flow_delay").strip() == "0"
