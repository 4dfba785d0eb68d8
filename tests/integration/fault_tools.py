"""Tools for the fault and feature tests: load generators, senders, one-shot sidecar runs.

* :func:`send_like_an_mta`: send one message through Postfix and retry every temporary
  failure (4xx at RCPT or after DATA, a lost connection) with a growing delay, as an MTA's
  queue would; a 5xx fails at once.
* :class:`RcptLoad`: threads that ask Postfix about valid and invalid addresses (one SMTP
  session per pair, as senders do) and record every answer.
* :class:`SocketClient`: a client *on the sidecar's socket*, run in a container of the
  sidecar image (network none, uid 10001, the shared volume mounted read-only). It records
  for every batch of pipelined requests when it was written and how many replies came back,
  so a shutdown can be judged against the server's own "received SIGTERM" log time.
* :func:`run_sidecar_once`: ``tempmail serve`` with a given config and socket directory,
  apart from the running stack; returns the exit code and the output.
* :func:`address_of`: addresses of an identity table with a given secret, computed on the
  host by tempmail itself.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import random
import shutil
import smtplib
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Self

import docker
import docker.errors
import tomli_w

from tempmail import config as config_module
from tempmail import generate

from .conftest import missing_prerequisite
from .stack import (
    CONFIG_DIR,
    LABELS,
    SECRET_DIR,
    SENDER,
    SIDECAR_SOCKET_DIR,
    TEMPMAIL_UID,
    Stack,
    unique_subject,
    wait_until,
)

#: The sidecar's socket, as the socket client container sees it (the shared volume).
CLIENT_SOCKET = f"{SIDECAR_SOCKET_DIR}/socket"
#: The sidecar image's interpreter (the virtual environment's, on PATH).
IMAGE_PYTHON = "/opt/tempmail/bin/python3"


# --- addresses ------------------------------------------------------------------------------


def identity_from(
    table: dict[str, Any], secrets: list[str], name: str = "default"
) -> config_module.Identity:
    """An identity table (as in a config file) parsed by tempmail with these secrets inline."""
    data = copy.deepcopy(table)
    for key in ("secret", "secret_file", "previous_secrets", "previous_secret_files"):
        data.pop(key, None)
    data["secret"] = secrets[0]
    if secrets[1:]:
        data["previous_secrets"] = secrets[1:]
    return config_module.parse({"identities": {name: data}}, environ={}).identities[0]


def address_of(
    table: dict[str, Any], secret: str, days_ago: int = 0, tag: str | None = None
) -> str:
    """The address of ``table``'s identity with ``secret`` on the local day ``days_ago``."""
    identity = identity_from(table, [secret])
    today = dt.datetime.now(identity.timezone).date()
    return str(generate.address_on(identity, today - dt.timedelta(days=days_ago), tag=tag))


def wait_past_utc_midnight(margin: float) -> None:
    """Sleep past the next UTC midnight if it is less than ``margin`` seconds away."""
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)
    left = (midnight - now).total_seconds()
    if left < margin:
        time.sleep(left + 1)


def write_secret(stack: Stack, name: str, value: str) -> str:
    """Put a secret file next to the stack's own (as the stack does); its path in the sidecar."""
    path = stack.secret_dir / name
    temporary = path.with_suffix(".tmp")
    temporary.write_text(value + "\n")
    try:
        os.chown(temporary, TEMPMAIL_UID, TEMPMAIL_UID)
        temporary.chmod(0o400)
    except PermissionError:  # not root: the stack has set secret_permissions = "any"
        temporary.chmod(0o444)
    temporary.replace(path)
    return f"{SECRET_DIR}/{name}"


def write_private_config(stack: Stack, data: dict[str, Any]) -> None:
    """Like Stack.write_config, but readable by the sidecar's uid only (inline secrets)."""
    stack.config = copy.deepcopy(data)
    target = stack.config_dir / "config.toml"
    temporary = target.with_suffix(".tmp")
    temporary.write_text(tomli_w.dumps(data))
    try:
        os.chown(temporary, TEMPMAIL_UID, TEMPMAIL_UID)
        temporary.chmod(0o600)
    except PermissionError:  # not root: the stack has set secret_permissions = "any"
        temporary.chmod(0o644)
    temporary.replace(target)


def write_raw_config(stack: Stack, text: str) -> None:
    """Replace the sidecar's config file with ``text`` as it is (broken on purpose)."""
    target = stack.config_dir / "config.toml"
    temporary = target.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.chmod(0o644)
    temporary.replace(target)


