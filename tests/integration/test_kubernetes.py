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
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import kubernetes_validate
import pytest

from helpers import wait_until
from tempmail.client import Client
from tempmail.socketmap import Status

from .addresses import address_of, wait_past_utc_midnight
from .engine import REPO, Images, missing_prerequisite
from .mailbox import maildir_messages
from .operator_steps import postfix_config_for
from .pod import Pod, container_environment, find, load_manifests

pytestmark = pytest.mark.containers

MANIFESTS = REPO / "deploy" / "kubernetes"
#: The oldest Kubernetes still supported upstream when this was written, and the newest
#: schema kubernetes-validate ships.
VERSIONS = ("1.30", kubernetes_validate.latest_version())
#: The ConfigMap's map name, and how soon a swapped volume must be served (issue 10: 5 s).
MAP_NAME = "tempmail"
RELOAD_WITHIN = 5.0

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
    # No probe reads the config: a broken file on disk must not fail a serving pod.
    server = ["--socket", "unix:/run/tempmail/socket", "--map", "tempmail"]
    for probe in ("startupProbe", "readinessProbe"):
        assert sidecar[probe]["exec"]["command"] == ["tempmail", "query", "--self-test", *server]
    assert sidecar["livenessProbe"]["exec"]["command"] == ["tempmail", "query", "--ping", *server]
    for each in pod_spec["containers"]:
        assert set(each["resources"]) == {"requests", "limits"}, each["name"]
        assert each["securityContext"]["allowPrivilegeEscalation"] is False
        assert each["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_paths_agree_between_config_and_mounts(
    documents: list[dict[str, Any]], pod_spec: dict[str, Any]
) -> None:
    config = sidecar_config(documents)
    sidecar = container(pod_spec, "tempmail")
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert "emptyDir" in volumes["socket"]
    assert volumes["secret"]["secret"]["secretName"] == "tempmail-secret"
    assert volumes["config"]["configMap"]["name"] == "tempmail-config"
    socket_path = Path(config["socket"]["path"])
    assert str(socket_path.parent) == mount_path(sidecar, "socket")
    secret_file = Path(config["identities"]["default"]["secret_file"])
    assert str(secret_file.parent) == mount_path(sidecar, "secret")
    assert {e["name"]: e["value"] for e in sidecar["env"]}["TEMPMAIL_CONFIG"] == (
        f"{mount_path(sidecar, 'config')}/config.toml"
    )
    # The probes name the server themselves (they read no config): the config's socket and map.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = sidecar[probe]["exec"]["command"]
        assert command[command.index("--socket") + 1] == f"unix:{socket_path}"
        assert command[command.index("--map") + 1] == config["server"]["map_name"]


def test_postfix_gets_the_lines_postfix_config_prints(
    documents: list[dict[str, Any]], pod_spec: dict[str, Any]
) -> None:
    """The ConfigMap's postfix.cf is what `tempmail postfix-config` prints for its config.toml,
    with the socket where the postfix container mounts the emptyDir: one source of truth. The
    postfix container reads it unchanged (valueFrom); no env "value:" holds a '$', which
    Kubernetes would expand."""
    data = find(documents, "ConfigMap", "tempmail-config")["data"]
    postfix = container(pod_spec, "postfix")
    socket_name = Path(sidecar_config(documents)["socket"]["path"]).name
    printed = postfix_config_for(
        data["config.toml"], f"{mount_path(postfix, 'socket')}/{socket_name}"
    )
    assert data["postfix.cf"] == printed
    assert "virtual_alias_maps = pipemap:{regexp:" in printed  # the guard
    env = {e["name"]: e for e in postfix["env"]}
    assert env["TEMPMAIL_POSTFIX_CONFIG"]["valueFrom"] == {
        "configMapKeyRef": {"name": "tempmail-config", "key": "postfix.cf"}
    }
    values = [
        e["value"] for each in pod_spec["containers"] for e in each.get("env", []) if "value" in e
    ]
    assert [value for value in values if "$" in value] == []


def test_a_dollar_in_an_env_value_would_be_halved(pod_spec: dict[str, Any]) -> None:
    """Why postfix.cf comes through valueFrom: the kubelet's expansion, as pod.py does it,
    turns the guard's '$$' into '$' in a "value:"."""
    postfix = copy.deepcopy(container(pod_spec, "postfix"))
    postfix["env"] = [{"name": "TEMPMAIL_POSTFIX_CONFIG", "value": "a$$/ $${1}"}]
    assert container_environment(postfix, {}) == {"TEMPMAIL_POSTFIX_CONFIG": "a$/ ${1}"}


# --- the pod, run with docker as the manifest says ---------------------------------------------


@pytest.fixture(scope="module")
def pod(
    docker_images: Images, documents: list[dict[str, Any]], pod_spec: dict[str, Any]
) -> Iterator[Pod]:
    if os.geteuid() != 0:
        missing_prerequisite("preparing volumes as the kubelet does (chown to fsGroup) needs root")
    configmaps = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ConfigMap"}
    first = secrets.token_urlsafe(32) + "\n"
    # As the ConfigMap's comment says: the previous secret is the current one at first.
    secret = {"secret": first, "previous": first}
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


