"""README "Running under systemd", run verbatim under systemd 252 as PID 1 on Debian 12.

The module boots one Debian 12 container with systemd as PID 1 (debian_host.py says what that
needs, and why) and Debian's Postfix as its postfix@- service, runs the README's host steps 1-4
and the systemd block as written, and leaves the shipped units exactly as they are. Each test
then does one thing an operator does (reload, a broken config, stop, SIGKILL, a new secret,
socket activation) and looks today's address up with Postfix's own ``postmap`` as user
``postfix``, the way smtpd asks. The tests run in file order and each leaves the service
running with a valid config; socket activation, which switches units, comes last.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator

import pytest

from helpers import wait_until

from . import debian_host, readme
from .addresses import wait_past_utc_midnight
from .debian_host import RECIPIENT, SOCKET, DebianHost
from .engine import REPO, Images

pytestmark = pytest.mark.containers

CONFIG = "/etc/tempmail/config.toml"
#: The figure README.md quotes for `systemd-analyze security` (checked against the README too).
EXPOSURE = re.compile(r'`systemd-analyze security tempmail\.service` rates it ([\d.]+) "OK"')


@pytest.fixture(scope="module")
def host(docker_images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DebianHost]:
    """A Debian 12 host under systemd after the README's steps 1-4 and its systemd block."""
    debian_host.require_image(docker_images.client)
    sdist, wheels = debian_host.wheelhouse(tmp_path_factory)
    started = debian_host.start_systemd(docker_images.client, sdist, wheels)
    with debian_host.after_readme_steps(started) as host:
        # Debian 12 as installed: the README's `install -D` must create this directory.
        assert host.run(["test", "-e", "/etc/sysusers.d"], check=False).exit_code == 1
        host.readme("systemd-install")
        yield host


@pytest.fixture(autouse=True)
def not_at_midnight() -> None:
    """Addresses are computed, then used: not across a UTC midnight (a test takes seconds)."""
    wait_past_utc_midnight(margin=120)


def show(host: DebianHost, unit: str, *properties: str) -> dict[str, str]:
    """`systemctl show` properties of ``unit``."""
    output = host.run(["systemctl", "show", unit, "-p", ",".join(properties)]).stdout
    return dict(line.split("=", 1) for line in output.splitlines())


def service(host: DebianHost, *properties: str) -> dict[str, str]:
    return show(host, "tempmail.service", *properties)


def resolves(host: DebianHost, address: str | None = None) -> bool:
    """Whether Postfix's postmap, run as postfix, maps today's address to the recipient."""
    return host.postmap(address or host.addresses()[0]).stdout == RECIPIENT + "\n"


def journal(host: DebianHost, since: str) -> str:
    """The service's journal since a cursor (see :func:`cursor`)."""
    return host.run(
        ["journalctl", "--no-pager", "-o", "cat", "-u", "tempmail", f"--after-cursor={since}"]
    ).stdout


def cursor(host: DebianHost) -> str:
    """The journal's current position."""
    output = host.run(["journalctl", "-n", "0", "--show-cursor", "--no-pager"]).stdout
    return output.rpartition("-- cursor: ")[2].strip()


def break_config(host: DebianHost) -> None:
    """Make the config unloadable (not TOML any more), keeping a copy to restore."""
    host.sh(f"cp -p {CONFIG} {CONFIG}.good && echo 'this is not TOML' >> {CONFIG}")


def restore_config(host: DebianHost) -> None:
    host.sh(f"mv {CONFIG}.good {CONFIG}")


