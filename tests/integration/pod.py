"""Run a Deployment's pod with plain docker, as a kubelet would, for a test without a cluster.

What is reproduced from the manifest: images, command/args, env (a ``value`` expanded as the
kubelet expands it, where ``$$`` becomes ``$`` and ``$(NAME)`` an earlier variable; a
``valueFrom.configMapKeyRef`` as the ConfigMap has it, unexpanded), runAsUser/runAsGroup,
fsGroup and supplementalGroups, readOnlyRootFilesystem, capabilities,
allowPrivilegeEscalation, volume mounts at the same paths (read-only where Kubernetes makes
them so), memory and CPU limits, and exec/tcpSocket probes. As in a pod, the containers share
one network namespace, held by a sleeping "pause" container, and reach each other on
127.0.0.1; nothing is reachable from outside.

Volumes are host directories prepared the way the kubelet prepares them: an emptyDir is
0777 plus fsGroup (group and setgid bit). configMap and secret volumes have the kubelet's
atomic-writer layout: the files are in a timestamped directory (``..2026_11_29_09_30_00.N``),
``..data`` is a symlink to it, and each visible name is a symlink through ``..data``. The files
are owned by root, group fsGroup, mode defaultMode with group read added. An update
(:meth:`Pod.update_volume`) writes a new timestamped directory, points ``..data_tmp`` at it and
renames that over ``..data`` (one atomic switch of every file at once), then removes the old
directory, as the kubelet does when a ConfigMap or Secret changes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import docker
import docker.errors
import yaml  # type: ignore[import-untyped]  # no stubs installed; only safe_load_all is used

from .engine import LABELS

#: The pod sandbox: any local image with a sleep will do; this one is always there.
PAUSE_IMAGE = "debian:bookworm-slim"


def load_manifests(directory: Path) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return documents


def find(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    for document in documents:
        if document["kind"] == kind and (name is None or document["metadata"]["name"] == name):
            return document
    raise LookupError(f"no {kind} {name or ''} in the manifests")


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * units.get(unit, 1)


def nano_cpus(quantity: str | int) -> int:
    text = str(quantity)
    if text.endswith("m"):
        return int(text[:-1]) * 10**6
    return int(float(text) * 10**9)


#: What the kubelet replaces in an env value: ``$$``, or a reference ``$(NAME)``.
_REFERENCE = re.compile(r"\$(\$|\(([^)]*)\))")


def expand(value: str, defined: dict[str, str]) -> str:
    """An env ``value`` as the kubelet passes it on (k8s.io/kubernetes third_party/forked/
    golang/expansion): ``$$`` is one ``$``; ``$(NAME)`` is NAME's value if an earlier variable
    of the container defines it, else left as written; any other ``$`` stays."""

    def replace(match: re.Match[str]) -> str:
        if match[1] == "$":
            return "$"
        return defined.get(match[2], match[0])

    return _REFERENCE.sub(replace, value)


def container_environment(
    container: dict[str, Any], configmaps: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """A container's environment variables as the kubelet sets them (see the module)."""
    found: dict[str, str] = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            reference = entry["valueFrom"]["configMapKeyRef"]  # the only source used here
            value = str(configmaps[reference["name"]]["data"][reference["key"]])
        else:
            value = expand(str(entry.get("value", "")), found)
        found[entry["name"]] = value
    return found


class Output(NamedTuple):
    code: int
    stdout: str
    stderr: str


