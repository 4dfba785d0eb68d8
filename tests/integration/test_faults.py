"""Faults with real Postfix (issue 5): SIGKILL, SIGTERM and SIGHUP under load, socket trouble.

Every test prints its figures (run with -s to see them): they are the numbers of the README's
reliability table.

What "in-flight lookups are answered" means here, precisely: a request whose bytes reached the
sidecar's connection (the client's write had returned) before the sidecar logged "received
SIGTERM" gets its reply before the connection is closed. Requests written later may find the
connection closed or the socket gone; Postfix then answers 451 and the sender retries.
Connections still in the listen backlog (never accepted) are not in flight: the server has
received nothing from them.
"""

from __future__ import annotations

import contextlib
import copy
import os
import secrets
import shutil
import socket
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from helpers import wait_until

from .addresses import address_of
from .fault_tools import (
    ChaosRun,
    ClientResult,
    RcptLoad,
    SocketClient,
    host_directory,
    socket_dir_config,
)
from .mailbox import subject_counts
from .sidecar import RECIPIENT, SECRET_DIR, TEMPMAIL_UID, base_config, log_lines, log_time
from .stack import Stack

pytestmark = pytest.mark.containers

SEED = 20261127
#: Messages sent by SMTP through the SIGKILL chaos, and the kills.
CHAOS_MESSAGES = 120
CHAOS_KILLS = 8
#: Messages submitted with sendmail inside Postfix during the chaos (at least).
CHAOS_SENDMAIL = 12
#: SIGHUPs sent while lookups run (each one waited for: see the test).
RELOADS = 110

OK = f"OK {RECIPIENT}"
NOTFOUND = "NOTFOUND "


@pytest.fixture(scope="module")
def fault_stack(make_stack: Callable[..., Stack]) -> Stack:
    # window 3: today's and yesterday's addresses both stay valid if midnight passes mid-test.
    stack = make_stack(base_config(window=3))
    stack.postfix.disable_inflow_control()  # RcptLoad's probes would otherwise wait 1 s each
    return stack


@pytest.fixture
def stack(fault_stack: Stack) -> Iterator[Stack]:
    """The module's stack, with its sidecar running its original config after each test."""
    sidecar = fault_stack.sidecar
    original = copy.deepcopy(sidecar.config)
    yield fault_stack
    sidecar.write_config(original)  # first: a stopped sidecar starts from this file
    if sidecar.running():
        sidecar.reload_and_wait()
    else:
        sidecar.start()


def valid_addresses(stack: Stack) -> list[str]:
    return [stack.sidecar.address(0), stack.sidecar.address(1)]


def invalid_addresses(stack: Stack) -> list[str]:
    return [f"{secrets.token_hex(4)}@example.test", stack.sidecar.address(6)]


def socket_keys(stack: Stack) -> list[tuple[str, str]]:
    """Keys for the socket client and the reply each must get."""
    local, domain = stack.sidecar.address().split("@")
    return [
        (stack.sidecar.address(0), OK),
        (f"{secrets.token_hex(4)}@example.test", NOTFOUND),
        (stack.sidecar.address(1).upper(), OK),
        (stack.sidecar.address(6), NOTFOUND),
        (f"{local}+ext@{domain}", OK),
        ("example.test", NOTFOUND),
    ]


def last_line_after(text: str, needle: str, seen: int) -> str:
    lines = log_lines(text, needle)
    assert len(lines) > seen, f"no new {needle!r} in the sidecar log:\n{text[-3000:]}"
    return lines[seen]


# --- SIGKILL at random moments -------------------------------------------------------------


def queue_history(log: str, needle: str) -> str:
    """Every line of Postfix's log about the queue IDs whose lines contain ``needle``."""
    ids = {line.split(": ", 2)[1] for line in log.splitlines() if needle in line}
    return "\n".join(line for line in log.splitlines() if any(f" {i}: " in line for i in ids))


