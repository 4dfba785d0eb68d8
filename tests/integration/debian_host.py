"""A Debian 12 host in a container, for the tests that run the README's host sections verbatim.

The image (tests/integration/images/debian-host/Containerfile, built by .ci/build-images.sh) is
a Debian 12 mail host before tempmail arrives: Debian's Postfix as "Local only" with its default
chrooted master.cf, a mailbox for you@example.net, systemd, python3-venv. tempmail reaches it
the way a user gets it: this checkout's sdist is built on the host, its wheel and the wheels of
its dependencies go into a wheelhouse mounted read-only at /wheelhouse, and the container's
environment says ``PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse``. The README's own
``pip install tempmail-socketmap`` then installs this checkout offline, unchanged. The sdist is
unpacked in /root; the README's commands run in that directory (its systemd commands install
the units from ``packaging/systemd/`` of the sdist).

Two ways to run it:

* :func:`start_plain`: ``sleep infinity`` as PID 1; the test starts Postfix with ``postfix
  start`` as the host's init would, and runs ``tempmail serve`` in the background.
* :func:`start_systemd`: systemd 252 as PID 1 (Debian's postfix@-.service starts Postfix),
  booted with the recipe tested on the CI machines (Docker 20.10, cgroup v1, no AppArmor, a
  host without CAP_SYS_RESOURCE). What each option does here, measured by leaving it out
  (booting, then running a service with the shipped unit's [Service] hardening):

  - ``--cap-add=ALL --cap-drop=SYS_RESOURCE`` is needed. With Docker's default capabilities
    systemd boots, but applies the unit's sandbox only in part ("PrivateIPC=yes is
    configured, but IPC namespace setup failed, ignoring", the same for ProtectHostname=):
    not the hardening as shipped. ``--privileged``, and ALL without the drop, fail with
    "unable to apply caps: operation not permitted": the host lacks CAP_SYS_RESOURCE.
  - the host's ``/sys/fs/cgroup`` mounted read-only is needed: without it systemd exits at
    once.
  - ``--security-opt seccomp=unconfined``, ``apparmor=unconfined``, ``systempaths=unconfined``,
    tmpfs on /run, /run/lock and /tmp, and ``--cgroupns=host`` changed nothing here: this
    whole module passed with only the two options above. They are kept for hosts unlike
    these (Docker's default AppArmor profile denies mount(2) where AppArmor is enabled;
    cgroup v2 hosts default to a private cgroup namespace; neither was tried here).
  - ``--network=none``: SMTP is spoken from inside the container.

  The hard open-file limit inside is the host's (20000 here), so systemd lowers the unit's
  LimitNOFILE=65536 to it; nothing in the unit is changed or relaxed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_until

from . import readme
from .engine import LABELS, REPO, VERSION

#: Built by .ci/build-images.sh from images/debian-host/Containerfile.
HOST_IMAGE = os.environ.get("TEMPMAIL_HOST_IMAGE", f"localhost/tempmail-test-host:{VERSION}")
WHEELHOUSE = "/wheelhouse"
#: Where the sdist is unpacked; the README's systemd commands (packaging/systemd/...) run in it.
SOURCE_PARENT = "/root"
#: The permanent recipient of the README (a local mailbox in the image) and its mbox.
RECIPIENT = "you@example.net"
MAILBOX = "/var/mail/you"
SOCKET = "/var/spool/postfix/tempmail/socket"
SOCKETMAP = f"socketmap:unix:{SOCKET}:tempmail"

#: Speaks SMTP to the local Postfix: RCPT's code for argv[1], and with argv[2] (a subject)
#: the whole mail when RCPT was accepted. Printed: "<rcpt code> <data code or ->".
SMTP_SCRIPT = """
import smtplib, sys
address = sys.argv[1]
with smtplib.SMTP("127.0.0.1", 25, timeout=30) as smtp:
    smtp.ehlo("client.example.com")
    smtp.mail("sender@example.com")
    code, _ = smtp.rcpt(address)
    data = "-"
    if code == 250 and len(sys.argv) > 2:
        message = f"From: sender@example.com\\r\\nTo: {address}\\r\\nSubject: {sys.argv[2]}\\r\\n\\r\\nhi\\r\\n"
        data = smtp.data(message.encode())[0]
    print(code, data)
