"""deploy/compose as a user runs it: the files agree with the images, and docker-compose runs them.

The first tests read the files (no engine needed). The others run the shipped compose.yaml with
Debian's docker-compose (1.29) and one override file, OVERRIDE, that changes only what this
machine cannot do or what a test must know:

* the Postfix service gets ``network_mode: none`` instead of the project network and
  ``ports: ["25:25"]``. This machine's Docker engine has no bridge network, so neither the
  default network nor a published port can exist here; compose 1.29 cannot drop a ``ports:``
  entry in an override, and refuses host networking with one ("host" network_mode is
  incompatible with port_bindings), while ``none`` keeps it unused. SMTP is therefore spoken
  from inside Postfix's own network namespace, to the port the shipped file gives it;
* the images are the ones this checkout built (the shipped names, unless TEMPMAIL_IMAGE says
  otherwise), and are never built by compose (``--no-build``: the build needs PyPI);
* labels, to find leftovers, and the image's healthcheck every second instead of every 30.

The project directory is a copy of deploy/compose (the secret must not be written into the
checkout), next to a link to container/ so that the build contexts the file names exist.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no stubs installed; only safe_load is used

from helpers import require_tool, wait_until
from tempmail import config as config_module

from .addresses import address_of, wait_past_utc_midnight
from .engine import LABELS_YAML, REPO, Images, compose_copy, missing_prerequisite
from .mailbox import maildir_messages
from .operator_steps import (
    ACCEPTED,
    POSTFIX_SOCKET,
    UNKNOWN,
    SmtpAnswer,
    new_secret,
    postfix_config_for,
    replace_like_an_editor,
    run,
    shutdown_seconds,
    smtp_inside,
    today_address,
    write_secret_directory,
)
from .postfix_container import POSTFIX_SOCKET_DIR
from .sending import unique_subject
from .sidecar import CONFIG_DIR, SECRET_DIR, SIDECAR_SOCKET_DIR, TEMPMAIL_UID

pytestmark = pytest.mark.containers

COMPOSE = REPO / "deploy" / "compose"
#: The Postfix port the shipped compose file gives the example image.
SMTP_PORT = 25
#: How soon a changed file must be served without a signal (issue 10: "within 5 s").
RELOAD_WITHIN = 5.0

OVERRIDE = """\
services:
  tempmail:
    image: {sidecar}
    labels: {labels}
    healthcheck:
      interval: 1s
  postfix:
    image: {postfix}
    network_mode: none
    labels: {labels}
volumes:
  tempmail-socket:
    labels: {labels}
"""


# --- the files ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return dict(data["services"])


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path -> (source, options)."""
    found = {}
    for entry in service["volumes"]:
        source, target, *options = entry.split(":")
        found[target] = (source, options[0] if options else "rw")
    return found


def test_sidecar_is_locked_down(services: dict[str, Any]) -> None:
    """The sidecar service has no network, a read-only root, no capabilities."""
    sidecar = services["tempmail"]
    assert sidecar["network_mode"] == "none"
    assert sidecar["read_only"] is True
    assert sidecar["cap_drop"] == ["ALL"]
    assert sidecar["security_opt"] == ["no-new-privileges:true"]