@pytest.mark.timeout(240)
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(stack: Stack) -> None:
    needles = ("status=bounced", "status=deferred", "map lookup problem")
    log_start = len(stack.postfix.logs())
    chaos = ChaosRun(
        stack,
        SEED,
        valid_addresses(stack),
        messages=CHAOS_MESSAGES,
        kills=CHAOS_KILLS,
        sendmail=CHAOS_SENDMAIL,
    )
    chaos.run()

    # Everything accepted must arrive: wake pickup for the maildrop and wait for the queue.
    stack.sidecar.ensure_running()

    def all_delivered() -> bool:
        counts = subject_counts(stack.mailbox.messages())
        if all(counts[s] for s in chaos.subjects) and not stack.postfix.queued():
            return True
        stack.postfix.flush()
        return False

    with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
        wait_until(all_delivered, timeout=90, interval=1.0, what="every message delivered")
    messages = stack.mailbox.messages()
    counts = subject_counts(messages)
    log = stack.postfix.logs()[log_start:]
    after = {needle: log.count(needle) for needle in needles}
    figures = chaos.figures
    figures.sent_smtp = len(chaos.smtp_subjects)
    figures.sent_sendmail = len(chaos.sendmail_subjects)
    figures.delivered = sum(1 for s in chaos.subjects if counts[s])
    figures.duplicates = sum(counts[s] - 1 for s in chaos.subjects if counts[s] > 1)
    figures.lost = sum(1 for s in chaos.subjects if not counts[s])
    figures.bounced = after["status=bounced"]
    figures.deferred = after["status=deferred"]
    figures.cleanup_lookup_problems = after["map lookup problem"]
    print(f"\nSIGKILL chaos (seed {SEED}): {figures.report()}")

    assert figures.kills >= CHAOS_KILLS
    assert figures.sent_smtp == CHAOS_MESSAGES
    assert figures.sent_sendmail >= CHAOS_SENDMAIL
    assert [s for s in chaos.subjects if counts[s] != 1] == []  # none lost, none twice
    assert figures.bounced == 0, queue_history(log, "status=bounced")
    assert figures.deferred == 0, queue_history(log, "status=deferred")
    # Postfix tells postmaster about a 451 after DATA; the example image delivers that to root.
    notices = [line for line in log.splitlines() if "orig_to=<postmaster>" in line]
    print(
        f"postmaster notices: {len(notices)}, after {figures.temporary_failures['DATA 451']} DATA 451"
    )
    assert [line for line in notices if "status=sent" not in line] == []
    assert stack.postfix.queued() == []
    assert [m["Subject"] for m in messages if "MAILER-DAEMON" in str(m["From"])] == []
    # The kills really hit lookups: the sender saw 4xx, at RCPT or after DATA (cleanup).
    assert sum(figures.temporary_failures.values()) > 0


# --- SIGTERM under load -----------------------------------------------------------------------


def test_sigterm_answers_every_request_already_received(stack: Stack) -> None:
    """Requests wait in the sidecar's sockets (container frozen) when SIGTERM arrives.

    docker thaws the container after delivering the signal, so the server finds 256
    requests and a SIGTERM at once. The event loop reads the sockets that were readable
    first (seen in a debug log: all 256 lookups are logged before "received SIGTERM"), so
    these are answered before the shutdown even begins. The test guards that order: a
    server that acted on the signal first would close these connections unanswered.
    """
    connections, batch = 8, 32
    logs = stack.sidecar.logs()
    seen = len(log_lines(logs, "received SIGTERM")), len(log_lines(logs, "server: stopped"))
    with SocketClient(
        stack, socket_keys(stack), mode="freeze", connections=connections, batch=batch
    ) as client:
        client.wait_for("ready")  # every connection accepted and served once
        sidecar = stack.sidecar.docker()
        sidecar.pause()  # the cgroup freezer: the server cannot read anything now
        try:
            client.signal("SIGUSR1")
            client.wait_for("sent")  # connections x batch requests now wait in its sockets
            sidecar.kill(signal="SIGTERM")  # docker delivers it and thaws the container
        finally:
            with contextlib.suppress(docker.errors.APIError):  # "is not paused": already thawed
                sidecar.unpause()
        wait_until(lambda: not stack.sidecar.running(), 15, 0.05, "the sidecar to exit")
        result = client.result(stop=False)
    logs = stack.sidecar.logs()
    exit_code = stack.sidecar.docker().attrs["State"]["ExitCode"]
    print(
        f"\nSIGTERM with {connections * batch} requests waiting in {connections} connections: "
        f"{result.answered - connections * batch} answered, {result.wrong} wrong, "
        f"exit {exit_code}"
    )
    assert exit_code == 0
    assert len(log_lines(logs, "received SIGTERM")) == seen[0] + 1
    assert len(log_lines(logs, "server: stopped")) == seen[1] + 1
    assert not stack.postfix.socket_exists()
    assert len(result.batches) == 2 * connections  # the warm-up and the frozen batch
    assert result.unanswered() == []
    assert result.wrong == 0


