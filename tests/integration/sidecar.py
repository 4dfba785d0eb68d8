"""The tempmail sidecar of a stack: its files on the host, its container, and its commands.

The container runs as the image says (uid 10001) with a read-only root filesystem, no
capabilities and no network. Its config and its secrets are host directories mounted whole
(read-only), as the README tells an operator to mount them, so that a file replaced by a
rename is seen inside; the socket is in a named volume that the stack shares with Postfix.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

# testcontainers would otherwise start its reaper (Ryuk), an image from a registry.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker.errors
import tomli_w
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from helpers import wait_until

from .addresses import address_of, wait_past_midnight, zone_of
from .engine import LABELS

#: The sidecar image's fixed uid/gid (container/Containerfile).
TEMPMAIL_UID = 10001
#: Where the sidecar sees the shared socket volume.
SIDECAR_SOCKET_DIR = "/run/tempmail"
#: The config and secret mounts of the sidecar (directories, so a rewrite is seen at once).
CONFIG_DIR = "/etc/tempmail"
SECRET_DIR = "/run/secrets/tempmail"
#: The permanent recipient in the example Postfix image, and the temporary domain.
RECIPIENT = "user@localhost"
DOMAIN = "example.test"
#: The name of the secret file every stack has (the identity's secret_file).
SECRET_NAME = "secret"


def base_identity(**changes: Any) -> dict[str, Any]:
    """The identity used by the tests (md5, today and yesterday); keywords override keys."""
    identity: dict[str, Any] = {
        "domain": DOMAIN,
        "recipient": RECIPIENT,
        "secret_file": f"{SECRET_DIR}/{SECRET_NAME}",
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


def log_time(line: str) -> float:
    """The UTC timestamp that starts a tempmail log line, as seconds since the epoch."""
    stamp = line.split(" ", 1)[0]
    parsed = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def log_lines(text: str, needle: str) -> list[str]:
    """The lines of a log that contain ``needle``, in order."""
    return [line for line in text.splitlines() if needle in line]


class Sidecar:
    """One tempmail container and the host directories mounted into it.

    ``extra_secrets`` names more secret files to write into the secret directory before the
    start (name -> text), besides ``secret``, the one :func:`base_identity` names (random).
    Write files, then :meth:`start`; :meth:`close` removes the container and the files.
    """

    def __init__(
        self,
        client: Any,
        image: str,
        name: str,
        volume: str,
        config: dict[str, Any],
        *,
        extra_secrets: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.image = image
        self.name = name
        self.volume = volume
        self.config: dict[str, Any] = copy.deepcopy(config)
        self.secrets: dict[str, str] = {
            SECRET_NAME: secrets.token_urlsafe(32),
            **(extra_secrets or {}),
        }
        self.workdir = Path(tempfile.mkdtemp(prefix="tempmail-it-"))
        self.config_dir = self.workdir / "etc"
        self.secret_dir = self.workdir / "secret"
        self._container: DockerContainer | None = None

    @property
    def secret(self) -> str:
        """The text of the secret file the default identity uses."""
        return self.secrets[SECRET_NAME]

    # --- files on the host ----------------------------------------------------------------------

    def write_files(self) -> None:
        """The config and secret directories as an operator makes them (see the module)."""
        self.config_dir.mkdir(mode=0o755)
        self.secret_dir.mkdir(mode=0o755)
        if os.geteuid() != 0:
            # A developer in the docker group: a file cannot be given to uid 10001, so it must
            # be readable by others, which the sidecar refuses unless told otherwise.
            self.config.setdefault("server", {})["secret_permissions"] = "any"
        for name, value in self.secrets.items():
            self.write_secret(name, value)
        self.write_config(self.config)

    def write_config(self, data: dict[str, Any]) -> None:
        """Replace the config file by a rename (the sidecar notices it; SIGHUP applies it now)."""
        self.config = copy.deepcopy(data)
        self._replace(self.config_dir / "config.toml", tomli_w.dumps(data), 0o644)

    def write_private_config(self, data: dict[str, Any]) -> None:
        """Like :meth:`write_config`, readable by the sidecar's uid only (inline secrets)."""
        self.config = copy.deepcopy(data)
        self._replace(self.config_dir / "config.toml", tomli_w.dumps(data), 0o600, private=True)

    def write_raw_config(self, text: str) -> None:
        """Replace the config file with ``text`` as it is (broken on purpose)."""
        self._replace(self.config_dir / "config.toml", text, 0o644)

    def write_secret(self, name: str, value: str) -> str:
        """Put a secret file into the secret directory; its path inside the sidecar."""
        self.secrets[name] = value
        self._replace(self.secret_dir / name, value + "\n", 0o400, private=True)
        return f"{SECRET_DIR}/{name}"

    def _replace(self, path: Path, text: str, mode: int, *, private: bool = False) -> None:
        temporary = path.with_name(f".{path.name}.new")
        temporary.write_text(text, encoding="utf-8")
        try:
            if private:  # as an operator does it: the sidecar's uid only
                os.chown(temporary, TEMPMAIL_UID, TEMPMAIL_UID)
            temporary.chmod(mode)
        except PermissionError:  # not root: the config allows secret_permissions = "any"
            temporary.chmod(mode | 0o444)
        temporary.replace(path)

    # --- addresses ------------------------------------------------------------------------------

    def address(
        self,
        days_ago: int = 0,
        *,
        scheme: str | None = None,
        tag: str | None = None,
        identity: str = "default",
    ) -> str:
        """The address of ``identity`` on the local day ``days_ago`` days before today.

        Computed on the host by tempmail itself, from the config as written and the secret
        file it names; never across a local midnight (it waits when one is 30 s away).
        """
        table = self.config["identities"][identity]
        if "secret_file" in table:
            secret = self.secrets[PurePosixPath(table["secret_file"]).name]
        else:
            secret = table["secret"]
        wait_past_midnight(30, zone_of(table))
        return address_of(table, secret, days_ago, scheme=scheme, tag=tag)

    # --- the container ----------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """Create and start the container; or start it again after a stop or a kill, and wait
        until it passes its self-test."""
        if self._container is None:
            self._container = self._create()
            self._container.start()  # returns once the server logs "listening on"
            return
        self._container.get_wrapped_container().start()
        self.wait_ready(timeout)

    def _create(self) -> DockerContainer:
        return (
            DockerContainer(self.image)
            .with_name(self.name)
            .with_kwargs(
                network_mode="none",
                read_only=True,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                labels=LABELS,
                # The image's HEALTHCHECK command, checked every 2 s instead of 30 s.
                healthcheck={"interval": 2 * 10**9},
            )
            .with_volume_mapping(self.volume, SIDECAR_SOCKET_DIR, "rw")
            .with_volume_mapping(str(self.config_dir), CONFIG_DIR, "ro")
            .with_volume_mapping(str(self.secret_dir), SECRET_DIR, "ro")
            .waiting_for(LogMessageWaitStrategy("listening on").with_poll_interval(0.05))
        )

    def close(self) -> None:
        """Remove the container (if any) and the host directories."""
        if self._container is not None:
            with contextlib.suppress(docker.errors.APIError):
                self._container.stop()  # removes the container
        shutil.rmtree(self.workdir, ignore_errors=True)

    def docker(self) -> Any:
        """The docker SDK container object, reloaded: its state is the engine's now."""
        assert self._container is not None, f"{self.name} is not started"
        container = self._container.get_wrapped_container()
        container.reload()
        return container

    def running(self) -> bool:
        return bool(self.docker().status == "running")

    def stop(self, timeout: int = 10) -> float:
        """docker stop (SIGTERM, then SIGKILL after ``timeout``); the seconds it took."""
        container = self.docker()
        started = time.monotonic()
        container.stop(timeout=timeout)
        return time.monotonic() - started

    def kill(self, signal: str = "SIGKILL") -> None:
        """Send ``signal`` (SIGKILL leaves a stale socket behind; SIGHUP reloads)."""
        self.docker().kill(signal=signal)

    def ensure_running(self) -> None:
        """Start it again if a test stopped it."""
        if not self.running():
            self.start()

    def wait_ready(self, timeout: float = 30) -> None:
        """Until ``tempmail query --self-test`` succeeds inside it (as its healthcheck)."""
        wait_until(self.healthy, timeout, 0.1, f"{self.name}: self-test")

    def healthy(self) -> bool:
        try:
            exit_code, _ = self.exec(["tempmail", "query", "--self-test"])
        except docker.errors.APIError:  # not running (yet)
            return False
        return exit_code == 0

    def exec(self, command: list[str]) -> tuple[int, str]:
        """Run ``command`` in the running container; its exit code and output."""
        result = self.docker().exec_run(command)
        return int(result.exit_code), result.output.decode(errors="replace")

    def logs(self) -> str:
        return str(self.docker().logs().decode(errors="replace"))

    def reload_and_wait(self, expect: str = "configuration reloaded") -> str:
        """SIGHUP it and wait for the next log line containing ``expect``; return that line."""
        seen = len(log_lines(self.logs(), expect))
        self.kill("SIGHUP")
        lines = wait_until(lambda: log_lines(self.logs(), expect)[seen:], 20, 0.1, expect)
        return lines[0]

    # --- the image, once ------------------------------------------------------------------------

    def run_once(
        self,
        command: list[str],
        *,
        config: dict[str, Any] | None = None,
        socket_dir: Path | None = None,
        share_volume: bool = True,
        timeout: float = 30,
    ) -> tuple[int, str]:
        """Run the image once with this sidecar's flags and mounts; its exit code and output.

        ``config`` replaces the config for this run only (a directory of its own is mounted);
        ``socket_dir`` (a host directory) is mounted where the socket volume would be;
        ``share_volume=False`` mounts no socket volume at all (a command that needs none, so
        that the shared volume is first mounted by whoever the test says). The container must
        end within ``timeout`` seconds.
        """
        once = Path(tempfile.mkdtemp(prefix="tempmail-it-once-"))
        once.chmod(0o755)
        try:
            config_dir = self.config_dir
            if config is not None:
                (once / "config.toml").write_text(tomli_w.dumps(config), encoding="utf-8")
                (once / "config.toml").chmod(0o644)
                config_dir = once
            volumes = {
                str(config_dir): {"bind": CONFIG_DIR, "mode": "ro"},
                str(self.secret_dir): {"bind": SECRET_DIR, "mode": "ro"},
            }
            if socket_dir is not None:
                volumes[str(socket_dir)] = {"bind": SIDECAR_SOCKET_DIR, "mode": "rw"}
            elif share_volume:
                volumes[self.volume] = {"bind": SIDECAR_SOCKET_DIR, "mode": "rw"}
            return run_container(
                self.client,
                self.image,
                command,
                timeout=timeout,
                network_mode="none",
                read_only=True,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                volumes=volumes,
            )
        finally:
            shutil.rmtree(once, ignore_errors=True)

    def postfix_config(self, postfix_socket: str) -> str:
        """What ``tempmail postfix-config --postfix-socket PATH`` prints in the image, as an
        operator runs it next to the sidecar (its config and secret mounts, no socket)."""
        code, output = self.run_once(
            ["postfix-config", "--postfix-socket", postfix_socket], share_volume=False
        )
        assert code == 0, f"tempmail postfix-config in the sidecar image: exit {code}: {output}"
        return output


def run_container(
    client: Any, image: str, command: list[str] | None, *, timeout: float = 30, **options: Any
) -> tuple[int, str]:
    """Create, start and wait for a container; its exit code and output (then removed).

    ``command`` None runs the image's own; ``options`` go to the engine as they are (docker
    SDK ``containers.create``); the labels are always the tests' own.
    """
    container = client.containers.create(image, command, labels=LABELS, **options)
    try:
        container.start()
        try:
            status = container.wait(timeout=timeout)
        except Exception:  # noqa: BLE001 - requests' timeouts, whatever the engine says
            container.kill()
            logs = container.logs().decode(errors="replace")
            raise AssertionError(
                f"{image} {command} did not exit within {timeout} s:\n{logs}"
            ) from None
        return int(status["StatusCode"]), container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