class ExtraSecretsStack(Stack):
    """A Stack whose secret directory holds more secret files from the start (identities)."""

    def __init__(self, *args: Any, extra_secrets: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra_secrets = extra_secrets

    def _write_files(self) -> None:
        super()._write_files()  # the directories, the stack's own secret and the config
        for name, value in self.extra_secrets.items():
            write_secret(self, name, value)


# --- logs -----------------------------------------------------------------------------------


def log_time(line: str) -> float:
    """The UTC timestamp that starts a tempmail log line, as seconds since the epoch."""
    stamp = line.split(" ", 1)[0]
    parsed = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def log_lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def reload_and_wait(stack: Stack, expect: str = "configuration reloaded") -> str:
    """SIGHUP the sidecar and wait for the next log line containing ``expect``; return it."""
    seen = len(log_lines(stack.sidecar_logs(), expect))
    stack.kill_sidecar("SIGHUP")
    lines = wait_until(
        lambda: log_lines(stack.sidecar_logs(), expect)[seen:], timeout=20, what=expect
    )
    return lines[0]


# --- SMTP -----------------------------------------------------------------------------------


@dataclass
class Attempts:
    """What sending one message took: the temporary failures seen before it was accepted."""

    failures: list[str] = field(default_factory=list)


def send_like_an_mta(
    stack: Stack, address: str, subject: str, deadline: float = 60, body: str = "hello\n"
) -> Attempts:
    """Send until Postfix accepts the message; retry 4xx and lost connections, fail on 5xx."""
    attempts = Attempts()
    give_up = time.monotonic() + deadline
    delay = 0.05
    while True:
        try:
            stack.send(address, subject, body)
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0]
            if not 400 <= code < 500:
                raise
            attempts.failures.append(f"RCPT {code}")
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
            if not 400 <= exc.smtp_code < 500:
                raise
            kind = "DATA" if isinstance(exc, smtplib.SMTPDataError) else "MAIL"
            attempts.failures.append(f"{kind} {exc.smtp_code}")
        except (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError) as exc:
            attempts.failures.append(type(exc).__name__)
        else:
            return attempts
        if time.monotonic() > give_up:
            raise TimeoutError(f"{subject!r} not accepted within {deadline} s: {attempts}")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def sendmail_in(container: Any, address: str, subject: str) -> None:
    """Postfix's sendmail inside ``container`` (a docker SDK container), as Stack does it."""
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = address
    message["Subject"] = subject
    message.set_content("hello\n")
    result = container.exec_run(
        ["sh", "-c", 'printf "%s" "$MESSAGE" | sendmail -i -f "$1" -- "$2"', "sh", SENDER, address],
        environment={"MESSAGE": message.as_string()},
    )
    assert result.exit_code == 0, result.output.decode(errors="replace")


def subject_counts(messages: list[EmailMessage]) -> Counter[str]:
    return Counter(str(m["Subject"]) for m in messages)


def disable_inflow_control(stack: Stack) -> None:
    """Turn off Postfix's inflow control (``in_flow_delay``, 1 s by default) in this stack.

    Every MAIL FROM takes a token that qmgr gives back only when it has delivered a message.
    SMTP sessions that stop after RCPT (what :class:`RcptLoad` does, like any address probe)
    use the tokens up, and from then on each MAIL FROM waits the full second: measured here,
    5 ms per session before a few seconds of probes, 1.005 s after. A load test would measure
    Postfix's throttle instead of tempmail. (Postfix's own behaviour, not tempmail's.)
    """
    stack.postfix_exec("postconf -e in_flow_delay=0 && postfix reload")
    assert stack.postfix_exec("postconf -h in_flow_delay").strip() == "0"


@dataclass
class Answer:
    at: float  # time.time() when the reply came
    kind: str  # "valid" or "invalid"
    code: int  # the SMTP reply code; 0 when the connection failed
    text: str


class RcptLoad:
    """Threads asking Postfix about one valid and one invalid address per SMTP session."""

    def __init__(
        self, stack: Stack, valid: list[str], invalid: list[str], threads: int = 3
    ) -> None:
        self.stack = stack
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
                    with self.stack.smtp(timeout=10) as client:
                        client.mail(SENDER)
                        for kind, address in (("valid", valid), ("invalid", invalid)):
                            code, text = client.rcpt(address)
                            self._record(kind, code, text.decode(errors="replace"))
                except (smtplib.SMTPException, OSError) as exc:
                    self._record("valid", 0, f"{type(exc).__name__}: {exc}")
                time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.errors.append(exc)


# --- a client on the sidecar's socket ---------------------------------------------------------