def test_postfix_in_the_pod_has_the_lines_the_sidecar_prints(pod: Pod) -> None:
    """`tempmail postfix-config` in the running pod prints what the postfix container got in
    its environment, and its main.cf has exactly those lines."""
    printed = pod.exec(
        "tempmail",
        ["tempmail", "postfix-config", "--postfix-socket", "/var/spool/postfix/tempmail/socket"],
    )
    assert (printed.code, printed.stderr) == (0, ""), printed
    environment = pod.containers["postfix"].attrs["Config"]["Env"]
    assert f"TEMPMAIL_POSTFIX_CONFIG={printed.stdout}" in environment
    shown = pod.exec(
        "postfix",
        ["postconf", "-n", "virtual_alias_domains", "virtual_alias_maps", "recipient_delimiter"],
    )
    assert sorted(shown.stdout.splitlines()) == sorted(printed.stdout.splitlines())


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


# --- changes without a signal: the kubelet's ..data swap --------------------------------------


class LookupLoad:
    """Lookups of one address in a thread, over one connection as Postfix keeps it open.

    Every answer other than ``expected`` counts as a failure, and so does every connection
    error (the connection is then opened again).
    """

    def __init__(self, target: str, address: str, expected: str) -> None:
        self.target, self.address, self.expected = target, address, expected
        self.count = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def wait_for(self, count: int) -> None:
        wait_until(lambda: self.count >= count, 30, 0.01, f"{count} lookups")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with Client(self.target, timeout=5) as client:
                    while not self._stop.is_set():
                        reply = client.query(MAP_NAME, self.address)
                        self.count += 1
                        if (reply.status, reply.data) != (Status.OK, self.expected):
                            self.failures.append(f"{reply.status.value} {reply.data}")
            except OSError as exc:
                self.failures.append(repr(exc))


def lookup(target: str, address: str) -> tuple[Status, str]:
    with Client(target, timeout=5) as client:
        reply = client.query(MAP_NAME, address)
    return reply.status, reply.data


def sidecar_logs(pod: Pod) -> str:
    return str(pod.containers["tempmail"].logs().decode(errors="replace"))


@pytest.mark.timeout(120)
def test_secret_rotation_by_a_data_swap_fails_no_lookup(
    pod: Pod, documents: list[dict[str, Any]]
) -> None:
    """Swapping the Secret's ..data to new + previous secret while lookups run: 0 failures."""
    wait_past_utc_midnight(margin=60)
    table = sidecar_config(documents)["identities"]["default"]
    recipient = table["recipient"]
    secret_dir, _ = pod.volumes["secret"]
    old_secret = (secret_dir / "secret").read_text().strip()
    new_secret = secrets.token_urlsafe(32)
    old_address, new_address = address_of(table, old_secret), address_of(table, new_secret)
    target = f"unix:{pod.volumes['socket'][0] / 'socket'}"
    link = pod.exec("tempmail", ["readlink", "/run/secrets/tempmail/secret"])
    assert link.stdout == "..data/secret\n", link  # the kubelet's layout, seen in the pod
    assert lookup(target, new_address) == (Status.NOTFOUND, "")
    with LookupLoad(target, old_address, recipient) as load:
        load.wait_for(200)
        swapped = time.monotonic()
        pod.update_volume("secret", {"secret": new_secret + "\n", "previous": old_secret + "\n"})
        wait_until(
            lambda: lookup(target, new_address) == (Status.OK, recipient),
            RELOAD_WITHIN + 5,
            0.05,
            "the new secret served",
        )
        took = time.monotonic() - swapped
        load.wait_for(load.count + 200)
    print(f"\nrotated secret served {took:.2f} s after the ..data swap; {load.count} lookups")
    assert load.failures == []
    assert took <= RELOAD_WITHIN
    logs = sidecar_logs(pod)
    assert "SIGHUP" not in logs
    assert "(file; generation 2)" in logs


@pytest.mark.timeout(120)
def test_a_broken_configmap_leaves_the_pod_ready_and_is_logged(
    pod: Pod, documents: list[dict[str, Any]]
) -> None:
    """A broken config swapped in: every probe still passes, the log says why it was refused."""
    shipped = find(documents, "ConfigMap", "tempmail-config")["data"]["config.toml"]
    refused = "still serving the previous configuration"
    seen = sidecar_logs(pod).count(refused)
    pod.update_volume("config", {"config.toml": shipped + "\n[server\n"})
    wait_until(lambda: sidecar_logs(pod).count(refused) > seen, 15, 0.1, "the refused reload")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert pod.probe("tempmail", kind), f"{kind} failed with a broken file on disk"
    sidecar = container(find(documents, "Deployment")["spec"]["template"]["spec"], "tempmail")
    for kind in ("readinessProbe", "livenessProbe"):
        output = pod.exec("tempmail", sidecar[kind]["exec"]["command"])
        assert "@" not in output.stdout + output.stderr, output  # never an address in events
    reloads = sidecar_logs(pod).count("configuration reloaded")
    pod.update_volume("config", {"config.toml": shipped})
    wait_until(
        lambda: sidecar_logs(pod).count("configuration reloaded") > reloads,
        15,
        0.1,
        "the repaired config reloaded",
    )
