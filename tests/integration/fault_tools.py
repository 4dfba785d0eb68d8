"""Tools for the fault tests: load on Postfix and on the socket, SIGKILL chaos, host directories.

* :class:`RcptLoad`: threads that ask Postfix about valid and invalid addresses (one SMTP
  session per pair, as senders do) and record every answer.
* :class:`SocketClient`: socket_load.py, a client *on the sidecar's socket*, run in a container
  of the sidecar image (network none, uid 10001, the shared volume mounted read-only).
* :class:`ChaosRun`: a sender, a sendmail submitter and a killer of the sidecar, in threads.
* :func:`host_directory`: a host directory with a given owner and mode, for a socket mount.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import smtplib
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import docker
import docker.errors

from helpers import wait_until

from .engine import LABELS, missing_prerequisite
from .postfix_container import sendmail_in
from .sending import SENDER, Smtp, unique_subject
from .sidecar import SIDECAR_SOCKET_DIR
from .socket_load import Batch, Spec
from .stack import Stack

#: The load client, mounted read-only into its container, and run by the image's Python (the
#: virtual environment's, which has tempmail).
SOCKET_LOAD = Path(__file__).with_name("socket_load.py")
SOCKET_LOAD_MOUNT = "/opt/tempmail-tests/socket_load.py"
IMAGE_PYTHON = "/opt/tempmail/bin/python3"


def socket_dir_config(config: dict[str, Any], socket_path: str) -> dict[str, Any]:
    """A copy of ``config`` with another socket path."""
    data = copy.deepcopy(config)
    data["socket"] = {**data["socket"], "path": socket_path}
    return data


def host_directory(owner: int, mode: int) -> Path:
    """A fresh host directory with this owner (uid = gid) and mode, for a socket mount."""
    path = Path(tempfile.mkdtemp(prefix="tempmail-it-sockdir-"))
    try:
        os.chown(path, owner, owner)
    except PermissionError:
        path.rmdir()
        missing_prerequisite(f"giving a directory to uid {owner} needs root")
    path.chmod(mode)
    return path


# --- RCPT load through Postfix ----------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    at: float  # time.time() when the reply came
    kind: str  # "valid" or "invalid"
    code: int  # the SMTP reply code; 0 when the connection failed
    text: str


class RcptLoad:
    """Threads asking Postfix about one valid and one invalid address per SMTP session."""

    def __init__(self, smtp: Smtp, valid: list[str], invalid: list[str], threads: int = 3) -> None:
        self.smtp = smtp
        self.valid = valid
        self.invalid = invalid
        self.answers: list[Answer] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"rcpt-load-{i}", daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        if self.errors:
            raise self.errors[0]

    def count(self, predicate: Callable[[Answer], bool]) -> int:
        with self._lock:
            return sum(1 for answer in self.answers if predicate(answer))

    def wait_for(
        self, predicate: Callable[[Answer], bool], at_least: int, timeout: float = 30
    ) -> None:
        wait_until(
            lambda: self.count(predicate) >= at_least or self.errors,
            timeout,
            0.02,
            f"{at_least} RCPT answers",
        )
        if self.errors:
            raise self.errors[0]

    def failures(self) -> list[Answer]:
        """Answers a working sidecar must never cause: 451, a wrong verdict, a lost session."""
        expected = {"valid": 250, "invalid": 550}
        with self._lock:
            return [a for a in self.answers if a.code != expected[a.kind]]

    def _record(self, kind: str, code: int, text: str) -> None:
        with self._lock:
            self.answers.append(Answer(time.time(), kind, code, text))

    def _run(self, index: int) -> None:
        turn = index
        try:
            while not self._stop.is_set():
                valid = self.valid[turn % len(self.valid)]
                invalid = self.invalid[turn % len(self.invalid)]
                turn += 1
                try:
                    with self.smtp.session(timeout=10) as client:
                        client.mail(SENDER)
                        for kind, address in (("valid", valid), ("invalid", invalid)):
                            code, text = client.rcpt(address)
                            self._record(kind, code, text.decode(errors="replace"))
                except (smtplib.SMTPException, OSError) as exc:
                    self._record("valid", 0, f"{type(exc).__name__}: {exc}")
                time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.errors.append(exc)


# --- a client on the sidecar's socket -----------------------------------------------------------


@dataclass(frozen=True)
class ClientResult:
    """What socket_load.py recorded."""

    batches: list[Batch]
    connect_errors: dict[str, int]

    @property
    def requests(self) -> int:
        return sum(b.size for b in self.batches if b.sent is not None)

    @property
    def answered(self) -> int:
        return sum(b.answered for b in self.batches)

    @property
    def wrong(self) -> int:
        return sum(b.wrong for b in self.batches)

    def unanswered(self) -> list[Batch]:
        return [b for b in self.batches if b.answered < b.size]


class SocketClient:
    """socket_load.py in a container of the sidecar image, on a stack's socket volume."""

    def __init__(
        self,
        stack: Stack,
        keys: list[tuple[str, str]],
        *,
        mode: Literal["load", "freeze"] = "load",
        connections: int = 6,
        batch: int = 16,
        pause: float = 0.0,
    ) -> None:
        spec = Spec(
            socket=f"unix:{SIDECAR_SOCKET_DIR}/socket",
            mode=mode,
            map_name=stack.sidecar.config["server"]["map_name"],
            keys=tuple(keys),
            connections=connections,
            batch=batch,
            pause=pause,
        )
        self.container = stack.images.client.containers.create(
            stack.images.sidecar,
            [SOCKET_LOAD_MOUNT],
            entrypoint=[IMAGE_PYTHON],
            name=f"{stack.name}-client-{uuid.uuid4().hex[:6]}",
            environment={"SPEC": spec.to_json()},
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            labels=LABELS,
            healthcheck={"test": ["NONE"]},
            volumes={
                stack.volume_name: {"bind": SIDECAR_SOCKET_DIR, "mode": "ro"},
                str(SOCKET_LOAD): {"bind": SOCKET_LOAD_MOUNT, "mode": "ro"},
            },
        )

    def __enter__(self) -> Self:
        self.container.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(docker.errors.APIError):
            self.container.remove(force=True)

    def logs(self) -> str:
        return str(self.container.logs().decode(errors="replace"))

    def wait_for(self, line: str, timeout: float = 30) -> None:
        def seen() -> bool:
            text = self.logs()
            if "RESULT " in text and line not in text:
                raise AssertionError(f"the socket client ended before {line!r}:\n{text[-2000:]}")
            return line in text.splitlines()

        wait_until(seen, timeout, 0.02, f"socket client: {line!r}")

    def signal(self, name: str) -> None:
        self.container.kill(signal=name)

    def result(self, stop: bool = True, timeout: float = 30) -> ClientResult:
        """Stop the client (SIGTERM) unless it ends by itself, and parse what it recorded."""
        if stop:
            with contextlib.suppress(docker.errors.APIError):
                self.container.kill(signal="SIGTERM")
        status = self.container.wait(timeout=timeout)
        text = self.logs()
        assert status["StatusCode"] == 0, text[-3000:]
        line = next(row for row in text.splitlines() if row.startswith("RESULT "))
        data = json.loads(line.removeprefix("RESULT "))
        return ClientResult([Batch(**row) for row in data["batches"]], data["connect_errors"])