def analyse_stop(result: ClientResult, stop_began: float, stopped: float) -> dict[str, Any]:
    """Sort the socket client's batches by when they were written, against the server's log.

    before: written before "received SIGTERM" (in flight if the reply came after it);
    during: written between that and "stopped" (the shutdown's grace, then closed);
    after: written later, or the write failed (the server gone, then back).
    """
    before = [b for b in result.batches if b.sent is not None and b.sent < stop_began]
    during = [b for b in result.batches if b.sent is not None and stop_began <= b.sent < stopped]
    after = [b for b in result.batches if b not in before and b not in during]
    return {
        "before": before,
        "dropped": [b for b in before if b.answered < b.size],
        "in_flight": [b for b in before if b.done >= stop_began],
        "during": Counter(b.outcome for b in during),
        "after": Counter(b.outcome for b in after),
    }


@pytest.mark.timeout(120)
def test_docker_stop_under_load_answers_lookups_in_flight(stack: Stack) -> None:
    valid, invalid = valid_addresses(stack), invalid_addresses(stack)
    logs = stack.sidecar.logs()
    seen = len(log_lines(logs, "received SIGTERM")), len(log_lines(logs, "server: stopped"))
    with (
        SocketClient(stack, socket_keys(stack), connections=6, batch=16) as client,
        RcptLoad(stack.smtp, valid, invalid) as rcpt,
    ):
        rcpt.wait_for(lambda a: a.code == 250, 20)
        took = stack.sidecar.stop()
        exit_code = stack.sidecar.docker().attrs["State"]["ExitCode"]
        deferred = rcpt.count(lambda a: a.code == 451)
        rcpt.wait_for(lambda a: a.code == 451, deferred + 3)  # Postfix defers while it is down
        stack.sidecar.start()
        ready = time.time()
        client.wait_for("recovered")
        accepted = rcpt.count(lambda a: a.code == 250)
        rcpt.wait_for(lambda a: a.code == 250, accepted + 10)
        rcpt.stop()
        result = client.result()
    logs = stack.sidecar.logs()
    stop_began = log_time(last_line_after(logs, "received SIGTERM", seen[0]))
    stopped = log_time(last_line_after(logs, "server: stopped", seen[1]))
    figures = analyse_stop(result, stop_began, stopped)
    answers = rcpt.answers
    codes = Counter((a.kind, a.code) for a in answers)
    late_451 = [a for a in answers if a.code == 451 and a.at > ready + 0.5]
    print(
        f"\ndocker stop under load: took {took:.2f} s, shutdown {1000 * (stopped - stop_began):.0f} ms, "
        f"exit {exit_code}; socket client: {result.requests} requests, "
        f"{len(figures['in_flight'])} batches ({sum(b.size for b in figures['in_flight'])} "
        f"requests) in flight at SIGTERM and answered, {len(figures['dropped'])} dropped; "
        f"batches written during the shutdown: {dict(figures['during'])}, later: "
        f"{dict(figures['after'])}, connect errors {result.connect_errors}; "
        f"RCPT answers {dict(codes)}"
    )
    assert exit_code == 0
    assert took < 2
    # The socket level: nothing received before the stop went unanswered, nothing was wrong.
    assert figures["before"], "the socket client sent nothing before the stop"
    assert figures["in_flight"], "no request was in flight when the stop began"
    assert figures["dropped"] == []
    assert result.wrong == 0
    # The Postfix level: 250/550 or 451 (deferred), never a wrong verdict or a lost session.
    assert set(codes) <= {("valid", 250), ("valid", 451), ("invalid", 550), ("invalid", 451)}
    assert all(a.at >= stop_began for a in answers if a.code == 451)
    assert late_451 == []


