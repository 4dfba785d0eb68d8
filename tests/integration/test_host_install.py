"""README "Installing on a host", run verbatim on Debian 12 with Debian's chrooted Postfix.

The module's host is a Debian 12 container without an init system (debian_host.py): Postfix
runs as the host's init would start it (``postfix start``), with Debian's default master.cf.
The fixture runs the README's steps 1-4 as written, then starts step 5 (``tempmail serve`` in
the foreground) in the background; the tests check what the README promises, in order.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from helpers import wait_until

from . import debian_host
from .addresses import wait_past_utc_midnight
from .debian_host import RECIPIENT, SERVE_LOG, SOCKET, SOCKETMAP, DebianHost
from .engine import Images

pytestmark = pytest.mark.containers

CONFIG = "/etc/tempmail/config.toml"


@pytest.fixture(scope="module")
def host(docker_images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DebianHost]:
    """A Debian 12 mail host after the README's steps 1-5 (server in the foreground)."""
    debian_host.require_image(docker_images.client)
    sdist, wheels = debian_host.wheelhouse(tmp_path_factory)
    started = debian_host.start_plain(docker_images.client, sdist, wheels)
    with debian_host.after_readme_steps(started) as host:
        host.readme_in_background("host-serve", SERVE_LOG)
        wait_until(lambda: "listening on" in host.read(SERVE_LOG), what="tempmail serve listening")
        yield host


@pytest.fixture(autouse=True)
def not_at_midnight() -> None:
    """Addresses are computed, then used: not across a UTC midnight (a test takes seconds)."""
    wait_past_utc_midnight(margin=120)


def server_pids(host: DebianHost) -> list[str]:
    """The pids of `tempmail serve` processes running as the service user."""
    return host.run(["pgrep", "-u", "tempmail", "-x", "tempmail"], check=False).stdout.split()


def stat(host: DebianHost, path: str) -> str:
    return host.run(["stat", "-c", "%U:%G %a %F", path]).stdout.strip()


def test_files_and_process_are_as_the_readme_says(host: DebianHost) -> None:
    """Config and secret root:tempmail 0640 in a 0750 dir; socket group postfix; server as tempmail."""
    assert stat(host, "/etc/tempmail") == "root:tempmail 750 directory"
    assert stat(host, "/etc/tempmail/config.toml") == "root:tempmail 640 regular file"
    assert stat(host, "/etc/tempmail/secret") == "root:tempmail 640 regular file"
    assert stat(host, "/var/spool/postfix/tempmail") == "tempmail:postfix 750 directory"
    assert stat(host, SOCKET) == "root:postfix 660 socket"
    users = host.run(["ps", "-o", "user=", "-C", "tempmail"]).stdout.split()
    assert users == ["tempmail"], host.logs()
    assert host.run(["readlink", "/usr/local/bin/tempmail"]).stdout == (
        "/opt/tempmail/bin/tempmail\n"
    )


def test_other_local_users_get_nothing(host: DebianHost) -> None:
    """Others cannot read the secret or query the socket; the service cannot change its code."""
    secret = host.run(["runuser", "-u", "nobody", "--", "cat", "/etc/tempmail/secret"], check=False)
    assert (secret.exit_code, secret.stdout) == (1, "")
    assert "Permission denied" in secret.stderr
    query = host.run(
        ["runuser", "-u", "nobody", "--", "postmap", "-q", host.addresses()[0], SOCKETMAP],
        check=False,
    )
    assert query.exit_code != 0
    assert f"connect to {SOCKET}: Permission denied" in query.stderr, query.stderr
    for path in ("/opt/tempmail/bin", "/opt/tempmail/lib/python3.11/site-packages/tempmail"):
        writable = host.run(["runuser", "-u", "tempmail", "--", "test", "-w", path], check=False)
        assert writable.exit_code == 1, path
    for path in ("/etc/tempmail", "/etc/tempmail/config.toml", "/etc/tempmail/secret"):
        writable = host.run(["runuser", "-u", "tempmail", "--", "test", "-w", path], check=False)
        assert writable.exit_code == 1, path


def test_the_readme_check_passes(host: DebianHost) -> None:
    """Step 6: `tempmail check` passes and postmap as user postfix prints the recipient."""
    result = host.readme("host-check")
    assert result.stdout.splitlines()[-1] == RECIPIENT, result.describe("host-check")


def test_mail_to_todays_address_is_delivered_and_others_are_refused(host: DebianHost) -> None:
    """Through Debian's chrooted smtpd and cleanup: today's and yesterday's addresses, not others."""
    today, yesterday = host.addresses()
    for address, subject in ((today, "host-today"), (yesterday.upper(), "host-yesterday")):
        assert host.smtp(address, subject) == (250, "250"), host.logs()
        host.wait_delivered(subject)
    assert host.smtp("00000000@example.org")[0] == 550
    assert host.smtp(f"{today.partition('@')[0]}@example.com")[0] == 550  # not our domain


def test_a_new_secret_is_picked_up_without_a_restart(host: DebianHost) -> None:
    """The secret file rewritten in place: the new address is delivered, the old one gets 550."""
    old_today, _ = host.addresses()
    pids_before = server_pids(host)
    # What an operator does: write a new secret into the file (owner and mode stay).
    host.sh(f"printf '%s\\n' {secrets.token_urlsafe(32)} > /etc/tempmail/secret")
    new_today, _ = host.addresses()
    assert new_today != old_today
    wait_until(
        lambda: host.postmap(new_today).stdout == RECIPIENT + "\n",
        what="the server serving the new secret (server.reload_on_change)",
        timeout=15,
    )
    assert host.smtp(new_today, "host-new-secret") == (250, "250")
    host.wait_delivered("host-new-secret")
    assert host.smtp(old_today)[0] == 550
    assert host.postmap(old_today).stdout == ""
    assert server_pids(host) == pids_before
    assert "configuration reloaded from /etc/tempmail/config.toml" in host.read(SERVE_LOG)


def test_tempmail_reload_reports_the_servers_verdict(host: DebianHost) -> None:
    """The README's `tempmail reload`: 78 and the reason for a broken file, then 0 once fixed."""
    today, _ = host.addresses()
    host.sh(f"cp -p {CONFIG} {CONFIG}.good && echo 'this is not TOML' >> {CONFIG}")
    try:
        refused = host.readme("host-reload", check=False)
        assert refused.exit_code == 78, refused.describe("tempmail reload")
        (line,) = refused.stderr.splitlines()
        assert line.startswith(f"tempmail: {CONFIG}: invalid TOML: "), line
        assert host.postmap(today).stdout == RECIPIENT + "\n"  # the old config serves on
    finally:
        host.sh(f"mv {CONFIG}.good {CONFIG}")
    accepted = host.readme("host-reload")
    assert accepted.stdout.startswith("reloaded: configuration generation "), accepted.stdout
    assert host.postmap(today).stdout == RECIPIENT + "\n"


def test_stop_removes_the_socket(host: DebianHost) -> None:
    """SIGTERM (Ctrl-C's sibling): the server, no longer root, removes its socket on the way out."""
    host.run(["pkill", "-TERM", "-u", "tempmail", "-x", "tempmail"])
    wait_until(lambda: not server_pids(host), what="tempmail serve exiting")
    assert host.run(["test", "-e", SOCKET], check=False).exit_code == 1, host.logs()
    assert host.smtp("00000000@example.org")[0] == 451  # Postfix defers, never bounces