# --- chaos ---------------------------------------------------------------------------------


@dataclass
class ChaosFigures:
    """What the SIGKILL chaos measured, for the report."""

    sent_smtp: int = 0
    sent_sendmail: int = 0
    sendmail_while_down: int = 0
    kills: int = 0
    kills_after_restart: int = 0
    temporary_failures: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    duplicates: int = 0
    lost: int = 0
    bounced: int = 0
    deferred: int = 0
    cleanup_lookup_problems: int = 0
    seconds: float = 0.0

    def report(self) -> str:
        failures = ", ".join(f"{k}: {v}" for k, v in sorted(self.temporary_failures.items()))
        return (
            f"sent {self.sent_smtp} by SMTP + {self.sent_sendmail} by sendmail "
            f"({self.sendmail_while_down} while the sidecar was down); "
            f"{self.kills} SIGKILLs ({self.kills_after_restart} right after a restart); "
            f"temporary failures retried by the sender: {sum(self.temporary_failures.values())} "
            f"({failures}); cleanup lookup problems: {self.cleanup_lookup_problems}; "
            f"delivered {self.delivered}, duplicates {self.duplicates}, lost {self.lost}, "
            f"bounced {self.bounced}, deferred {self.deferred}; {self.seconds:.1f} s"
        )


class ChaosRun:
    """A sender, a sendmail submitter and a killer, in three threads (seeded).

    * the sender sends ``messages`` messages by SMTP to ``addresses`` in turn, each with
      :meth:`Smtp.send_until_accepted`;
    * the killer SIGKILLs the sidecar when the sender's count of accepted messages reaches
      ``kills`` random points, a few milliseconds later (anywhere in an SMTP dialogue), keeps
      it down for up to 0.4 s, starts it, sometimes kills it again right after the start,
      and waits until it passes its self-test before the next point;
    * the submitter runs Postfix's sendmail inside the Postfix container every 0.1-0.5 s
      until the killer is done (at least ``sendmail`` times).
    """

    def __init__(
        self,
        stack: Stack,
        seed: int,
        addresses: list[str],
        messages: int,
        kills: int,
        sendmail: int,
    ) -> None:
        rng = random.Random(seed)
        self.stack = stack
        self.addresses = addresses
        self.messages = messages
        self.sendmail = sendmail
        self.points = sorted(rng.sample(range(5, messages - 5), kills))
        self.kill_rng = random.Random(rng.random())
        self.submit_rng = random.Random(rng.random())
        self.figures = ChaosFigures()
        self.smtp_subjects: list[str] = []
        self.sendmail_subjects: list[str] = []
        self.errors: list[BaseException] = []
        self.progress = 0  # messages accepted so far
        self.down = threading.Event()
        self.killer_done = threading.Event()

    @property
    def subjects(self) -> list[str]:
        return self.smtp_subjects + self.sendmail_subjects

    def run(self, timeout: float = 180) -> None:
        t0 = time.monotonic()
        threads = [
            threading.Thread(target=self._guard, args=(target,), name=target.__name__, daemon=True)
            for target in (self._killer, self._sender, self._submitter)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=timeout)
        self.figures.seconds = time.monotonic() - t0
        if self.errors:
            raise self.errors[0]
        assert not any(t.is_alive() for t in threads), f"the chaos did not end in {timeout} s"

    def _guard(self, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - re-raised by run()
            self.errors.append(exc)
            self.progress = self.messages  # let the killer finish
            self.killer_done.set()  # and the submitter

    def _sender(self) -> None:
        for i in range(self.messages):
            subject = unique_subject(f"chaos-smtp-{i}")
            attempts = self.stack.smtp.send_until_accepted(self.addresses[i % 2], subject)
            self.figures.temporary_failures.update(attempts.failures)
            self.smtp_subjects.append(subject)
            self.progress = i + 1

    def _submitter(self) -> None:
        # An engine connection of its own: the killer uses the stack's at the same time.
        with contextlib.closing(docker.from_env()) as client:
            postfix = client.containers.get(self.stack.postfix.name)
            i = 0
            while i < self.sendmail or not self.killer_done.is_set():
                subject = unique_subject(f"chaos-sendmail-{i}")
                down = self.down.is_set()
                sendmail_in(postfix, self.addresses[i % 2], subject)
                self.sendmail_subjects.append(subject)
                self.figures.sendmail_while_down += down
                i += 1
                time.sleep(self.submit_rng.uniform(0.1, 0.5))

    def _killer(self) -> None:
        try:
            sidecar = self.stack.sidecar.docker()
            for point in self.points:
                while self.progress < point:
                    time.sleep(0.005)
                time.sleep(self.kill_rng.uniform(0, 0.03))
                self._kill()
                time.sleep(self.kill_rng.uniform(0, 0.4))
                sidecar.start()
                if self.kill_rng.random() < 0.3:
                    time.sleep(self.kill_rng.uniform(0, 0.3))
                    self._kill()
                    self.figures.kills_after_restart += 1
                    sidecar.start()
                self.stack.sidecar.wait_ready()
                self.down.clear()
        finally:
            self.killer_done.set()

    def _kill(self) -> None:
        self.down.set()
        with contextlib.suppress(docker.errors.APIError):  # it may have died already
            self.stack.sidecar.kill("SIGKILL")
        self.figures.kills += 1
        wait_until(lambda: not self.stack.sidecar.running(), 10, 0.01, "the sidecar to die")