def test_the_readme_install_starts_a_notify_service_that_postfix_reaches(host: DebianHost) -> None:
    """Type=notify start: ready when the socket answers; step 6's check passes; mail arrives."""
    state = service(host, "ActiveState", "SubState", "Type", "StatusText", "NRestarts", "User")
    assert state == {
        "Type": "notify",
        "User": "tempmail",
        "NRestarts": "0",
        "ActiveState": "active",
        "SubState": "running",
        "StatusText": f"serving on unix:{SOCKET}",
    }
    check = host.readme("host-check")
    assert check.stdout.splitlines()[-1] == RECIPIENT, check.describe("host-check")
    # READY=1 means ready: the lookup right after `systemctl restart` returns must succeed.
    today, _ = host.addresses()
    ready = host.sh(
        "systemctl restart tempmail && "
        f"runuser -u postfix -- postmap -q {today} {debian_host.SOCKETMAP}"
    )
    assert ready.stdout == RECIPIENT + "\n"
    assert host.run(["stat", "-c", "%U:%G %a", SOCKET]).stdout == "tempmail:postfix 660\n"
    assert host.smtp(today, "systemd-start") == (250, "250")
    host.wait_delivered("systemd-start")
    assert host.smtp("00000000@example.org")[0] == 550


def test_the_units_are_installed_exactly_as_shipped(host: DebianHost) -> None:
    """The hardening under test is the shipped one: the installed files equal the repository's."""
    for name in ("tempmail.service", "tempmail.socket"):
        installed = host.run(["cat", f"/etc/systemd/system/{name}"]).stdout
        assert installed == (REPO / "packaging" / "systemd" / name).read_text(encoding="utf-8")


def test_the_exposure_figure_is_the_one_the_readme_states(host: DebianHost) -> None:
    """`systemd-analyze security` on the running unit gives the README's figure."""
    stated = EXPOSURE.search(readme.README.read_text(encoding="utf-8"))
    assert stated, "README.md no longer states the systemd-analyze security figure"
    result = host.run(["systemd-analyze", "security", "--no-pager", "tempmail.service"])
    assert result.stdout.splitlines()[-1].startswith(
        f"→ Overall exposure level for tempmail.service: {stated[1]} OK"
    ), result.stdout


def test_reload_as_the_readme_says(host: DebianHost) -> None:
    """`systemctl reload tempmail` re-reads the config in the running process."""
    before = service(host, "MainPID")
    mark = cursor(host)
    host.readme("systemd-reload")
    assert service(host, "ReloadResult", "ActiveState", "MainPID") == {
        **before,
        "ReloadResult": "success",
        "ActiveState": "active",
    }
    assert "configuration reloaded from /etc/tempmail/config.toml" in journal(host, mark)
    assert resolves(host)


def test_a_refused_reload_fails_the_reload_and_keeps_serving(host: DebianHost) -> None:
    """A broken config: `systemctl reload` exits non-zero, ReloadResult says so, lookups go on."""
    before = service(host, "MainPID")
    today, _ = host.addresses()
    mark = cursor(host)
    break_config(host)
    try:
        refused = host.readme("systemd-reload", check=False)
        assert refused.exit_code != 0, refused.describe("systemctl reload with a broken config")
        assert service(host, "ReloadResult", "ActiveState", "MainPID") == {
            **before,
            "ReloadResult": "exit-code",
            "ActiveState": "active",
        }
        assert (
            "tempmail: reload failed, the previous configuration keeps serving: "
            f"{CONFIG}: invalid TOML: "
        ) in journal(host, mark)
        assert resolves(host, today)
    finally:
        restore_config(host)
    host.readme("systemd-reload")
    assert service(host, "ReloadResult", "MainPID") == {**before, "ReloadResult": "success"}
    assert resolves(host, today)


def test_a_config_error_stops_the_service_instead_of_restarting_it(host: DebianHost) -> None:
    """Exit 78 at start: the unit fails once, with the reason logged, and is not restarted."""
    mark = cursor(host)
    break_config(host)
    try:
        restart = host.run(["systemctl", "restart", "tempmail"], check=False)
        assert restart.exit_code != 0
        # Restart=on-failure would have started it again after RestartSec=2s: wait longer.
        time.sleep(5)
        assert service(host, "ActiveState", "Result", "ExecMainStatus", "NRestarts") == {
            "ActiveState": "failed",
            "Result": "exit-code",
            "ExecMainStatus": "78",
            "NRestarts": "0",
        }
        assert f"tempmail: {CONFIG}: invalid TOML: " in journal(host, mark)
    finally:
        restore_config(host)
    host.run(["systemctl", "start", "tempmail"])
    assert resolves(host)