def test_config_and_secret_are_mounted_as_directories(services: dict[str, Any]) -> None:
    """Config and secret are whole directories, read-only, so a replaced file is seen."""
    sidecar = mounts(services["tempmail"])
    assert sidecar[CONFIG_DIR] == ("./config", "ro")
    assert sidecar[SECRET_DIR] == ("./secrets", "ro")
    assert (COMPOSE / "config").is_dir()
    assert (COMPOSE / "secrets").is_dir()
    # The secret never lands in git: the directory ignores everything but its .gitignore.
    assert (COMPOSE / "secrets" / ".gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]


def test_paths_agree(services: dict[str, Any]) -> None:
    """The config's socket and secret paths are where the compose file mounts them."""
    config = tomllib.loads((COMPOSE / "config" / "config.toml").read_text())
    sidecar, postfix = mounts(services["tempmail"]), mounts(services["postfix"])
    socket_path = Path(config["socket"]["path"])
    assert str(socket_path.parent) == SIDECAR_SOCKET_DIR
    # The same named volume on both sides; Postfix reads through it only.
    assert sidecar[SIDECAR_SOCKET_DIR][0] == postfix[POSTFIX_SOCKET_DIR][0]
    assert postfix[POSTFIX_SOCKET_DIR][1] == "ro"
    assert str(Path(config["identities"]["default"]["secret_file"]).parent) == SECRET_DIR
    assert int(services["postfix"]["environment"]["SMTP_PORT"]) == SMTP_PORT


#: How the compose file's comment tells an operator to print Postfix's lines (and double each
#: '$', which compose reads as '$$' -> '$').
PRINT_ARGS = ["run", "--rm", "-T", "tempmail", "postfix-config", "--postfix-socket", POSTFIX_SOCKET]
DOUBLE_DOLLARS = r"s/\$/$$/g"


def compose_value(text: str) -> str:
    """An environment value of a compose file as the container gets it: compose turns '$$'
    into '$', and would substitute any other '$' (a variable), which the lines must not have."""
    assert "$" not in text.replace("$$", ""), f"compose would substitute a variable in {text!r}"
    return text.replace("$$", "$")


def test_postfix_gets_the_lines_postfix_config_prints(services: dict[str, Any]) -> None:
    """TEMPMAIL_POSTFIX_CONFIG, as compose passes it on, is what `tempmail postfix-config`
    prints for config/config.toml with the socket where Postfix sees it: one source of truth."""
    written = services["postfix"]["environment"]["TEMPMAIL_POSTFIX_CONFIG"]
    printed = postfix_config_for((COMPOSE / "config" / "config.toml").read_text())
    assert compose_value(written) == printed
    assert "virtual_alias_maps = pipemap:{regexp:" in printed  # the guard
    comment = " ".join(["docker compose", *PRINT_ARGS, "|", "sed", f"'{DOUBLE_DOLLARS}'"])
    assert comment in (COMPOSE / "compose.yaml").read_text(), comment


def test_config_loads() -> None:
    """The shipped config.toml loads without warnings (with an inline secret instead)."""
    data = tomllib.loads((COMPOSE / "config" / "config.toml").read_text())
    identity = data["identities"]["default"]
    del identity["secret_file"]
    identity["secret"] = "a secret of at least sixteen bytes"
    loaded = config_module.parse(data, environ={})
    assert loaded.identities[0].recipient == "user@localhost"
    assert not loaded.warnings


# --- docker-compose, for real -------------------------------------------------------------------


@dataclass
class Project:
    """One compose project started from a copy of deploy/compose; see the module docstring."""

    compose: str  # the docker-compose executable
    images: Images
    directory: Path  # the copy of deploy/compose
    name: str
    started_in: float = 0.0

    def __call__(self, *args: str, timeout: float = 120) -> str:
        """Run ``docker-compose ARGS`` for this project in its directory; its output."""
        files = ["-f", "compose.yaml", "-f", "override.yaml"]
        return run(
            [self.compose, "-p", self.name, *files, *args], timeout=timeout, cwd=self.directory
        )

    def container(self, service: str) -> Any:
        """The docker SDK container of ``service`` (found by compose's own labels)."""
        found = self.images.client.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.name}",
                    f"com.docker.compose.service={service}",
                ]
            },
        )
        assert len(found) == 1, f"{service}: {found}"
        return found[0]

    def exec_in(self, service: str) -> Callable[[list[str]], tuple[int, str]]:
        """``execute(argv) -> (exit code, output)`` in the service's container (docker exec)."""

        def execute(command: list[str]) -> tuple[int, str]:
            result = self.container(service).exec_run(command)
            return int(result.exit_code), result.output.decode(errors="replace")

        return execute

    def health(self) -> str:
        """Docker's own health status of the sidecar (from the image's HEALTHCHECK)."""
        container = self.container("tempmail")
        return str(container.attrs["State"]["Health"]["Status"])

    def logs(self) -> str:
        """The sidecar's log (read through the engine: docker-compose logs is slow to poll)."""
        return str(self.container("tempmail").logs().decode(errors="replace"))

    def signal(self, name: str) -> None:
        self.container("tempmail").kill(signal=name)

    def smtp(self, address: str, subject: str = "") -> SmtpAnswer:
        return smtp_inside(self.exec_in("postfix"), SMTP_PORT, address, subject)

    @property
    def config_dir(self) -> Path:
        return self.directory / "config"

    @property
    def secret_file(self) -> Path:
        return self.directory / "secrets" / "secret"

    def identity_table(self) -> dict[str, Any]:
        table: dict[str, Any] = tomllib.loads((self.config_dir / "config.toml").read_text())[
            "identities"
        ]["default"]
        return table