# --- SIGHUP under load ------------------------------------------------------------------------


def wait_for_reloads(stack: Stack, count: int) -> None:
    wait_until(
        lambda: len(log_lines(stack.sidecar.logs(), "configuration reloaded")) >= count,
        20,
        0.02,
        f"{count} reloads in the sidecar log",
    )


@pytest.mark.timeout(180)
def test_sighup_storm_under_load_fails_no_lookup(stack: Stack) -> None:
    # Two configs that differ (another secret file and scheme accepted) but agree on every
    # address the load asks about; each SIGHUP switches to the other.
    base = copy.deepcopy(stack.sidecar.config)
    variant = copy.deepcopy(base)
    variant["identities"]["default"]["previous_secret_files"] = [
        stack.sidecar.write_secret("storm", secrets.token_urlsafe(32))
    ]
    variant["identities"]["default"]["accept"] = ["md5", "hmac"]
    logs = stack.sidecar.logs()
    reloaded = len(log_lines(logs, "configuration reloaded"))
    failed = len(log_lines(logs, "reload failed"))
    valid, invalid = valid_addresses(stack), invalid_addresses(stack)
    t0 = time.monotonic()
    with (
        SocketClient(stack, socket_keys(stack), connections=4, batch=8, pause=0.002) as client,
        RcptLoad(stack.smtp, valid, invalid) as rcpt,
    ):
        rcpt.wait_for(lambda a: a.code == 250, 5)
        for sent in range(1, RELOADS + 1):
            stack.sidecar.write_config(variant if sent % 2 else base)
            stack.sidecar.kill("SIGHUP")
            # One signal at a time: a SIGHUP sent while the previous one is still pending
            # (the process not scheduled yet) merges with it in the kernel. Seen here under
            # CPU contention: 10 SIGHUPs about 20 ms apart, 9 reloads. The merged reload still
            # reads the file after the last write, so no config change is lost.
            wait_for_reloads(stack, reloaded + sent)
        rcpt.stop()
        result = client.result()
    seconds = time.monotonic() - t0
    logs = stack.sidecar.logs()
    reloads = len(log_lines(logs, "configuration reloaded")) - reloaded
    failures = rcpt.failures()
    print(
        f"\nSIGHUP under load: {reloads} reloads in {seconds:.1f} s; socket client: "
        f"{result.requests} lookups, {result.requests - result.answered} unanswered, "
        f"{result.wrong} wrong, connect errors {result.connect_errors}; Postfix: "
        f"{len(rcpt.answers)} RCPT answers, {len(failures)} failed"
    )
    assert reloads == RELOADS
    assert len(log_lines(logs, "reload failed")) == failed
    assert result.requests > 0
    assert result.unanswered() == []
    assert result.wrong == 0
    assert result.connect_errors == {}
    assert len(rcpt.answers) > 0
    assert failures == []
    assert stack.sidecar.running()


def invalid_toml(_data: dict[str, Any], _new_secret_file: str) -> str:
    return "[identities.default\nsecret_file = 1\n"


def unknown_key(data: dict[str, Any], new_secret_file: str) -> dict[str, Any]:
    # A new secret as well: had this config been loaded, the old addresses would be gone.
    identity = {**data["identities"]["default"], "secret_file": new_secret_file, "windw": 3}
    return {**data, "identities": {"default": identity}}


def missing_secret_file(data: dict[str, Any], _new_secret_file: str) -> dict[str, Any]:
    identity = {**data["identities"]["default"], "secret_file": f"{SECRET_DIR}/gone"}
    return {**data, "identities": {"default": identity}}