def test_stop_removes_the_socket_and_start_brings_it_back(host: DebianHost) -> None:
    """Stopped, the socket is gone and Postfix's lookup fails (a deferral); started, it works."""
    host.run(["systemctl", "stop", "tempmail"])
    assert service(host, "ActiveState")["ActiveState"] == "inactive"
    assert host.run(["test", "-e", SOCKET], check=False).exit_code == 1
    stopped = host.postmap(host.addresses()[0])
    assert stopped.exit_code != 0
    assert "No such file or directory" in stopped.stderr, stopped.describe("postmap")
    host.run(["systemctl", "start", "tempmail"])
    assert resolves(host)


def test_the_socket_directory_comes_back_at_boot(host: DebianHost) -> None:
    """The tmpfiles.d entry: systemd-tmpfiles recreates a lost socket directory as step 2 made it."""
    host.run(["systemctl", "stop", "tempmail"])
    try:
        host.run(["rm", "-r", "/var/spool/postfix/tempmail"])
        # At boot systemd-tmpfiles-setup.service runs `systemd-tmpfiles --create --remove
        # --boot` (it refuses a manual start); --create over every tmpfiles.d file is the part
        # that matters here, without emptying /tmp and /run under the running system.
        host.run(["systemd-tmpfiles", "--create"])
        stat = host.run(["stat", "-c", "%U:%G %a", "/var/spool/postfix/tempmail"]).stdout
        assert stat == "tempmail:postfix 750\n"
    finally:
        host.run(["systemctl", "start", "tempmail"])
    assert resolves(host)


def test_a_killed_service_is_restarted(host: DebianHost) -> None:
    """SIGKILL: systemd restarts it after RestartSec; the new process removes the stale socket."""
    before = service(host, "MainPID", "NRestarts")
    host.run(["systemctl", "kill", "--signal=KILL", "tempmail"])

    def restarted() -> bool:
        now = service(host, "MainPID", "SubState")
        return now["MainPID"] not in {before["MainPID"], "0"} and now["SubState"] == "running"

    wait_until(restarted, what="a new process after RestartSec=2s", timeout=15)
    after = service(host, "MainPID", "NRestarts")
    assert after["MainPID"] != before["MainPID"]
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert resolves(host)


def test_a_new_secret_is_picked_up_under_protect_system_strict(host: DebianHost) -> None:
    """The secret rewritten in place: within 5 s the new address resolves and the old one not."""
    old_today, _ = host.addresses()
    pid = service(host, "MainPID")
    host.sh(f"printf '%s\\n' {secrets.token_urlsafe(32)} > /etc/tempmail/secret")
    new_today, _ = host.addresses()
    wait_until(lambda: resolves(host, new_today), what="the new secret being served", timeout=15)
    assert host.postmap(old_today).stdout == ""
    assert service(host, "MainPID") == pid
    assert host.smtp(new_today, "systemd-new-secret") == (250, "250")
    host.wait_delivered("systemd-new-secret")


def test_socket_activation_as_the_readme_says(host: DebianHost) -> None:
    """tempmail.socket: systemd owns the socket; the first lookup starts the service."""
    host.readme("systemd-socket")
    assert show(host, "tempmail.socket", "ActiveState")["ActiveState"] == "active"
    assert service(host, "ActiveState")["ActiveState"] == "inactive"
    assert host.run(["stat", "-c", "%U:%G %a", SOCKET]).stdout == "tempmail:postfix 660\n"
    mark = cursor(host)
    assert resolves(host)  # the lookup that starts the service
    assert service(host, "ActiveState")["ActiveState"] == "active"
    assert "using 1 socket(s) from systemd" in journal(host, mark)
    host.run(["systemctl", "stop", "tempmail.service"])
    assert host.run(["test", "-S", SOCKET], check=False).exit_code == 0  # systemd's, kept
    assert resolves(host)  # started again by the next lookup