"""


class HostError(AssertionError):
    """A command in the container did not do what the test needs."""


@dataclass(frozen=True)
class Result:
    """A finished command: exit code and its output, decoded."""

    exit_code: int
    stdout: str
    stderr: str

    def describe(self, what: str) -> str:
        return f"{what}: exit {self.exit_code}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def build_wheelhouse(directory: Path) -> tuple[Path, Path]:
    """This checkout's sdist, and a wheelhouse with its wheel and its dependencies' wheels.

    The wheel is built from the sdist, as from a release; the dependencies come as wheels only
    (--only-binary), fetched by the host's pip. Returns (sdist, wheelhouse).
    """
    python = str(REPO / ".venv" / "bin" / "python")
    wheels = directory / "wheels"
    # pypa/build's default: the sdist first, then the wheel from the unpacked sdist.
    _host_command([python, "-m", "build", "--outdir", str(wheels), str(REPO)])
    (sdist,) = wheels.glob("*.tar.gz")
    sdist = sdist.rename(directory / sdist.name)  # only wheels in the wheelhouse
    (wheel,) = wheels.glob("*.whl")
    pip_wheel = [python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
    _host_command([*pip_wheel, "--only-binary=:all:", "--wheel-dir", str(wheels), str(wheel)])
    directory.chmod(0o755)  # the container reads the wheelhouse through a bind mount
    return sdist, wheels


def _host_command(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise HostError(f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stderr}")


class DebianHost:
    """A running Debian 12 host container; commands run as root unless a user is given."""

    def __init__(self, container: Any, source_dir: str) -> None:
        self.container = container
        self.name: str = container.name
        #: The unpacked sdist, the working directory of README blocks.
        self.source_dir = source_dir

    # --- commands --------------------------------------------------------------------------
    def run(
        self,
        argv: list[str],
        *,
        user: str = "root",
        workdir: str = "/root",
        check: bool = True,
    ) -> Result:
        """Run ``argv`` to completion in the container."""
        exit_code, (out, err) = self.container.exec_run(
            argv, user=user, workdir=workdir, demux=True
        )
        result = Result(exit_code, (out or b"").decode(), (err or b"").decode())
        if check and exit_code != 0:
            raise HostError(result.describe(shlex.join(argv)))
        return result

    def sh(self, script: str, *, user: str = "root", check: bool = True) -> Result:
        """Run a shell script (the test's own commands, not the README's)."""
        return self.run(["sh", "-euc", script], user=user, check=check)

    def readme(self, name: str, *, check: bool = True) -> Result:
        """Run the README block ``name`` verbatim, as root, in the unpacked sdist."""
        result = self.run(readme.shell(name), workdir=self.source_dir, check=False)
        if check and result.exit_code != 0:
            block = readme.block(name)
            raise HostError(result.describe(f"README.md block {name!r} (line {block.line})"))
        return result

    def readme_in_background(self, name: str, log: str) -> None:
        """Start the README block ``name`` (a foreground server) detached, output to ``log``."""
        wrapper = f'exec >>{shlex.quote(log)} 2>&1; exec "$@"'
        self.container.exec_run(
            ["sh", "-c", wrapper, "sh", *readme.shell(name)], workdir=self.source_dir, detach=True
        )

    def read(self, path: str) -> str:
        """The content of a file in the container, or "" if it does not exist."""
        return self.run(["sh", "-c", 'cat -- "$1" 2>/dev/null || true', "sh", path]).stdout

    # --- tempmail and Postfix ----------------------------------------------------------------
    def addresses(self) -> list[str]:
        """Today's and yesterday's address, as ``tempmail address`` prints them (as root)."""
        return self.run(["tempmail", "address"]).stdout.split()

    def postmap(self, key: str) -> Result:
        """Look ``key`` up through Postfix's own client, as the postfix user (like smtpd)."""
        return self.run(
            ["runuser", "-u", "postfix", "--", "postmap", "-q", key, SOCKETMAP], check=False
        )

    def smtp(self, address: str, subject: str | None = None) -> tuple[int, str]:
        """RCPT TO ``address`` over SMTP to the local Postfix (and send a mail if accepted)."""
        argv = ["python3", "-c", SMTP_SCRIPT, address, *([subject] if subject else [])]
        rcpt, data = self.run(argv).stdout.split()
        return int(rcpt), data

    def delivered(self, subject: str) -> bool:
        """Whether a mail with ``subject`` is in the recipient's mailbox."""
        return f"\nSubject: {subject}\n" in self.read(MAILBOX)

    def wait_delivered(self, subject: str) -> None:
        wait_until(lambda: self.delivered(subject), what=f"{subject!r} in {MAILBOX}")

    def smtp_ready(self) -> bool:
        script = "exec 3<>/dev/tcp/127.0.0.1/25 && head -c 3 <&3"
        return self.run(["bash", "-c", script], check=False).stdout == "220"

    def booted(self) -> bool:
        """Whether systemd finished booting; a unit that failed on the way fails the test."""
        state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
        if state == "degraded":
            failed = self.run(["systemctl", "--failed", "--plain", "--no-legend"]).stdout
            raise HostError(f"units failed at boot:\n{failed}")
        return state == "running"

    def logs(self) -> str:
        """Postfix's log, the foreground server's log and, under systemd, the journal."""
        parts = [f"--- {path}\n{self.read(path)}" for path in ("/var/log/mail.log", SERVE_LOG)]
        if self.run(["test", "-d", "/run/systemd/system"], check=False).exit_code == 0:
            journal = self.run(["journalctl", "--no-pager", "-n", "300"], check=False)
            parts.append(f"--- journal\n{journal.stdout}{journal.stderr}")
        return "\n".join(parts)

    def close(self) -> None:
        self.container.remove(force=True, v=True)


