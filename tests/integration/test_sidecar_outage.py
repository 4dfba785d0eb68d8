"""The sidecar goes away: Postfix must defer (4xx), never accept and drop, and recover by itself."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest

from .stack import Stack, unique_subject, wait_until

pytestmark = pytest.mark.containers


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
