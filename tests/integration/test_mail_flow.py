"""Mail through Postfix and the tempmail sidecar: what is delivered, what is refused at RCPT."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from helpers import wait_until

from .postfix_container import POSTFIX_SOCKET_DIR
from .sending import unique_subject
from .sidecar import TEMPMAIL_UID
from .stack import OTHER_DOMAIN, Stack

pytestmark = pytest.mark.containers


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """md5 identity, sidecar started first; Postfix configured with tempmail postfix-config,
    plus a virtual alias domain of its own (OTHER_DOMAIN) that no identity owns."""
    return make_stack(other_domains=(OTHER_DOMAIN,))


#: Dot-stuffing, an mbox-style "From " line, trailing spaces and non-ASCII: all must survive.
BODY = "Hello,\n.a line that starts with a dot\nFrom the start of a line\ntrailing  \nGrüße\n"


def assert_delivered(stack: Stack, address: str, label: str) -> None:
    assert stack.smtp.rcpt(address).code == 250
    subject = unique_subject(label)
    stack.smtp.send(address, subject, BODY)
    message = stack.mailbox.wait_for(subject)
    assert message["Subject"] == subject
    assert message.get_content() == BODY
    assert message["Delivered-To"] == "user@localhost"
    assert message["X-Original-To"] == address


@pytest.mark.parametrize("days_ago", [0, 1], ids=["today", "yesterday"])
def test_current_address_is_delivered(stack: Stack, days_ago: int) -> None:
    assert_delivered(stack, stack.sidecar.address(days_ago), f"md5-{days_ago}")


def test_upper_case_address_is_delivered(stack: Stack) -> None:
    assert_delivered(stack, stack.sidecar.address().upper(), "upper")


def test_address_with_extension_is_delivered(stack: Stack) -> None:
    local, domain = stack.sidecar.address().split("@")
    assert_delivered(stack, f"{local}+shop@{domain}", "extension")


@pytest.mark.parametrize(
    "make_address",
    [
        pytest.param(lambda s: s.sidecar.address(2), id="day-before-yesterday"),
        pytest.param(lambda _: f"{secrets.token_hex(4)}@example.test", id="random-code"),
        pytest.param(
            lambda s: s.sidecar.address().replace("example.test", OTHER_DOMAIN), id="wrong-domain"
        ),
    ],
)
def test_invalid_address_is_refused_at_rcpt(
    stack: Stack, make_address: Callable[[Stack], str]
) -> None:
    result = stack.smtp.rcpt(make_address(stack))
    assert result.code == 550
    assert "User unknown in virtual alias table" in result.text


def test_foreign_domain_is_not_relayed(stack: Stack) -> None:
    # A valid code at a domain Postfix does not serve: no open relay.
    result = stack.smtp.rcpt(stack.sidecar.address().replace("example.test", "elsewhere.test"))
    assert result.code == 554
    assert "Relay access denied" in result.text


def test_sidecar_is_unprivileged_and_read_only(stack: Stack) -> None:
    container = stack.sidecar.docker()
    assert container.attrs["Config"]["User"] == f"{TEMPMAIL_UID}:{TEMPMAIL_UID}"
    assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert stack.sidecar.exec(["id", "-u"]) == (0, f"{TEMPMAIL_UID}\n")
    code, output = stack.sidecar.exec(["touch", "/opt/tempmail/written"])
    assert code != 0
    assert "Read-only file system" in output
    # No capabilities at all in the server process (PID 1).
    _, status = stack.sidecar.exec(["grep", "^CapEff", "/proc/1/status"])
    assert status.split() == ["CapEff:", "0000000000000000"]


def test_socket_permissions_let_only_postfix_in(stack: Stack) -> None:
    # Directory and socket: 10001:10001, group access only; Postfix's group list has 10001.
    listing = stack.postfix.exec(
        f"stat -c '%u:%g %a' {POSTFIX_SOCKET_DIR} {POSTFIX_SOCKET_DIR}/socket"
    )
    assert listing.split("\n")[:2] == ["10001:10001 750", "10001:10001 660"]
    assert "10001" in stack.postfix.exec("id -G postfix").split()


def test_a_second_sidecar_does_not_steal_the_live_socket(stack: Stack) -> None:
    code, output = stack.sidecar.run_once(["serve"])
    assert code != 0
    assert "another server is already listening" in output
    assert stack.smtp.rcpt(stack.sidecar.address()).code == 250  # the first one still serves


def test_healthcheck_of_the_image_passes(stack: Stack) -> None:
    image = stack.images.client.images.get(stack.images.sidecar)
    check = image.attrs["Config"]["Healthcheck"]["Test"]
    assert check[:3] == ["CMD", "tempmail", "query"]
    code, output = stack.sidecar.exec(check[1:])
    assert code == 0, output
    assert "self-test passed" in output


def test_docker_reports_the_sidecar_healthy(stack: Stack) -> None:
    def status() -> str:
        return str(stack.sidecar.docker().attrs["State"]["Health"]["Status"])

    wait_until(lambda: status() == "healthy", timeout=20, what="docker health status")
    log = stack.sidecar.docker().attrs["State"]["Health"]["Log"]
    assert "self-test passed" in log[-1]["Output"]


def test_sidecar_stops_quickly_on_sigterm(stack: Stack) -> None:
    try:
        took = stack.sidecar.stop(timeout=10)
        state = stack.sidecar.docker().attrs["State"]
        print(f"\ndocker stop of the sidecar: {took:.2f} s")
        assert state["ExitCode"] == 0
        assert took < 1.0
        assert not stack.postfix.socket_exists()  # removed on the way out
    finally:
        stack.sidecar.ensure_running()
    assert stack.smtp.rcpt(stack.sidecar.address()).code == 250
