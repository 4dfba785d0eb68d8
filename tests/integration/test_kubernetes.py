"""deploy/kubernetes: valid against the Kubernetes schemas, and the pod works when run as written.

No cluster is available, so the pod is run with docker exactly as the manifest describes it
(see pod.py) and mail is sent to Postfix from inside the pod's network namespace.
"""

from __future__ import annotations

import copy
import functools
import os
import secrets
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from .conftest import REPO, Images, missing_prerequisite
from .pod import Pod, find, load_manifests
from .stack import maildir_messages, wait_until

pytestmark = pytest.mark.containers

MANIFESTS = REPO / "deploy" / "kubernetes"
#: The oldest Kubernetes still supported upstream when this was written, and the newest
#: schema kubernetes-validate ships.
VERSIONS = ("1.30", kubernetes_validate.latest_version())

#: Sent from inside the tempmail container (it has Python): RCPT, then DATA if accepted.
SMTP_SCRIPT = """
import smtplib, sys
port, address, subject = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
    client.ehlo("pod.test")
    client.mail("sender@localhost")
    code, _ = client.rcpt(address)
    print(code)
    if code == 250:
        client.data(f"Subject: {subject}\\r\\n\\r\\nfrom inside the pod\\r\\n")
"""


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    return load_manifests(MANIFESTS)


@pytest.fixture(scope="module")
def pod_spec(documents: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = find(documents, "Deployment", "tempmail")["spec"]["template"]["spec"]
    return spec


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def mount_path(spec: dict[str, Any], volume: str) -> str:
    return str(next(m["mountPath"] for m in spec["volumeMounts"] if m["name"] == volume))


def sidecar_config(documents: list[dict[str, Any]]) -> dict[str, Any]:
    return tomllib.loads(find(documents, "ConfigMap", "tempmail-config")["data"]["config.toml"])


# --- the manifests as files -------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate_against_the_schemas(
    documents: list[dict[str, Any]], version: str
) -> None:
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == ["ConfigMap", "Deployment", "Service"]
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validation_catches_a_typo(documents: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(find(documents, "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_tempmail_container_is_locked_down(pod_spec: dict[str, Any]) -> None:
    sidecar = container(pod_spec, "tempmail")
    assert sidecar["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod_spec["securityContext"]["fsGroup"] == 10001
    for probe in ("startupProbe", "readinessProbe"):
        assert sidecar[probe]["exec"]["command"] == ["tempmail", "query", "--self-test"]
    # Liveness reads no config: a broken config on disk must not get a serving pod killed.
    assert sidecar["livenessProbe"]["exec"]["command"] == [
        "tempmail",
        "query",
        "--ping",
        "--socket",
        "unix:/run/tempmail/socket",
        "--map",
        "tempmail",
    ]
    for each in pod_spec["containers"]:
        assert set(each["resources"]) == {"requests", "limits"}, each["name"]
        assert each["securityContext"]["allowPrivilegeEscalation"] is False
        assert each["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_paths_agree_between_config_and_mounts(
    documents: list[dict[str, Any]], pod_spec: dict[str, Any]
) -> None:
    config = sidecar_config(documents)
    sidecar, postfix = container(pod_spec, "tempmail"), container(pod_spec, "postfix")
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert "emptyDir" in volumes["socket"]
    assert volumes["secret"]["secret"]["secretName"] == "tempmail-secret"
    assert volumes["config"]["configMap"]["name"] == "tempmail-config"
    socket_path = Path(config["socket"]["path"])
    assert str(socket_path.parent) == mount_path(sidecar, "socket")
    env = {e["name"]: e["value"] for e in postfix["env"]}
    assert env["TEMPMAIL_SOCKET"] == f"{mount_path(postfix, 'socket')}/{socket_path.name}"
    secret_file = Path(config["identities"]["default"]["secret_file"])
    assert str(secret_file.parent) == mount_path(sidecar, "secret")
    assert {e["name"]: e["value"] for e in sidecar["env"]}["TEMPMAIL_CONFIG"] == (
        f"{mount_path(sidecar, 'config')}/config.toml"
    )


# --- the pod, run with docker as the manifest says ---------------------------------------------


@pytest.fixture(scope="module")
def pod(
    docker_images: Images, documents: list[dict[str, Any]], pod_spec: dict[str, Any]
) -> Iterator[Pod]:
    if os.geteuid() != 0:
        missing_prerequisite("preparing volumes as the kubelet does (chown to fsGroup) needs root")
    configmaps = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ConfigMap"}
    secret = {"secret": secrets.token_urlsafe(32) + "\n"}
    running = Pod(docker_images.client, pod_spec, {"secret": secret}, configmaps)
    try:
        running.start()
        print(f"\npod ready in {running.wait_ready():.2f} s")
        yield running
    finally:
        running.close()


def smtp_port(pod_spec: dict[str, Any]) -> int:
    return int(next(p["containerPort"] for p in container(pod_spec, "postfix")["ports"]))


def send_from_pod(pod: Pod, port: int, address: str, subject: str) -> int:
    result = pod.exec("tempmail", ["python3", "-c", SMTP_SCRIPT, str(port), address, subject])
    assert result.code == 0, result
    return int(result.stdout)


@pytest.mark.timeout(180)
def test_pod_delivers_mail_for_both_schemes(pod: Pod, pod_spec: dict[str, Any]) -> None:
    port = smtp_port(pod_spec)
    for scheme in ("hmac", "md5"):
        result = pod.exec("tempmail", ["tempmail", "address", "--scheme", scheme])
        assert result.code == 0, result
        today = result.stdout.split()[0]
        subject = f"pod-{scheme}-{secrets.token_hex(6)}"  # ASCII: sent as 7-bit by smtplib
        assert send_from_pod(pod, port, today, subject) == 250
        wait_until(
            functools.partial(delivered, pod, subject), what=f"mail {subject!r} in the Maildir"
        )


def delivered(pod: Pod, subject: str) -> bool:
    return any(m["Subject"] == subject for m in maildir_messages(pod.containers["postfix"]))


def test_pod_refuses_unknown_addresses(pod: Pod, pod_spec: dict[str, Any]) -> None:
    address = f"{secrets.token_hex(4)}@example.test"
    assert send_from_pod(pod, smtp_port(pod_spec), address, "never") == 550


def test_pod_runs_tempmail_unprivileged(pod: Pod) -> None:
    assert pod.exec("tempmail", ["id", "-u"]).stdout == "10001\n"
    result = pod.exec("tempmail", ["touch", "/opt/tempmail/written"])
    assert result.code != 0
    assert "Read-only file system" in result.stderr
    # The socket in the emptyDir: created 0660 by uid 10001, group 10001 from fsGroup.
    socket_dir, _ = pod.volumes["socket"]
    info = (socket_dir / "socket").stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (10001, 10001, 0o660)