@pytest.fixture(scope="module")
def project(docker_images: Images) -> Iterator[Project]:
    """deploy/compose started with docker-compose up, as its header comment says."""
    compose = require_tool("docker-compose", "docker-compose")
    if os.geteuid() != 0:
        missing_prerequisite("the secret must be given to uid 10001 (chown), which needs root")
    with compose_copy("tempmail-compose-") as directory:
        (directory / "override.yaml").write_text(
            OVERRIDE.format(
                sidecar=docker_images.sidecar, postfix=docker_images.postfix, labels=LABELS_YAML
            )
        )
        write_secret_directory(directory / "secrets", new_secret())
        name = f"tempmail-it-{uuid.uuid4().hex[:8]}"
        started = Project(compose, docker_images, directory, name)
        try:
            t0 = time.monotonic()
            started("up", "-d", "--no-build")
            wait_until(lambda: started.health() == "healthy", 30, 0.1, "the sidecar healthy")
            wait_until(lambda: started.smtp("probe@localhost").rcpt, 30, 0.2, "Postfix's SMTP")
            started.started_in = time.monotonic() - t0
            print(f"\ncompose project up and healthy in {started.started_in:.2f} s")
            yield started
        finally:
            with contextlib.suppress(AssertionError):
                started("down", "--volumes", "--timeout", "10")


@pytest.fixture(autouse=True)
def _not_at_midnight() -> None:
    """Addresses computed here and in the sidecar must belong to the same day."""
    wait_past_utc_midnight(margin=60)


@pytest.mark.timeout(180)
def test_compose_up_serves_and_delivers(project: Project) -> None:
    """The compose project comes up healthy; today's address is delivered, others get 550."""
    assert project.health() == "healthy"
    printed = project("exec", "-T", "tempmail", "tempmail", "address")  # as the docs say
    address = printed.split()[0]
    assert address.endswith("@example.test"), printed
    subject = unique_subject("compose")
    answer = project.smtp(address, subject)
    assert (answer.rcpt, answer.data) == (ACCEPTED, ACCEPTED), answer.text
    wait_until(
        lambda: any(
            m["Subject"] == subject for m in maildir_messages(project.container("postfix"))
        ),
        what=f"mail {subject!r} in the Maildir",
    )
    assert project.smtp(f"{uuid.uuid4().hex[:8]}@example.test").rcpt == UNKNOWN


@pytest.mark.timeout(120)
def test_a_secret_replaced_like_an_editor_does_is_served_without_a_signal(
    project: Project,
) -> None:
    """A secret file renamed over the old one is served within 5 s, with no signal sent."""
    table = project.identity_table()
    old_address = today_address(project.exec_in("tempmail"))
    secret = new_secret()
    new_address = address_of(table, secret)
    changed = time.monotonic()
    replace_like_an_editor(project.secret_file, secret + "\n", 0o400, owner=TEMPMAIL_UID)
    wait_until(
        lambda: project.smtp(new_address).rcpt == ACCEPTED,
        RELOAD_WITHIN + 5,
        0.1,
        "the new secret served",
    )
    took = time.monotonic() - changed
    print(f"\nreplaced secret served after {took:.2f} s")
    assert took <= RELOAD_WITHIN
    assert project.smtp(old_address).rcpt == UNKNOWN
    assert "(file; generation" in project.logs()


def recipient_of(project: Project, address: str) -> str:
    """What ``tempmail query ADDRESS`` prints inside the sidecar (its exit code must be 0)."""
    code, output = project.exec_in("tempmail")(["tempmail", "query", address])
    assert code == 0, output
    return output.strip()


def last_reload(project: Project) -> str:
    return [line for line in project.logs().splitlines() if "configuration reloaded" in line][-1]


@pytest.mark.timeout(120)
def test_hup_reloads_a_replaced_config(project: Project) -> None:
    """docker-compose kill -s HUP reloads a config file that was replaced by a rename."""
    config = project.config_dir / "config.toml"
    shipped = config.read_text()
    address = today_address(project.exec_in("tempmail"))
    # Watching off first, so that the change after it can only be applied by the signal.
    quiet = shipped.replace("[server]\n", "[server]\nreload_on_change = false\n", 1)
    moved = quiet.replace('recipient = "user@localhost"', 'recipient = "user+hup@localhost"')
    assert shipped != quiet != moved
    replace_like_an_editor(config, quiet, 0o644)
    signalled = project.logs().count("(signal; generation")
    project("kill", "-s", "HUP", "tempmail")  # as the docs say
    wait_until(
        lambda: project.logs().count("(signal; generation") > signalled, 10, 0.1, "HUP reload"
    )
    replace_like_an_editor(config, moved, 0o644)
    time.sleep(RELOAD_WITHIN + 1)  # nothing but the signal may apply it now
    assert recipient_of(project, address) == "user@localhost"
    project.signal("SIGHUP")
    wait_until(
        lambda: recipient_of(project, address) == "user+hup@localhost",
        10,
        0.1,
        "the HUP reload of the new recipient",
    )
    assert "(signal; generation" in last_reload(project)
    replace_like_an_editor(config, shipped, 0o644)  # as shipped again, watching on
    project.signal("SIGHUP")
    wait_until(lambda: recipient_of(project, address) == "user@localhost", 10, 0.1, "reset")


