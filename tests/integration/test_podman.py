"""The sidecar and Postfix under Debian's podman (4.3), sharing a podman volume, as documented.

docs/containers.md's podman blocks run as written: podman-load copies the images this
checkout built with docker into podman's storage (only when podman does not hold the same
image ids yet), podman-sidecar starts the sidecar in a directory prepared by the README's
sidecar-files block, and podman-postfix starts Postfix with the same three substitutions as the
README's Postfix block (host networking, a free port, loopback only: no bridge network here).

The blocks name their containers and volume (tempmail, postfix, tempmail-socket): the test
refuses to run if podman has one of them already, and removes only what it made.

podman runs rootful here, as root; rootless podman keeps its own storage and limits.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import require_tool, wait_until

from . import readme
from .addresses import address_of, wait_past_utc_midnight
from .engine import REPO, Images, free_port, missing_prerequisite
from .operator_steps import (
    ACCEPTED,
    POSTFIX_SOCKET,
    SELF_TEST,
    UNKNOWN,
    new_secret,
    postfix_substitutions,
    replace_like_an_editor,
    run,
    shutdown_seconds,
    substituted,
)
from .sidecar import TEMPMAIL_UID

pytestmark = pytest.mark.containers

DOCS = REPO / "docs" / "containers.md"
SIDECAR, POSTFIX, VOLUME = "tempmail", "postfix", "tempmail-socket"
RELOAD_WITHIN = 5.0
#: CAP_SYS_RESOURCE (linux/capability.h): lets a process raise a hard resource limit.
CAP_SYS_RESOURCE = 24
#: How the OCI runtime says that it may not set RLIMIT_NOFILE (type 7): runc, crun.
REFUSED_NOFILE = (
    "error setting rlimit type 7: operation not permitted",
    "setrlimit `RLIMIT_NOFILE`: Operation not permitted",
)


def docs_block(name: str) -> str:
    """A block of docs/containers.md marked ``<!-- test: NAME -->`` (see readme.py)."""
    blocks = readme.parse(DOCS.read_text(encoding="utf-8"), "docs/containers.md")
    assert name in blocks, f"docs/containers.md has no block marked {name!r}"
    return blocks[name].text


def bash(text: str, cwd: Path | None = None) -> str:
    return run(["bash", "-euo", "pipefail", "-c", text], cwd=cwd)


@dataclass
class PodmanStack:
    """The documented podman sidecar and Postfix; see the module docstring."""

    podman: str
    workdir: Path
    port: int

    def __call__(self, *args: str) -> str:
        return run([self.podman, *args])

    def exec_sidecar(self, command: list[str]) -> tuple[int, str]:
        result = subprocess.run(
            [self.podman, "exec", SIDECAR, *command],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.returncode, result.stdout + result.stderr

    def ready(self) -> bool:
        return self.exec_sidecar(SELF_TEST)[0] == 0

    def smtp_ready(self) -> bool:
        """Whether Postfix answers with its banner (it starts after the sidecar, and may take
        seconds on a busy machine)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                return sock.recv(512).startswith(b"220")
        except OSError:
            return False

    def logs(self) -> str:
        result = subprocess.run(
            [self.podman, "logs", SIDECAR], capture_output=True, text=True, timeout=30, check=True
        )
        return result.stdout + result.stderr

    def rcpt(self, address: str) -> int:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.ehlo("podman.test")
            client.mail("sender@localhost")
            return int(client.rcpt(address)[0])

    def socket_dir(self) -> Path:
        return Path(self("volume", "inspect", "--format", "{{.Mountpoint}}", VOLUME).strip())