@dataclass
class Pod:
    """The running pod: its containers by name, and the host directories of its volumes."""

    client: docker.DockerClient
    spec: dict[str, Any]
    files: dict[str, dict[str, str]]  # volume name -> file name -> content (Secrets)
    configmaps: dict[str, dict[str, Any]]
    name: str = field(default_factory=lambda: f"tempmail-it-pod-{uuid.uuid4().hex[:8]}")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tempmail-pod-")))
    volumes: dict[str, tuple[Path, bool]] = field(default_factory=dict)  # path, read-only
    modes: dict[str, int] = field(default_factory=dict)  # configMap/secret file modes
    containers: dict[str, Any] = field(default_factory=dict)
    pause: Any = None

    @property
    def fs_group(self) -> int | None:
        group = self.spec.get("securityContext", {}).get("fsGroup")
        return None if group is None else int(group)

    def start(self) -> Pod:
        for volume in self.spec.get("volumes", []):
            self._prepare_volume(volume)
        self.pause = self.client.containers.run(
            PAUSE_IMAGE,
            ["sleep", "infinity"],
            name=f"{self.name}-pause",
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            labels=LABELS,
            detach=True,
        )
        for container in self.spec["containers"]:
            self.containers[container["name"]] = self._run(container)
        return self

    def close(self) -> None:
        for container in [*self.containers.values(), self.pause]:
            if container is not None:
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- volumes -----------------------------------------------------------------------------

    def _prepare_volume(self, volume: dict[str, Any]) -> None:
        path = self.workdir / volume["name"]
        path.mkdir()
        group = self.fs_group if self.fs_group is not None else -1
        if "emptyDir" in volume:
            path.chmod(0o777)
            if self.fs_group is not None:
                os.chown(path, -1, group)
                path.chmod(0o777 | stat.S_ISGID)
            self.volumes[volume["name"]] = (path, False)
            return
        if "configMap" in volume:
            source = volume["configMap"]
            data = self.configmaps[source["name"]]["data"]
            mode = source.get("defaultMode", 0o644)
        elif "secret" in volume:
            source = volume["secret"]
            data = self.files[volume["name"]]
            mode = source.get("defaultMode", 0o644)
        else:
            raise NotImplementedError(f"volume type of {volume}")
        if self.fs_group is not None:
            mode |= 0o440  # the kubelet adds group read for fsGroup
        self.modes[volume["name"]] = mode
        path.chmod(0o755)
        self.volumes[volume["name"]] = (path, True)  # configMap and secret: always read-only
        self.update_volume(volume["name"], data)

    def update_volume(self, name: str, data: dict[str, str]) -> None:
        """Give a configMap or secret volume new contents, atomically, as the kubelet does."""
        path, _ = self.volumes[name]
        group = self.fs_group if self.fs_group is not None else -1
        stamp = dt.datetime.now(dt.UTC).strftime("..%Y_%m_%d_%H_%M_%S.")
        version = Path(tempfile.mkdtemp(prefix=stamp, dir=path))
        version.chmod(0o755)
        for key, content in data.items():
            target = version / key
            target.write_text(content)
            os.chown(target, 0, group)
            target.chmod(self.modes[name])
        data_link = path / "..data"
        previous = data_link.readlink() if data_link.is_symlink() else None
        temporary = path / "..data_tmp"
        temporary.symlink_to(version.name)
        temporary.replace(data_link)  # rename(2): every name switches at once
        for key in data:
            visible = path / key
            if not visible.is_symlink():
                visible.symlink_to(Path("..data") / key)
        for old in path.iterdir():
            if not old.name.startswith("..") and old.name not in data:
                old.unlink()  # a key the update removed
        if previous is not None:
            shutil.rmtree(path / previous)

    # --- containers --------------------------------------------------------------------------

    def _run(self, container: dict[str, Any]) -> Any:
        self.client.images.get(container["image"])  # never pull: ImageNotFound instead
        security = container.get("securityContext", {})
        pod_security = self.spec.get("securityContext", {})
        kwargs: dict[str, Any] = {
            "name": f"{self.name}-{container['name']}",
            "network_mode": f"container:{self.pause.id}",
            "environment": container_environment(container, self.configmaps),
            "read_only": bool(security.get("readOnlyRootFilesystem", False)),
            "cap_drop": security.get("capabilities", {}).get("drop"),
            "cap_add": security.get("capabilities", {}).get("add"),
            "volumes": {
                str(self.volumes[m["name"]][0]): {
                    "bind": m["mountPath"],
                    "mode": "ro" if m.get("readOnly") or self.volumes[m["name"]][1] else "rw",
                }
                for m in container.get("volumeMounts", [])
            },
            "labels": LABELS,
            "detach": True,
        }
        if "command" in container:
            kwargs["entrypoint"] = container["command"]
        if "args" in container:
            kwargs["command"] = container["args"]
        user = security.get("runAsUser", pod_security.get("runAsUser"))
        group = security.get("runAsGroup", pod_security.get("runAsGroup"))
        if user is not None:
            kwargs["user"] = f"{user}:{group}" if group is not None else str(user)
        groups = [*pod_security.get("supplementalGroups", [])]
        if self.fs_group is not None:
            groups.append(self.fs_group)
        if groups:
            kwargs["group_add"] = [str(g) for g in groups]
        if security.get("allowPrivilegeEscalation") is False:
            kwargs["security_opt"] = ["no-new-privileges"]
        limits = container.get("resources", {}).get("limits", {})
        if "memory" in limits:
            kwargs["mem_limit"] = memory_bytes(limits["memory"])
        if "cpu" in limits:
            kwargs["nano_cpus"] = nano_cpus(limits["cpu"])
        return self.client.containers.run(container["image"], **kwargs)

    # --- probes and access -------------------------------------------------------------------

    def exec(self, container: str, command: list[str]) -> Output:
        result = self.containers[container].exec_run(command, demux=True)
        stdout, stderr = (part.decode(errors="replace") if part else "" for part in result.output)
        return Output(result.exit_code, stdout, stderr)

    def probe(self, container: str, kind: str) -> bool:
        """Run the container's probe of ``kind`` (readinessProbe, ...) once, as the kubelet."""
        spec = next(c for c in self.spec["containers"] if c["name"] == container)
        probe = spec[kind]
        if "exec" in probe:
            return self.exec(container, probe["exec"]["command"]).code == 0
        if "tcpSocket" in probe:
            port = probe["tcpSocket"]["port"]
            if isinstance(port, str):  # a named port
                port = next(p["containerPort"] for p in spec["ports"] if p["name"] == port)
            # From inside the pod's network namespace, as the kubelet's dial does.
            script = f"exec 3<>/dev/tcp/127.0.0.1/{int(port)}"
            return bool(self.pause.exec_run(["bash", "-c", script]).exit_code == 0)
        raise NotImplementedError(f"probe {probe}")

    def wait_ready(self, timeout: float = 60) -> float:
        """Until every container's startup and readiness probes pass; the seconds it took."""
        t0 = time.monotonic()
        pending = [
            (c["name"], kind)
            for c in self.spec["containers"]
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if kind in c
        ]
        while pending:
            pending = [(name, kind) for name, kind in pending if not self.probe(name, kind)]
            if pending and time.monotonic() - t0 > timeout:
                logs = {
                    n: c.logs().decode(errors="replace")[-2000:] for n, c in self.containers.items()
                }
                raise TimeoutError(
                    f"probes still failing after {timeout} s: {pending}; logs: {logs}"
                )
            if pending:
                time.sleep(0.2)
        return time.monotonic() - t0
