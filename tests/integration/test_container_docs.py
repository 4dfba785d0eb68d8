"""The README's container commands, run as written; why directories are mounted; advice given.

The README blocks sidecar-files, sidecar-run and sidecar-use run verbatim (``readme.shell``)
in an empty directory, as root. sidecar-postfix runs with three substitutions, each of which
must match exactly once, so that a README edit that breaks them fails here: host networking
instead of ``-p 25:25`` and a free port instead of 25 (this machine has no bridge network),
and loopback only instead of every interface (a test must not listen on the network).

The README names its containers and volume (tempmail, postfix, tempmail-socket): the test
refuses to run if one of them exists already, and removes only what it made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import smtplib
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from helpers import wait_until

from . import readme
from .addresses import wait_past_utc_midnight
from .engine import LABELS, Images, free_port, missing_prerequisite
from .mailbox import maildir_messages
from .operator_steps import (
    ACCEPTED,
    POSTFIX_SOCKET,
    SELF_TEST,
    new_secret,
    postfix_substitutions,
    replace_like_an_editor,
    run,
    substituted,
)
from .pod import PAUSE_IMAGE
from .sidecar import RECIPIENT

pytestmark = pytest.mark.containers

#: The names the README gives its containers and volume.
SIDECAR, POSTFIX, VOLUME = "tempmail", "postfix", "tempmail-socket"
#: How soon a changed file must be served without a signal (issue 10: "within 5 s").
RELOAD_WITHIN = 5.0


@dataclass
class ReadmeSidecar:
    """The README's sidecar and Postfix, started from the README's blocks in ``workdir``."""

    client: Any
    workdir: Path
    port: int

    def container(self, name: str) -> Any:
        return self.client.containers.get(name)

    def sidecar_exec(self, command: list[str]) -> tuple[int, str]:
        result = self.container(SIDECAR).exec_run(command)
        return int(result.exit_code), result.output.decode(errors="replace")

    def logs(self) -> str:
        return str(self.container(SIDECAR).logs().decode(errors="replace"))

    def ready(self) -> bool:
        return self.sidecar_exec(SELF_TEST)[0] == 0

    def recipient_of(self, address: str) -> str:
        code, output = self.sidecar_exec(["tempmail", "query", address])
        return output.strip() if code == 0 else f"exit {code}: {output.strip()}"


def existing(client: Any) -> list[str]:
    """Which of the README's names are taken on this engine already."""
    taken = []
    for name in (SIDECAR, POSTFIX):
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(name)
            taken.append(f"container {name}")
    with contextlib.suppress(docker.errors.NotFound):
        client.volumes.get(VOLUME)
        taken.append(f"volume {VOLUME}")
    return taken