#: Where the host-install test's foreground ``tempmail serve`` writes its log.
SERVE_LOG = "/var/log/tempmail-serve.log"


#: ``docker run`` options of the systemd host (the module docstring says what each one does).
SYSTEMD_OPTIONS = [
    "--cap-add=ALL",
    "--cap-drop=SYS_RESOURCE",
    "--security-opt=seccomp=unconfined",
    "--security-opt=apparmor=unconfined",
    # Only the docker CLI knows this one (it clears MaskedPaths and ReadonlyPaths): the
    # containers are therefore started with the CLI, not with the Python client.
    "--security-opt=systempaths=unconfined",
    "--tmpfs=/run",
    "--tmpfs=/run/lock",
    "--tmpfs=/tmp",
    "--volume=/sys/fs/cgroup:/sys/fs/cgroup:ro",
    "--cgroupns=host",
]


def _run(
    client: Any, sdist: Path, wheels: Path, options: list[str], command: list[str]
) -> DebianHost:
    name = f"tempmail-host-{uuid.uuid4().hex[:8]}"
    labels = [f"--label={key}={value}" for key, value in LABELS.items()]
    argv = ["docker", "run", "--detach", f"--name={name}", *labels, "--network=none"]
    argv += ["--env=PIP_NO_INDEX=1", f"--env=PIP_FIND_LINKS={WHEELHOUSE}"]
    argv += [f"--volume={wheels}:{WHEELHOUSE}:ro", *options, HOST_IMAGE, *command]
    _host_command(argv)
    source_dir = f"{SOURCE_PARENT}/{sdist.name.removesuffix('.tar.gz')}"
    host = DebianHost(client.containers.get(name), source_dir)
    try:
        with sdist.open("rb") as archive:
            host.container.put_archive(SOURCE_PARENT, archive.read())  # docker unpacks it
        host.run(["test", "-f", f"{source_dir}/packaging/systemd/tempmail.service"])
    except BaseException:
        host.close()
        raise
    return host


def start_plain(client: Any, sdist: Path, wheels: Path) -> DebianHost:
    """A host without an init system, with Postfix started by ``postfix start``."""
    host = _run(client, sdist, wheels, ["--init"], ["sleep", "infinity"])
    try:
        # The host's Postfix, logging to a file (there is no syslog daemon in the container).
        host.run(["postconf", "-e", "maillog_file = /var/log/mail.log"])
        host.run(["postfix", "start"])
        wait_until(host.smtp_ready, what="Postfix's SMTP banner")
    except BaseException:
        host.close()
        raise
    return host


def start_systemd(client: Any, sdist: Path, wheels: Path) -> DebianHost:
    """A host booted with systemd as PID 1 (see the module docstring for the options)."""
    host = _run(client, sdist, wheels, SYSTEMD_OPTIONS, ["/lib/systemd/systemd"])
    try:
        wait_until(host.booted, what="systemd reaching 'running'", timeout=60)
        wait_until(host.smtp_ready, what="Postfix's SMTP banner")
    except BaseException:
        host.close()
        raise
    return host


_BUILT: dict[str, tuple[Path, Path]] = {}


def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """This checkout's sdist and wheelhouse, built once per test session (about 5 s)."""
    if "once" not in _BUILT:
        started = time.monotonic()
        _BUILT["once"] = build_wheelhouse(tmp_path_factory.mktemp("debian-host"))
        print(f"\nsdist and wheelhouse built in {time.monotonic() - started:.1f} s")
    return _BUILT["once"]


def require_image(client: Any) -> None:
    """Fail clearly when the host image was not built (it is never pulled)."""
    import docker.errors  # noqa: PLC0415 - only where container tests run

    try:
        client.images.get(HOST_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {HOST_IMAGE} is not built locally; run .ci/build-images.sh")


#: The README's host steps 1-4, which the plain and the systemd host both run first.
README_STEPS = ("host-install", "host-user", "host-config", "host-postfix")


@contextlib.contextmanager
def after_readme_steps(host: DebianHost) -> Iterator[DebianHost]:
    """``host`` after the README's steps 1-4, for a module's tests; its logs are printed when
    anything fails, and it is removed at the end."""
    try:
        for step in README_STEPS:
            host.readme(step)
        yield host
    except BaseException:
        print(host.logs())
        raise
    finally:
        host.close()