#: Run by the sidecar image's Python inside the client container; see SocketClient.
#: Modes: "load" pipelines batches on every connection until SIGTERM, reconnecting when the
#: server is gone; "freeze" connects, proves each connection is served, prints "ready", and on
#: SIGUSR1 writes one batch per connection, prints "sent" and waits for the replies.
SOCKET_CLIENT_SCRIPT = r"""
import errno, json, os, signal, socket, sys, threading, time

SPEC = json.loads(os.environ["SPEC"])
PATH, MODE = SPEC["socket"], SPEC["mode"]
MAP = SPEC["map"].encode()
KEYS = [(k.encode(), v.encode()) for k, v in SPEC["keys"]]
BATCH, PAUSE, CONNECTIONS = SPEC["batch"], SPEC["pause"], SPEC["connections"]
stop, go, lock = threading.Event(), threading.Event(), threading.Lock()
batches = []          # [connection, t_sent or None, t_done, answered, outcome, wrong, size]
connect_errors = {}
state = {"ready": 0, "sent": 0, "gap": False, "recovered": False}


class Closed(Exception):
    pass


def say(text):
    print(text, flush=True)


def batch(offset):
    chosen = [KEYS[(offset + i) % len(KEYS)] for i in range(BATCH)]
    payload = b"".join(b"%d:%s," % (len(MAP) + 1 + len(k), MAP + b" " + k) for k, _ in chosen)
    return payload, [v for _, v in chosen]


def read_replies(sock, buf, count, replies):
    while len(replies) < count:
        colon = buf.find(b":")
        if colon > 0:
            end = colon + 1 + int(buf[:colon])
            if len(buf) > end:
                replies.append(bytes(buf[colon + 1 : end]))
                del buf[: end + 1]
                continue
        data = sock.recv(65536)
        if not data:
            raise Closed()
        buf += data


def record(*row):
    with lock:
        batches.append(list(row))


def exchange(index, sock, buf, offset):
    payload, expected = batch(offset)
    replies, t_sent = [], None
    try:
        sock.sendall(payload)
        t_sent = time.time()
        read_replies(sock, buf, len(expected), replies)
    except Closed:
        outcome = "closed"
    except OSError as exc:
        outcome = errno.errorcode.get(exc.errno or 0, str(exc))
    else:
        outcome = "answered"
    wrong = sum(r != e for r, e in zip(replies, expected))
    record(index, t_sent, time.time(), len(replies), outcome, wrong, len(expected))
    return outcome == "answered"


def connect():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect(PATH)
    except OSError as exc:
        sock.close()
        name = errno.errorcode.get(exc.errno or 0, str(exc))
        with lock:
            connect_errors[name] = connect_errors.get(name, 0) + 1
            state["gap"] = True
        return None
    return sock


def load(index):
    offset = index * BATCH
    while not stop.is_set():
        sock = connect()
        if sock is None:
            time.sleep(0.02)
            continue
        with sock:
            buf = bytearray()
            while not stop.is_set():
                if not exchange(index, sock, buf, offset):
                    break
                offset += BATCH
                with lock:
                    if state["gap"] and not state["recovered"]:
                        state["recovered"] = True
                        say("recovered")
                if PAUSE:
                    time.sleep(PAUSE)


def freeze(index):
    sock = connect()
    if sock is None:
        say("cannot connect")
        return
    with sock:
        buf = bytearray()
        if not exchange(index, sock, buf, 0):  # the server has accepted and served us
            say("warm-up failed")
            return
        with lock:
            state["ready"] += 1
            if state["ready"] == CONNECTIONS:
                say("ready")
        go.wait()
        payload, expected = batch(index * BATCH)
        sock.sendall(payload)
        t_sent = time.time()
        with lock:
            state["sent"] += 1
            if state["sent"] == CONNECTIONS:
                say("sent")
        replies, outcome = [], "answered"
        try:
            read_replies(sock, buf, len(expected), replies)
        except Closed:
            outcome = "closed"
        except OSError as exc:
            outcome = errno.errorcode.get(exc.errno or 0, str(exc))
        wrong = sum(r != e for r, e in zip(replies, expected))
        record(index, t_sent, time.time(), len(replies), outcome, wrong, len(expected))


signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGUSR1, lambda *_: go.set())
threads = [
    threading.Thread(target=load if MODE == "load" else freeze, args=(i,), daemon=True)
    for i in range(CONNECTIONS)
]
for thread in threads:
    thread.start()
while any(t.is_alive() for t in threads) and not stop.is_set():
    time.sleep(0.02)
for thread in threads:
    thread.join(15)
say("RESULT " + json.dumps({"batches": batches, "connect_errors": connect_errors}))
"""