#: How to break the working config, and the reason the log must give.
BROKEN_CONFIGS: dict[str, tuple[Callable[[dict[str, Any], str], str | dict[str, Any]], str]] = {
    "invalid-toml": (invalid_toml, "config.toml: invalid TOML: "),
    "unknown-key": (
        unknown_key,
        "identities.default.windw: unknown key (did you mean 'window'?)",
    ),
    "missing-secret-file": (
        missing_secret_file,
        "identities.default.secret_file: cannot read the secret file: No such file or directory",
    ),
}


@pytest.mark.parametrize("broken", list(BROKEN_CONFIGS))
def test_reload_of_a_broken_config_keeps_the_old_one(stack: Stack, broken: str) -> None:
    make, reason = BROKEN_CONFIGS[broken]
    original = copy.deepcopy(stack.sidecar.config)
    new_secret = secrets.token_urlsafe(32)
    new_address = address_of(original["identities"]["default"], new_secret)
    broken_config = make(original, stack.sidecar.write_secret("new", new_secret))
    valid = valid_addresses(stack)
    with RcptLoad(stack.smtp, valid, [new_address, *invalid_addresses(stack)], threads=2) as rcpt:
        rcpt.wait_for(lambda a: a.code == 250, 3)
        if isinstance(broken_config, str):
            stack.sidecar.write_raw_config(broken_config)
        else:
            stack.sidecar.write_config(broken_config)
        line = stack.sidecar.reload_and_wait("reload failed")
        answered = len(rcpt.answers)
        rcpt.wait_for(lambda _: True, answered + 6)  # lookups after the failed reload
        rcpt.stop()
    print(f"\nbroken config ({broken}): {line}")
    assert "reload failed (signal), still serving the previous configuration: " in line
    assert reason in line
    assert " ERROR " in line
    assert rcpt.failures() == []  # the old config kept answering, before and after
    assert stack.smtp.rcpt(valid[0]).code == 250
    assert stack.smtp.rcpt(new_address).code == 550  # not the broken config's new secret
    assert stack.sidecar.running()
    # The image's health check reads the config file too, and that is broken now.
    code, output = stack.sidecar.exec(["tempmail", "query", "--self-test"])
    print(f"health check meanwhile: exit {code}: {output.strip()}")


# --- the socket directory ---------------------------------------------------------------------


def test_missing_socket_directory_is_a_clear_error(stack: Stack) -> None:
    config = socket_dir_config(stack.sidecar.config, "/run/tempmail/missing/socket")
    code, output = stack.sidecar.run_once(["serve"], config=config)
    print(f"\nmissing socket directory: exit {code}: {output.strip()}")
    assert code == 71  # EX_OSERR
    # In a container, a missing directory is a missing volume (the advice on a host says how
    # to create it: tests/test_server.py).
    assert output == (
        "tempmail: socket.path: the directory /run/tempmail/missing does not exist in this "
        "container; mount the volume shared with Postfix there (e.g. -v "
        "tempmail-socket:/run/tempmail/missing), or set [socket] path to a file in the "
        "directory where it is mounted\n"
    )


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        pytest.param(
            0o755,
            "tempmail: socket.path: cannot create the socket in /run/tempmail: Permission "
            "denied; this container runs as uid 10001: the volume at /run/tempmail must let it "
            "enter and write (owned by uid 10001, or group 10001 with mode 0770; in "
            "Kubernetes, fsGroup: 10001)",
            id="not-writable",
        ),
        pytest.param(
            0o700,
            "tempmail: socket.path: cannot open /run/tempmail: Permission denied; this "
            "container runs as uid 10001: the volume at /run/tempmail must let it enter and "
            "write (owned by uid 10001, or group 10001 with mode 0770; in Kubernetes, "
            "fsGroup: 10001)",
            id="not-searchable",
        ),
    ],
)
def test_socket_directory_with_wrong_permissions_is_a_clear_error(
    stack: Stack, mode: int, message: str
) -> None:
    directory = host_directory(0, mode)  # root's: uid 10001 may not create anything there
    try:
        code, output = stack.sidecar.run_once(["serve"], socket_dir=directory)
    finally:
        directory.rmdir()
    print(f"\nsocket directory root:root {mode:04o}: exit {code}: {output.strip()}")
    assert code == 71
    assert output.strip() == message


