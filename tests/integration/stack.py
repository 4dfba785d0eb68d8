"""A tempmail sidecar and a Postfix container sharing a socket volume, driven from the host.

The sidecar runs as the image says (uid 10001) with a read-only root filesystem, no
capabilities and no network; Postfix runs with host networking and listens on 127.0.0.1 at a
free port. Tests speak SMTP to Postfix and read the permanent recipient's Maildir.

Everything a fault test needs is a method: stop, kill or signal the sidecar and wait until it
serves again, send with retries, submit with sendmail inside the Postfix container, read the
queue and the Maildir.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import email
import email.policy
import io
import os
import secrets
import shutil
import smtplib
import socket
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal, TypeVar

# testcontainers would otherwise start its reaper (Ryuk), an image from a registry.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker
import docker.errors
import tomli_w
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from tempmail import config as config_module
from tempmail import generate, schemes

T = TypeVar("T")

#: The sidecar image's fixed uid/gid (container/Containerfile).
TEMPMAIL_UID = 10001
#: Where each container sees the shared socket volume.
SIDECAR_SOCKET_DIR = "/run/tempmail"
POSTFIX_SOCKET_DIR = "/var/spool/postfix/tempmail"
#: The config and secret mounts of the sidecar (directories, so a rewrite is seen at once).
CONFIG_DIR = "/etc/tempmail"
SECRET_DIR = "/run/secrets/tempmail"
#: The permanent recipient in the Postfix image, and its Maildir.
RECIPIENT = "user@localhost"
MAILDIR = "/home/user/Maildir"
SENDER = "sender@localhost"
DOMAIN = "example.test"
#: A domain Postfix serves (virtual_alias_domains) that no identity owns.
OTHER_DOMAIN = "example.net"
#: Postfix's queues (maildrop holds what sendmail submitted and cleanup has not accepted).
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
#: Labels on every container and volume, to find leftovers: docker ps -a --filter label=...
LABELS = {"org.tempmail.integration-test": "1"}


def base_identity(**changes: Any) -> dict[str, Any]:
    """The identity used by the tests (md5, today and yesterday); keywords override keys."""
    identity: dict[str, Any] = {
        "domain": DOMAIN,
        "recipient": RECIPIENT,
        "secret_file": f"{SECRET_DIR}/secret",
        "scheme": "md5",
        "length": 8,
        "window": 2,
        "timezone": "UTC",
    }
    identity.update(changes)
    return identity


def base_config(**identity_changes: Any) -> dict[str, Any]:
    """A complete sidecar config with one identity; keywords override identity keys."""
    return {
        "server": {"map_name": "tempmail"},
        "socket": {"type": "unix", "path": f"{SIDECAR_SOCKET_DIR}/socket", "mode": "0660"},
        "identities": {"default": base_identity(**identity_changes)},
    }


def wait_until(
    check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy; return that, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what or check}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_message(to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


def unique_subject(label: str) -> str:
    """A subject no other test uses (they share one Maildir), with a non-ASCII word."""
    return f"{label} Grüße {uuid.uuid4().hex[:12]}"


@dataclass
class SmtpResult:
    code: int
    text: str

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


def maildir_messages(container: Any, maildir: str = MAILDIR) -> list[EmailMessage]:
    """Every message in a Maildir (new/ and cur/) of a docker SDK container, parsed."""
    try:
        stream, _ = container.get_archive(maildir)
    except docker.errors.NotFound:  # local(8) creates the Maildir at the first delivery
        return []
    found = []
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 2 and parts[-2] in ("new", "cur"):
                data = archive.extractfile(member)
                assert data is not None
                parsed = email.message_from_bytes(data.read(), policy=email.policy.default)
                assert isinstance(parsed, EmailMessage)
                found.append(parsed)
    return found


class Stack:
    """One sidecar + one Postfix; see the module docstring. Use start() and close()."""

    def __init__(
        self,
        client: docker.DockerClient,
        sidecar_image: str,
        postfix_image: str,
        config: dict[str, Any],
        *,
        order: Literal["sidecar-first", "postfix-first"] = "sidecar-first",
        domains: str = f"{DOMAIN} {OTHER_DOMAIN}",
    ) -> None:
        self.client = client
        self.sidecar_image = sidecar_image
        self.postfix_image = postfix_image
        self.order = order
        self.domains = domains
        self.port = free_port()
        self.name = f"tempmail-it-{uuid.uuid4().hex[:8]}"
        self.secret = secrets.token_urlsafe(32)
        self.workdir = Path(tempfile.mkdtemp(prefix="tempmail-it-"))
        self.config_dir = self.workdir / "etc"
        self.secret_dir = self.workdir / "secret"
        self.config: dict[str, Any] = copy.deepcopy(config)
        self.volume: Any = None
        self.sidecar: DockerContainer | None = None
        self.postfix: DockerContainer | None = None
        self.started_in: float | None = None

    # --- setup and teardown ------------------------------------------------------------------

    def start(self) -> Stack:
        self._write_files()
        t0 = time.monotonic()
        self.volume = self.client.volumes.create(f"{self.name}-socket", labels=LABELS)
        self.sidecar = self._sidecar_container()
        self.postfix = self._postfix_container()
        first, second = (self.sidecar, self.postfix)
        if self.order == "postfix-first":
            first, second = second, first
        first.start()
        second.start()
        self.wait_smtp_ready()
        self.started_in = time.monotonic() - t0
        return self

    def close(self) -> None:
        for container in (self.postfix, self.sidecar):
            if container is not None:
                with contextlib.suppress(docker.errors.APIError):
                    container.stop()  # removes the container (and anonymous volumes)
        if self.volume is not None:
            with contextlib.suppress(docker.errors.APIError):
                self.volume.remove(force=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _write_files(self) -> None:
        self.config_dir.mkdir(mode=0o755)
        self.secret_dir.mkdir(mode=0o755)
        secret_file = self.secret_dir / "secret"
        secret_file.write_text(self.secret + "\n")
        try:
            # What a user does: the secret readable by the sidecar's uid only.
            os.chown(secret_file, TEMPMAIL_UID, TEMPMAIL_UID)
            secret_file.chmod(0o400)
        except PermissionError:
            # Not root (a developer in the docker group): the file cannot be given to uid
            # 10001, so it must be readable by others, which the sidecar refuses by default.
            secret_file.chmod(0o444)
            self.config.setdefault("server", {})["secret_permissions"] = "any"
        self.write_config(self.config)

    def write_config(self, data: dict[str, Any]) -> None:
        """Replace the sidecar's config file atomically (send SIGHUP to apply it)."""
        self.config = copy.deepcopy(data)
        target = self.config_dir / "config.toml"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(tomli_w.dumps(data))
        temporary.chmod(0o644)
        temporary.replace(target)

    def _sidecar_container(self) -> DockerContainer:
        return (
            DockerContainer(self.sidecar_image)
            .with_name(f"{self.name}-sidecar")
            .with_kwargs(
                network_mode="none",
                read_only=True,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                labels=LABELS,
                # The image's HEALTHCHECK command, checked every 2 s instead of 30 s.
                healthcheck={"interval": 2 * 10**9},
            )
            .with_volume_mapping(self.volume.name, SIDECAR_SOCKET_DIR, "rw")
            .with_volume_mapping(str(self.config_dir), CONFIG_DIR, "ro")
            .with_volume_mapping(str(self.secret_dir), SECRET_DIR, "ro")
            .waiting_for(LogMessageWaitStrategy("listening on").with_poll_interval(0.05))
        )

    def _postfix_container(self) -> DockerContainer:
        return (
            DockerContainer(self.postfix_image)
            .with_name(f"{self.name}-postfix")
            .with_kwargs(network_mode="host", labels=LABELS)
            .with_env("SMTP_PORT", str(self.port))
            .with_env("TEMPMAIL_DOMAINS", self.domains)
            # connect() works through a read-only mount; Postfix never writes here.
            .with_volume_mapping(self.volume.name, POSTFIX_SOCKET_DIR, "ro")
            .waiting_for(LogMessageWaitStrategy("daemon started").with_poll_interval(0.05))
        )

    def _banner(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                return sock.recv(512).startswith(b"220")
        except OSError:
            return False

    # --- addresses ---------------------------------------------------------------------------

    def identity(self) -> config_module.Identity:
        """The configured identity, parsed by tempmail itself (secret inline)."""
        data = copy.deepcopy(self.config)
        table = data["identities"]["default"]
        table.pop("secret_file", None)
        table["secret"] = self.secret
        data.pop("server", None)
        return config_module.parse(data, environ={}).identities[0]

    def address(self, days_ago: int = 0, scheme: str | None = None) -> str:
        """The address of the local day ``days_ago`` days before today."""
        identity = self.identity()
        _wait_past_midnight(identity)
        today = dt.datetime.now(identity.timezone).date()
        day = today - dt.timedelta(days=days_ago)
        chosen = schemes.SCHEMES[scheme] if scheme else None
        return str(generate.address_on(identity, day, scheme=chosen))

    # --- SMTP from the host ------------------------------------------------------------------

    @contextlib.contextmanager
    def smtp(self, timeout: float = 30) -> Iterator[smtplib.SMTP]:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=timeout) as client:
            client.ehlo("client.test")
            yield client

    def rcpt(self, address: str) -> SmtpResult:
        """MAIL FROM and RCPT TO only: what Postfix answers for ``address``."""
        with self.smtp() as client:
            client.mail(SENDER)
            code, text = client.rcpt(address)
            return SmtpResult(code, text.decode(errors="replace"))

    def send(self, address: str, subject: str, body: str = "hello\n") -> None:
        """Send one message; raises smtplib's exceptions when Postfix refuses it."""
        # Serialised here: smtplib's send_message would quote "From " lines in the body.
        data = make_message(address, subject, body).as_bytes(policy=email.policy.SMTP)
        with self.smtp() as client:
            client.sendmail(SENDER, [address], data, mail_options=["BODY=8BITMIME"])

    def send_with_retry(
        self, address: str, subject: str, body: str = "hello\n", timeout: float = 30
    ) -> int:
        """Send until Postfix accepts (retrying 4xx and lost connections); the attempts made."""
        deadline = time.monotonic() + timeout
        attempts = 0
        while True:
            attempts += 1
            try:
                self.send(address, subject, body)
            except smtplib.SMTPRecipientsRefused as exc:
                code = next(iter(exc.recipients.values()))[0]
                if not 400 <= code < 500 or time.monotonic() > deadline:
                    raise
            except (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
            else:
                return attempts
            time.sleep(0.2)

    # --- the Maildir and the queue -----------------------------------------------------------

    def messages(self) -> list[EmailMessage]:
        """Every message in the recipient's Maildir (new/ and cur/), parsed."""
        return maildir_messages(self._postfix().get_wrapped_container())

    def find_message(self, subject: str) -> EmailMessage | None:
        return next((m for m in self.messages() if m["Subject"] == subject), None)

    def wait_for_message(self, subject: str, timeout: float = 30) -> EmailMessage:
        return wait_until(lambda: self.find_message(subject), timeout, 0.1, f"mail {subject!r}")

    def sendmail_inside(self, address: str, subject: str, body: str = "hello\n") -> None:
        """Submit with Postfix's sendmail inside its container (maildrop, pickup, cleanup)."""
        text = make_message(address, subject, body).as_string()
        result = (
            self._postfix()
            .get_wrapped_container()
            .exec_run(
                [
                    "sh",
                    "-c",
                    'printf "%s" "$MESSAGE" | sendmail -i -f "$1" -- "$2"',
                    "sh",
                    SENDER,
                    address,
                ],
                environment={"MESSAGE": text},
            )
        )
        assert result.exit_code == 0, result.output.decode(errors="replace")

    def queued(self) -> list[str]:
        """Files in Postfix's queues, as queue/ID."""
        dirs = " ".join(f"/var/spool/postfix/{q}" for q in QUEUES)
        output = self.postfix_exec(f"find {dirs} -type f 2>/dev/null || true")
        return [line.removeprefix("/var/spool/postfix/") for line in output.split()]

    def flush(self) -> None:
        """postqueue -f: retry deferred mail now and wake pickup for the maildrop."""
        self.postfix_exec("postqueue -f")

    def postfix_exec(self, command: str) -> str:
        exit_code, output = self._postfix().exec(["sh", "-c", command])
        text: str = output.decode(errors="replace")
        assert exit_code == 0, f"{command!r} in the Postfix container: {exit_code}: {text}"
        return text

    def postfix_logs(self) -> str:
        stdout, stderr = self._postfix().get_logs()
        return (stdout + stderr).decode(errors="replace")

    def restart_postfix(self) -> None:
        """docker restart of the Postfix container; returns once it answers SMTP again."""
        self._postfix().get_wrapped_container().restart(timeout=10)
        self.wait_smtp_ready()

    def wait_smtp_ready(self, timeout: float = 30) -> None:
        wait_until(self._banner, timeout, 0.05, "the SMTP banner")

    # --- the sidecar's lifecycle -------------------------------------------------------------

    def sidecar_container(self) -> Any:
        """The docker SDK container object (reloaded), for inspection."""
        container = self._sidecar().get_wrapped_container()
        container.reload()
        return container

    def sidecar_running(self) -> bool:
        return bool(self.sidecar_container().status == "running")

    def stop_sidecar(self, timeout: int = 10) -> float:
        """docker stop (SIGTERM, then SIGKILL after ``timeout``); returns the seconds it took."""
        container = self._sidecar().get_wrapped_container()
        t0 = time.monotonic()
        container.stop(timeout=timeout)
        return time.monotonic() - t0

    def kill_sidecar(self, signal: str = "SIGKILL") -> None:
        """Send ``signal`` (SIGKILL leaves a stale socket behind; SIGHUP reloads)."""
        self._sidecar().get_wrapped_container().kill(signal=signal)

    def start_sidecar(self, timeout: float = 30) -> None:
        """Start the stopped sidecar again and wait until it answers its self-test."""
        self._sidecar().get_wrapped_container().start()
        self.wait_sidecar_ready(timeout)

    def ensure_sidecar_running(self) -> None:
        if not self.sidecar_running():
            self.start_sidecar()

    def wait_sidecar_ready(self, timeout: float = 30) -> None:
        """Until tempmail query --self-test succeeds inside the sidecar (as its healthcheck)."""
        wait_until(self.sidecar_healthy, timeout, 0.1, "sidecar self-test")

    def sidecar_healthy(self) -> bool:
        try:
            exit_code, _ = self.sidecar_exec(["tempmail", "query", "--self-test"])
        except docker.errors.APIError:  # not running (yet)
            return False
        return exit_code == 0

    def sidecar_exec(self, command: list[str]) -> tuple[int, str]:
        exit_code, output = self._sidecar().exec(command)
        return exit_code, output.decode(errors="replace")

    def sidecar_logs(self) -> str:
        stdout, stderr = self._sidecar().get_logs()
        return (stdout + stderr).decode(errors="replace")

    def run_sidecar_image(self, command: list[str], timeout: float = 30) -> tuple[int, str]:
        """Run the sidecar image once, with the sidecar's mounts and flags; exit code, output."""
        container = self.client.containers.create(
            self.sidecar_image,
            command,
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            labels=LABELS,
            volumes={
                self.volume.name: {"bind": SIDECAR_SOCKET_DIR, "mode": "rw"},
                str(self.config_dir): {"bind": CONFIG_DIR, "mode": "ro"},
                str(self.secret_dir): {"bind": SECRET_DIR, "mode": "ro"},
            },
        )
        try:
            container.start()
            status = container.wait(timeout=timeout)
            return int(status["StatusCode"]), container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)

    def socket_exists(self) -> bool:
        """Whether a socket file is in the shared volume (seen from Postfix)."""
        exit_code, _ = self._postfix().exec(["test", "-S", f"{POSTFIX_SOCKET_DIR}/socket"])
        return bool(exit_code == 0)

    def _sidecar(self) -> DockerContainer:
        assert self.sidecar is not None, "the stack is not started"
        return self.sidecar

    def _postfix(self) -> DockerContainer:
        assert self.postfix is not None, "the stack is not started"
        return self.postfix


def _wait_past_midnight(identity: config_module.Identity, margin: float = 30) -> None:
    """Avoid computing an address just before local midnight and using it just after."""
    now = dt.datetime.now(identity.timezone)
    midnight = dt.datetime.combine(
        now.date() + dt.timedelta(days=1), dt.time(0), tzinfo=identity.timezone
    )
    left = (midnight - now).total_seconds()
    if left < margin:
        time.sleep(left + 1)