def docker_time(stamp: str) -> float:
    """Seconds since the epoch of one of docker's RFC 3339 UTC times (nanoseconds, Z)."""
    whole, _, fraction = stamp.removesuffix("Z").partition(".")
    parsed = dt.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    return parsed.timestamp() + float(f"0.{fraction or 0}")


def health_checks_since(project: Project, since: float) -> list[dict[str, Any]]:
    """Docker's record of the healthchecks that started after ``since`` (epoch seconds)."""
    health = project.container("tempmail").attrs["State"]["Health"]
    return [check for check in health["Log"] if docker_time(check["Start"]) > since]


@pytest.mark.timeout(120)
def test_a_broken_config_file_leaves_the_sidecar_healthy(project: Project) -> None:
    """A broken config on disk: refused and logged, and docker's health status stays healthy."""
    config = project.config_dir / "config.toml"
    shipped = config.read_text()
    refused = "still serving the previous configuration"
    seen = project.logs().count(refused)
    broken_at = time.time()
    replace_like_an_editor(config, shipped + "\nthis line is not TOML\n", 0o644)
    try:
        wait_until(lambda: project.logs().count(refused) > seen, 15, 0.1, "the refused reload")
        line = [line for line in project.logs().splitlines() if refused in line][-1]
        assert "/etc/tempmail/config.toml: invalid TOML" in line, line
        # Three failed checks in a row would make it unhealthy (the image's --retries=3).
        wait_until(
            lambda: len(health_checks_since(project, broken_at)) >= 4,
            30,
            0.2,
            "four healthchecks after the break",
        )
        checks = health_checks_since(project, broken_at)
        assert [c["ExitCode"] for c in checks] == [0] * len(checks), checks
        assert all("@" not in c["Output"] for c in checks), checks  # never an address
        assert project.health() == "healthy"
    finally:
        replace_like_an_editor(config, shipped, 0o644)
    address = today_address(project.exec_in("tempmail"))
    assert project.smtp(address).rcpt == ACCEPTED


def test_the_running_postfix_has_the_lines_printed_in_the_project(project: Project) -> None:
    """The comment's command, run in the project, prints what the file holds; the Postfix
    container got them as printed, and its main.cf has them."""
    printed = project(*PRINT_ARGS)
    written = yaml.safe_load((project.directory / "compose.yaml").read_text())["services"][
        "postfix"
    ]["environment"]["TEMPMAIL_POSTFIX_CONFIG"]
    assert run(["sed", DOUBLE_DOLLARS], stdin=printed) == written
    environment = project.container("postfix").attrs["Config"]["Env"]
    assert f"TEMPMAIL_POSTFIX_CONFIG={printed}" in environment
    code, shown = project.exec_in("postfix")(
        ["postconf", "-n", "virtual_alias_domains", "virtual_alias_maps", "recipient_delimiter"]
    )
    assert (code, sorted(shown.splitlines())) == (0, sorted(printed.splitlines()))


@pytest.mark.timeout(120)
def test_compose_stop_removes_the_socket_and_exits_0(project: Project) -> None:
    """docker-compose stop: the sidecar shuts down in under a second, exits 0, leaves no socket."""
    t0 = time.monotonic()
    project("stop", "--timeout", "10", "tempmail")
    took = time.monotonic() - t0
    sidecar = project.container("tempmail")
    assert sidecar.attrs["State"]["ExitCode"] == 0
    shutdown = shutdown_seconds(project.logs())
    code, _ = project.exec_in("postfix")(["test", "-e", f"{POSTFIX_SOCKET_DIR}/socket"])
    assert code == 1
    assert project.smtp("anything@example.test").rcpt == 451
    print(f"\ndocker-compose stop took {took:.2f} s; the sidecar's shutdown {shutdown:.3f} s")
    assert shutdown < 1
    project("start", "tempmail")
    wait_until(lambda: project.health() == "healthy", 30, 0.1, "healthy again")