def make_regular_file(path: Path) -> None:
    path.write_text("precious\n")


def make_directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_text("precious\n")


def make_symlink(path: Path) -> None:
    path.symlink_to("/etc/passwd")


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        pytest.param(make_regular_file, stat.S_ISREG, id="regular-file"),
        pytest.param(make_directory, stat.S_ISDIR, id="directory"),
        pytest.param(make_symlink, stat.S_ISLNK, id="symlink"),
        pytest.param(make_fifo, stat.S_ISFIFO, id="fifo"),
    ],
)
def test_socket_path_that_is_not_a_socket_is_refused_and_kept(
    stack: Stack, make: Callable[[Path], None], kind: Callable[[int], bool]
) -> None:
    directory = host_directory(TEMPMAIL_UID, 0o750)
    try:
        target = directory / "socket"
        make(target)
        before = target.lstat()
        code, output = stack.sidecar.run_once(["serve"], socket_dir=directory)
        after = target.lstat()
        print(
            f"\nsocket path is a {make.__name__.removeprefix('make_')}: exit {code}: {output.strip()}"
        )
        assert code == 71
        assert output.strip() == (
            "tempmail: socket.path: /run/tempmail/socket exists and is not a socket; "
            "refusing to delete it"
        )
        assert kind(after.st_mode)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        if kind is stat.S_ISREG:
            assert target.read_text() == "precious\n"
    finally:
        shutil.rmtree(directory)


def stale_socket(path: Path, mode: int) -> None:
    """A socket file nobody listens on (a crashed server's), created by root."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    path.chmod(mode)


def test_stale_socket_the_sidecar_may_not_connect_to_is_a_clear_error(stack: Stack) -> None:
    # (A stale socket it may remove is replaced: test_sidecar_outage.py, after a SIGKILL.)
    directory = host_directory(0, 0o755)
    try:
        stale_socket(directory / "socket", 0o755)  # connect() needs write permission
        code, output = stack.sidecar.run_once(["serve"], socket_dir=directory)
        assert (directory / "socket").exists()
    finally:
        (directory / "socket").unlink()
        directory.rmdir()
    print(f"\nstale root socket, mode 0755: exit {code}: {output.strip()}")
    assert code == 71
    assert output.strip() == (
        "tempmail: socket.path: cannot tell whether /run/tempmail/socket is in use: "
        "Permission denied"
    )


def test_stale_socket_the_sidecar_cannot_remove_is_a_clear_error(stack: Stack) -> None:
    directory = host_directory(0, 0o755)  # not writable by uid 10001: unlink() fails
    try:
        stale_socket(directory / "socket", 0o777)  # connect() is refused: it is stale
        code, output = stack.sidecar.run_once(["serve"], socket_dir=directory)
        assert (directory / "socket").exists()
    finally:
        (directory / "socket").unlink()
        directory.rmdir()
    print(f"\nstale root socket in a root directory: exit {code}: {output.strip()}")
    # Like every other socket problem: one line naming socket.path and the reason, EX_OSERR.
    lines = [line for line in output.splitlines() if "INFO" not in line]
    assert "Traceback" not in output
    assert code == 71
    assert len(lines) == 1
    assert lines[0].startswith("tempmail: socket.path: ")
    assert "/run/tempmail/socket" in lines[0]
    assert "Permission denied" in lines[0]


def test_socket_path_too_long_is_a_clear_error(stack: Stack) -> None:
    path = f"/run/tempmail/{'x' * 120}"  # the directory exists; the name fits a file system
    code, output = stack.sidecar.run_once(
        ["serve"], config=socket_dir_config(stack.sidecar.config, path)
    )
    print(f"\nsocket path of {len(path)} bytes: exit {code}: {output.strip()}")
    lines = output.strip().splitlines()
    assert code != 0
    assert len(lines) == 1
    assert lines[0].startswith("tempmail: ")
    assert "socket.path" in lines[0]
    assert not lines[0].endswith("None")
    assert "too long" in lines[0]