def podman_image_id(podman: str, image: str) -> str:
    result = subprocess.run(
        [podman, "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def taken_names(podman: str) -> list[str]:
    """Which of the documented names podman has already."""
    taken = []
    for kind, name in (("container", SIDECAR), ("container", POSTFIX), ("volume", VOLUME)):
        exists = subprocess.run(
            [podman, kind, "exists", name], capture_output=True, timeout=30, check=False
        )
        if exists.returncode == 0:
            taken.append(f"{kind} {name}")
    return taken


@pytest.fixture(scope="module")
def podman(docker_images: Images) -> str:
    """podman, holding the images this checkout built (docs block podman-load when not)."""
    found = require_tool("podman", "podman")
    if os.geteuid() != 0:
        missing_prerequisite("the documented podman commands run rootful, as root")
    load = docs_block("podman-load")
    for image in (docker_images.sidecar, docker_images.postfix):
        assert image in load, f"docs block podman-load does not load {image}, the image built here"
    wanted = {
        image: docker_images.client.images.get(image).id.removeprefix("sha256:")
        for image in (docker_images.sidecar, docker_images.postfix)
    }
    if any(podman_image_id(found, image) != wanted[image] for image in wanted):
        t0 = time.monotonic()
        bash(load)
        print(f"\npodman-load took {time.monotonic() - t0:.1f} s")
    assert {image: podman_image_id(found, image) for image in wanted} == wanted
    return found


@pytest.fixture(scope="module")
def podman_stack(podman: str) -> Iterator[PodmanStack]:
    """The README's sidecar files, then the docs' podman blocks; removed afterwards."""
    taken = taken_names(podman)
    assert not taken, f"the documented names are in use in podman: {', '.join(taken)}"
    workdir = Path(tempfile.mkdtemp(prefix="tempmail-podman-"))
    started = PodmanStack(podman, workdir, free_port())
    try:
        run(readme.shell("sidecar-files"), cwd=workdir)
        t0 = time.monotonic()
        bash(docs_block("podman-sidecar"), cwd=workdir)
        bash(
            substituted(docs_block("podman-postfix"), postfix_substitutions(started.port)),
            cwd=workdir,
        )
        wait_until(started.ready, 30, 0.1, "the podman sidecar ready")
        print(f"\npodman sidecar ready {time.monotonic() - t0:.2f} s after podman run")
        try:
            wait_until(started.smtp_ready, 30, 0.1, "Postfix's banner under podman")
        except TimeoutError as exc:
            logs = run([podman, "logs", POSTFIX])
            raise AssertionError(f"{exc}; podman logs {POSTFIX}:\n{logs}") from None
        print(f"podman Postfix answering {time.monotonic() - t0:.2f} s after podman run")
        yield started
    finally:
        for name in (SIDECAR, POSTFIX):
            subprocess.run(
                [podman, "rm", "--force", "--time", "0", name],
                capture_output=True,
                timeout=60,
                check=False,
            )
        subprocess.run(
            [podman, "volume", "rm", "--force", VOLUME],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _not_at_midnight() -> None:
    wait_past_utc_midnight(margin=60)


def has_capability(number: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> number & 1)
    raise AssertionError("no CapEff line in /proc/self/status")


def test_podman_needs_the_ulimit_flags_where_its_defaults_exceed_the_hard_limit(
    podman: str, docker_images: Images
) -> None:
    """podman 4.3 (rootful) asks runc for open-file limits above this process's hard limit;
    without CAP_SYS_RESOURCE runc may not raise it, and only --ulimit lets a container start."""
    name = f"tempmail-it-ulimit-{uuid.uuid4().hex[:8]}"
    run([podman, "create", "--name", name, "--network", "none", docker_images.sidecar, "--version"])
    try:
        ulimits = json.loads(
            run([podman, "inspect", "--format", "{{json .HostConfig.Ulimits}}", name])
        )
        asked = {u["Name"]: u["Hard"] for u in ulimits}
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        refused = asked["RLIMIT_NOFILE"] > hard and not has_capability(CAP_SYS_RESOURCE)
        print(f"\npodman's default limits {asked}; this process's hard nofile {hard}")
        started = subprocess.run(
            [podman, "start", "--attach", name],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if refused:
            assert started.returncode != 0
            # runc's words (Debian's podman uses runc when docker.io brought it), or crun's.
            assert any(words in started.stderr for words in REFUSED_NOFILE), started.stderr
        else:
            assert started.returncode == 0, started.stderr
    finally:
        subprocess.run(
            [podman, "rm", "--force", name], capture_output=True, timeout=60, check=False
        )


@pytest.mark.timeout(120)
def test_podman_delivers_mail_through_the_sidecar(podman_stack: PodmanStack) -> None:
    """Under podman: today's address gets 250 and is delivered; a random one gets 550."""
    code, printed = podman_stack.exec_sidecar(["tempmail", "address"])
    assert code == 0, printed
    address = next(line for line in printed.splitlines() if line.endswith("@example.test"))
    wait_until(lambda: podman_stack.rcpt(address) == ACCEPTED, 30, 0.2, "Postfix accepting")
    assert podman_stack.rcpt(f"{uuid.uuid4().hex[:8]}@example.test") == UNKNOWN
    subject = f"podman {uuid.uuid4().hex[:12]}"
    with smtplib.SMTP("127.0.0.1", podman_stack.port, timeout=30) as client:
        client.sendmail("sender@localhost", [address], f"Subject: {subject}\r\n\r\nhello\r\n")
    wait_until(
        lambda: (
            subprocess.run(
                [
                    podman_stack.podman,
                    "exec",
                    POSTFIX,
                    "grep",
                    "-rlx",
                    f"Subject: {subject}",
                    "/home/user/Maildir/new",
                ],
                capture_output=True,
                timeout=30,
                check=False,
            ).returncode
            == 0
        ),
        30,
        0.2,
        f"mail {subject!r} in the Maildir",
    )


def test_podman_postfix_has_the_lines_the_sidecar_prints(podman_stack: PodmanStack) -> None:
    """The documented podman Postfix got `tempmail postfix-config`'s lines as printed."""
    code, printed = podman_stack.exec_sidecar(
        ["tempmail", "postfix-config", "--postfix-socket", POSTFIX_SOCKET]
    )
    assert code == 0, printed
    assert "virtual_alias_maps = pipemap:{regexp:" in printed
    shown = podman_stack(
        "exec",
        POSTFIX,
        "postconf",
        "-n",
        "virtual_alias_domains",
        "virtual_alias_maps",
        "recipient_delimiter",
    )
    assert sorted(shown.splitlines()) == sorted(printed.splitlines())


def test_podman_healthcheck_run_asks_the_server(podman_stack: PodmanStack) -> None:
    """podman healthcheck run (what periodic checks would run) passes and records healthy."""
    assert podman_stack("healthcheck", "run", SIDECAR) == ""
    assert podman_stack("inspect", "--format", "{{.State.Health.Status}}", SIDECAR) == "healthy\n"


@pytest.mark.timeout(120)
def test_podman_sidecar_reloads_a_replaced_secret_and_on_hup(podman_stack: PodmanStack) -> None:
    """A secret renamed over the old one is served within 5 s; podman kill -s HUP reloads."""
    config = podman_stack.workdir / "tempmail" / "config" / "config.toml"
    table = readme_identity(config)
    secret_file = podman_stack.workdir / "tempmail" / "secrets" / "secret"
    secret = new_secret()
    changed = time.monotonic()
    replace_like_an_editor(secret_file, secret + "\n", 0o400, owner=TEMPMAIL_UID)
    new_address = address_of(table, secret)
    wait_until(
        lambda: podman_stack.rcpt(new_address) == ACCEPTED, RELOAD_WITHIN + 5, 0.1, "new secret"
    )
    took = time.monotonic() - changed
    print(f"\nreplaced secret served under podman after {took:.2f} s")
    assert took <= RELOAD_WITHIN
    podman_stack("kill", "--signal", "HUP", SIDECAR)
    wait_until(lambda: "(signal; generation" in podman_stack.logs(), 10, 0.1, "the HUP reload")
    assert podman_stack.rcpt(new_address) == ACCEPTED


def readme_identity(config: Path) -> dict[str, str]:
    table: dict[str, str] = tomllib.loads(config.read_text())["identities"]["default"]
    return table


@pytest.mark.timeout(120)
def test_podman_stop_exits_0_and_removes_the_socket(podman_stack: PodmanStack) -> None:
    """podman stop: the sidecar shuts down in under a second, exits 0, leaves no socket."""
    socket_file = podman_stack.socket_dir() / "socket"
    assert socket_file.is_socket()
    podman_stack("stop", "--time", "10", SIDECAR)
    state = podman_stack("inspect", "--format", "{{.State.ExitCode}}", SIDECAR)
    assert state == "0\n"
    took = shutdown_seconds(podman_stack.logs())
    print(f"\nthe sidecar's shutdown under podman: {took:.3f} s")
    assert took < 1
    assert not socket_file.exists()
    assert podman_stack.rcpt("anything@example.test") == 451  # Postfix defers, never bounces