@dataclass
class Batch:
    """One batch of pipelined requests, as the socket client saw it."""

    connection: int
    sent: float | None  # when the write returned (None: the write failed)
    done: float  # when the last reply arrived, or the connection failed
    answered: int  # replies received
    outcome: str  # "answered", "closed" (EOF), or an errno name
    wrong: int  # replies that differ from the expected one
    size: int  # requests in the batch


@dataclass
class ClientResult:
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
    """The socket client script in a container of the sidecar image (see the module doc)."""

    def __init__(
        self,
        stack: Stack,
        keys: list[tuple[str, str]],
        *,
        mode: str = "load",
        connections: int = 6,
        batch: int = 16,
        pause: float = 0.0,
    ) -> None:
        self.stack = stack
        spec = {
            "socket": CLIENT_SOCKET,
            "map": stack.config["server"]["map_name"],
            "keys": keys,
            "mode": mode,
            "connections": connections,
            "batch": batch,
            "pause": pause,
        }
        self.container = stack.client.containers.create(
            stack.sidecar_image,
            ["-c", SOCKET_CLIENT_SCRIPT],
            entrypoint=[IMAGE_PYTHON],
            name=f"{stack.name}-client-{uuid.uuid4().hex[:6]}",
            environment={"SPEC": json.dumps(spec)},
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            labels=LABELS,
            healthcheck={"test": ["NONE"]},
            volumes={stack.volume.name: {"bind": SIDECAR_SOCKET_DIR, "mode": "ro"}},
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
        return ClientResult([Batch(*row) for row in data["batches"]], data["connect_errors"])


# --- the sidecar image, once ----------------------------------------------------------------


def run_sidecar_once(
    stack: Stack,
    config: dict[str, Any],
    socket_dir: Path | None = None,
    command: list[str] | None = None,
    timeout: float = 30,
) -> tuple[int, str]:
    """``tempmail serve`` (or ``command``) in a fresh sidecar container; exit code, output.

    The config is written to a directory of its own; the stack's secret directory is mounted
    as in the stack; ``socket_dir`` (a host directory), if given, is mounted at
    /run/tempmail instead of a volume. The container must end by itself within ``timeout``.
    """
    workdir = Path(tempfile.mkdtemp(prefix="tempmail-it-once-"))
    workdir.chmod(0o755)
    try:
        (workdir / "config.toml").write_text(tomli_w.dumps(config))
        (workdir / "config.toml").chmod(0o644)
        volumes = {
            str(workdir): {"bind": CONFIG_DIR, "mode": "ro"},
            str(stack.secret_dir): {"bind": SECRET_DIR, "mode": "ro"},
        }
        if socket_dir is not None:
            volumes[str(socket_dir)] = {"bind": SIDECAR_SOCKET_DIR, "mode": "rw"}
        container = stack.client.containers.create(
            stack.sidecar_image,
            command or ["serve"],
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            labels=LABELS,
            volumes=volumes,
        )
        try:
            container.start()
            try:
                status = container.wait(timeout=timeout)
            except Exception:  # noqa: BLE001 - requests' timeouts, whatever the engine says
                container.kill()
                raise AssertionError(
                    f"the sidecar did not exit within {timeout} s:\n{container.logs().decode()}"
                ) from None
            return int(status["StatusCode"]), container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def socket_dir_config(stack: Stack, socket_path: str) -> dict[str, Any]:
    """The stack's config with another socket path."""
    data = copy.deepcopy(stack.config)
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
      :func:`send_like_an_mta`;
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
            attempts = send_like_an_mta(self.stack, self.addresses[i % 2], subject)
            self.figures.temporary_failures.update(attempts.failures)
            self.smtp_subjects.append(subject)
            self.progress = i + 1

    def _submitter(self) -> None:
        # An engine connection of its own: the killer uses the stack's at the same time.
        with contextlib.closing(docker.from_env()) as client:
            postfix = client.containers.get(f"{self.stack.name}-postfix")
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
            sidecar = self.stack._sidecar().get_wrapped_container()
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
                self.stack.wait_sidecar_ready()
                self.down.clear()
        finally:
            self.killer_done.set()

    def _kill(self) -> None:
        self.down.set()
        with contextlib.suppress(docker.errors.APIError):  # it may have died already
            self.stack.kill_sidecar("SIGKILL")
        self.figures.kills += 1
        wait_until(lambda: not self.stack.sidecar_running(), 10, 0.01, "the sidecar to die")


def postfix_log_count(stack: Stack, needle: str) -> int:
    return stack.postfix_logs().count(needle)
