"""The sidecar goes away: Postfix must defer (4xx), never accept and drop, and recover by itself.

Postfix is configured as the README says (guarded.py: the lines of `tempmail postfix-config`),
so an outage defers the mail of the temporary domains only: everyone else's mail is delivered
at once.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable, Iterator

import pytest

from .conftest import Images
from .guarded import GuardedStack, guarded_stacks
from .stack import RECIPIENT, Stack, unique_subject, wait_until

pytestmark = pytest.mark.containers


@pytest.fixture(scope="module")
def make_guarded(docker_images: Images) -> Iterator[Callable[..., GuardedStack]]:
    yield from guarded_stacks(docker_images)


@pytest.fixture(scope="module")
def stack(make_guarded: Callable[..., GuardedStack]) -> Stack:
    """This module's stack: Postfix configured with tempmail postfix-config."""
    return make_guarded()


@pytest.fixture
def down(stack: Stack) -> Iterator[Stack]:
    """The stack with its sidecar stopped (docker stop); running again afterwards."""
    stack.stop_sidecar()
    try:
        yield stack
    finally:
        stack.ensure_sidecar_running()


def test_rcpt_is_deferred_while_the_sidecar_is_stopped(down: Stack) -> None:
    for address in (down.address(), "0123abcd@example.test"):
        result = down.rcpt(address)
        assert result.code == 451, result
        assert "Temporary lookup failure" in result.text


def test_nothing_is_accepted_and_lost_while_the_sidecar_is_stopped(stack: Stack) -> None:
    address = stack.address()
    refused = unique_subject("refused")
    queued = unique_subject("queued")
    stack.stop_sidecar()
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refusal:
            stack.send(address, refused)
        assert refusal.value.recipients[address][0] == 451
        # sendmail inside Postfix: cleanup cannot resolve the alias, so the message stays in
        # the maildrop queue ("message not accepted, try again later").
        problem = "virtual_alias_maps map lookup problem"
        seen = stack.postfix_logs().count(problem)
        stack.sendmail_inside(address, queued)
        wait_until(
            lambda: stack.postfix_logs().count(problem) > seen,
            what="cleanup to report the failed lookup",
        )
        assert any(name.startswith("maildrop/") for name in stack.queued())
        assert stack.find_message(queued) is None
    finally:
        stack.ensure_sidecar_running()
    # pickup retries the maildrop every 60 s; postqueue -f wakes it now.
    stack.flush()
    stack.wait_for_message(queued)
    wait_until(lambda: not stack.queued(), what="empty queues")
    assert stack.find_message(refused) is None


def test_stale_socket_after_sigkill_is_replaced(stack: Stack) -> None:
    replaced = "removed stale socket"
    seen = stack.sidecar_logs().count(replaced)
    stack.kill_sidecar("SIGKILL")
    try:
        wait_until(lambda: not stack.sidecar_running(), what="the sidecar to die")
        assert stack.socket_exists()  # left behind: nobody removed it
        assert stack.rcpt(stack.address()).code == 451  # connection refused: deferred
    finally:
        stack.ensure_sidecar_running()
    assert stack.sidecar_logs().count(replaced) == seen + 1
    subject = unique_subject("after-kill")
    stack.send(stack.address(), subject)
    stack.wait_for_message(subject)


def test_postfix_restarted_while_the_sidecar_is_down(down: Stack) -> None:
    # The volume is empty now (the socket was removed): Docker copies Postfix's mount point
    # into it again. The sidecar must still be able to create its socket there afterwards.
    down.restart_postfix()
    down.start_sidecar()
    subject = unique_subject("postfix-restart")
    down.send_with_retry(down.address(), subject)
    down.wait_for_message(subject)


def test_an_outage_defers_only_the_temporary_domains(stack: Stack) -> None:
    """Sidecar stopped: user@localhost is delivered at once (SMTP and sendmail); a temporary
    address gets 451, and the client's retry after the sidecar is back is delivered."""
    temporary = stack.address()
    later = unique_subject("temporary-after-outage")
    stack.stop_sidecar()
    try:
        for label, submit in (("smtp", stack.send), ("sendmail", stack.sendmail_inside)):
            subject = unique_subject(f"local-during-outage-{label}")
            t0 = time.monotonic()
            submit(RECIPIENT, subject)
            stack.wait_for_message(subject, timeout=10)
            print(f"\n{label} to {RECIPIENT} delivered in {time.monotonic() - t0:.2f} s")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refusal:
            stack.send(temporary, later)
        code, text = refusal.value.recipients[temporary]
        assert (code, text) == (
            451,
            b"4.3.0 <" + temporary.encode() + b">: Temporary lookup failure",
        )
        assert not stack.sidecar_running()
    finally:
        stack.ensure_sidecar_running()
    # An MTA keeps retrying 4xx: now it is accepted and delivered.
    stack.send_with_retry(temporary, later)
    stack.wait_for_message(later)