@pytest.fixture(scope="module")
def readme_sidecar(docker_images: Images) -> Iterator[ReadmeSidecar]:
    """The README's blocks run in an empty directory; everything removed afterwards."""
    if os.geteuid() != 0:
        missing_prerequisite("the README's commands are run as root (chown 10001)")
    client = docker_images.client
    taken = existing(client)
    assert not taken, f"the README's names are in use on this engine: {', '.join(taken)}"
    for name in ("sidecar-run", "sidecar-postfix"):
        text = readme.block(name).text
        image = docker_images.sidecar if name == "sidecar-run" else docker_images.postfix
        assert image in text, f"README block {name} does not run {image}, the image built here"
    workdir = Path(tempfile.mkdtemp(prefix="tempmail-readme-"))
    started = ReadmeSidecar(client, workdir, free_port())
    try:
        run(readme.shell("sidecar-files"), cwd=workdir)
        run(readme.shell("sidecar-run"), cwd=workdir)
        postfix = substituted(
            readme.block("sidecar-postfix").text, postfix_substitutions(started.port)
        )
        run(["bash", "-euo", "pipefail", "-c", postfix], cwd=workdir)
        wait_until(started.ready, 30, 0.1, "the README's sidecar ready")
        yield started
    finally:
        for name in (SIDECAR, POSTFIX):
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(name).remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(VOLUME).remove(force=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _not_at_midnight() -> None:
    wait_past_utc_midnight(margin=60)


def banner(port: int) -> bool:
    with contextlib.suppress(OSError), smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        return client.noop()[0] == ACCEPTED
    return False


@pytest.mark.timeout(120)
def test_the_readme_sidecar_delivers_todays_address(readme_sidecar: ReadmeSidecar) -> None:
    """The README's commands: today's address is delivered; the HUP reloads, not kills."""
    printed = run(readme.shell("sidecar-use"), cwd=readme_sidecar.workdir)
    address = printed.split()[0]
    assert address.endswith("@example.test"), printed
    wait_until(lambda: "(signal; generation 2)" in readme_sidecar.logs(), 10, 0.1, "HUP reload")
    assert readme_sidecar.container(SIDECAR).status == "running"
    wait_until(lambda: banner(readme_sidecar.port), 30, 0.2, "Postfix's SMTP banner")
    subject = f"readme {uuid.uuid4().hex[:12]}"  # ASCII: smtplib sends it as 7-bit
    with smtplib.SMTP("127.0.0.1", readme_sidecar.port, timeout=30) as client:
        client.sendmail("sender@localhost", [address], f"Subject: {subject}\r\n\r\nhello\r\n")
    postfix = readme_sidecar.container(POSTFIX)
    wait_until(
        lambda: any(str(m["Subject"]) == subject for m in maildir_messages(postfix)),
        what=f"mail {subject!r} in the Maildir",
    )


def test_the_readme_postfix_has_the_lines_the_sidecar_prints(
    readme_sidecar: ReadmeSidecar,
) -> None:
    """The README's Postfix got `tempmail postfix-config`'s lines (the guard) as printed."""
    code, printed = readme_sidecar.sidecar_exec(
        ["tempmail", "postfix-config", "--postfix-socket", POSTFIX_SOCKET]
    )
    assert code == 0, printed
    assert "virtual_alias_maps = pipemap:{regexp:" in printed
    shown = readme_sidecar.container(POSTFIX).exec_run(
        ["postconf", "-n", "virtual_alias_domains", "virtual_alias_maps", "recipient_delimiter"]
    )
    assert sorted(shown.output.decode().splitlines()) == sorted(printed.splitlines())


@pytest.mark.timeout(120)
def test_a_config_edited_with_sed_is_served_without_a_signal(
    readme_sidecar: ReadmeSidecar,
) -> None:
    """sed -i on the README's config file: the new recipient is served within 5 s."""
    address = run(["docker", "exec", SIDECAR, "tempmail", "address"]).split()[0]
    assert readme_sidecar.recipient_of(address) == RECIPIENT
    config = readme_sidecar.workdir / "tempmail" / "config" / "config.toml"
    edited = time.monotonic()
    run(["sed", "-i", "s/user@localhost/user+sed@localhost/", str(config)])
    wait_until(
        lambda: readme_sidecar.recipient_of(address) == "user+sed@localhost",
        RELOAD_WITHIN + 5,
        0.1,
        "the edited recipient served",
    )
    took = time.monotonic() - edited
    print(f"\nconfig edited with sed -i served after {took:.2f} s")
    assert took <= RELOAD_WITHIN
    assert "(file; generation" in readme_sidecar.logs()


def test_a_single_file_bind_mount_never_shows_a_replaced_file(docker_images: Images) -> None:
    """Why directories are mounted: after a rename over the file, only the directory mount
    shows the new content; the single-file mount keeps the old inode."""
    workdir = Path(tempfile.mkdtemp(prefix="tempmail-bind-"))
    try:
        (workdir / "dir").mkdir()
        single, in_dir = workdir / "single.toml", workdir / "dir" / "config.toml"
        for path in (single, in_dir):
            path.write_text("old\n")
        container = docker_images.client.containers.run(
            PAUSE_IMAGE,
            ["sleep", "infinity"],
            name=f"tempmail-it-bind-{uuid.uuid4().hex[:8]}",
            network_mode="none",
            read_only=True,
            labels=LABELS,
            detach=True,
            volumes={
                str(single): {"bind": "/mnt/single.toml", "mode": "ro"},
                str(workdir / "dir"): {"bind": "/mnt/dir", "mode": "ro"},
            },
        )
        try:
            for path in (single, in_dir):
                replace_like_an_editor(path, "new\n", 0o644)
            result = container.exec_run(["cat", "/mnt/single.toml", "/mnt/dir/config.toml"])
            assert result.output.decode() == "old\nnew\n"
        finally:
            container.remove(force=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- advice inside the container ----------------------------------------------------------------


def run_sidecar_with(docker_images: Images, config: str | None) -> tuple[int, str]:
    """Run the sidecar image once as the README does, with ``config`` (None: no config mounted)."""
    workdir = Path(tempfile.mkdtemp(prefix="tempmail-advice-"))
    volumes: dict[str, dict[str, str]] = {}
    try:
        if config is not None:
            (workdir / "config").mkdir()
            (workdir / "config" / "config.toml").write_text(config)
            (workdir / "secrets").mkdir()
            replace_like_an_editor(
                workdir / "secrets" / "secret", new_secret() + "\n", 0o400, owner=10001
            )
            volumes = {
                str(workdir / "config"): {"bind": "/etc/tempmail", "mode": "ro"},
                str(workdir / "secrets"): {"bind": "/run/secrets/tempmail", "mode": "ro"},
            }
        container = docker_images.client.containers.create(
            docker_images.sidecar,
            name=f"tempmail-it-advice-{uuid.uuid4().hex[:8]}",
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            labels=LABELS,
            volumes=volumes,
        )
        try:
            container.start()
            status = container.wait(timeout=30)
            return int(status["StatusCode"]), container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


README_CONFIG_WITHOUT_SOCKET = """\
[identities.default]
domain = "example.test"
recipient = "user@localhost"
secret_file = "/run/secrets/tempmail/secret"
"""


def volume_advice(directory: str) -> str:
    """The sidecar's one line for a socket directory that is not there in a container."""
    return (
        f"tempmail: socket.path: the directory {directory} does not exist in this container; "
        f"mount the volume shared with Postfix there (e.g. -v tempmail-socket:{directory}), or "
        "set [socket] path to a file in the directory where it is mounted\n"
    )


@pytest.mark.parametrize(
    ("config", "directory"),
    [
        # The README's config without its required line: the default is a host's path.
        pytest.param(README_CONFIG_WITHOUT_SOCKET, "/var/spool/postfix/tempmail", id="default"),
        pytest.param(
            '[socket]\npath = "/run/tempmail-typo/socket"\n\n' + README_CONFIG_WITHOUT_SOCKET,
            "/run/tempmail-typo",
            id="typo",
        ),
    ],
)
def test_a_socket_directory_missing_in_the_container_gets_volume_advice(
    docker_images: Images, config: str, directory: str
) -> None:
    """Inside the container, a missing socket directory is explained as a missing volume."""
    if os.geteuid() != 0:
        missing_prerequisite("the secret is given to uid 10001 (chown), which needs root")
    code, output = run_sidecar_with(docker_images, config)
    assert (code, output) == (71, volume_advice(directory))


def test_no_config_in_the_container_gets_mount_advice(docker_images: Images) -> None:
    """Without a config mounted, the sidecar says to mount the config directory."""
    code, output = run_sidecar_with(docker_images, None)
    print(f"\n{output.strip()}")
    assert code == 78, output
    assert "tempmail init" not in output
    assert "/etc/tempmail" in output
    assert "mount" in output
