"""The sidecar goes away: Postfix must defer (4xx), never accept and drop, and recover by itself.

Postfix is configured as the README says (the lines of `tempmail postfix-config`: stack.py),
so an outage defers the mail of the temporary domains only: everyone else's mail is delivered
at once.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable, Iterator

import pytest

from helpers import wait_until

from .sending import unique_subject
from .sidecar import RECIPIENT
from .stack import Stack

pytestmark = pytest.mark.containers


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """This module's stack: Postfix configured with tempmail postfix-config."""
    return make_stack()


@pytest.fixture
def down(stack: Stack) -> Iterator[Stack]:
    """The stack with its sidecar stopped (docker stop); running again afterwards."""
    stack.sidecar.stop()
    try:
        yield stack
    finally:
        stack.sidecar.ensure_running()


def test_rcpt_is_deferred_while_the_sidecar_is_stopped(down: Stack) -> None:
    for address in (down.sidecar.address(), "0123abcd@example.test"):
        result = down.smtp.rcpt(address)
        assert result.code == 451, result
        assert "Temporary lookup failure" in result.text


def test_nothing_is_accepted_and_lost_while_the_sidecar_is_stopped(stack: Stack) -> None:
    address = stack.sidecar.address()
    refused = unique_subject("refused")
    queued = unique_subject("queued")
    stack.sidecar.stop()
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refusal:
            stack.smtp.send(address, refused)
        assert refusal.value.recipients[address][0] == 451
        # sendmail inside Postfix: cleanup cannot resolve the alias, so the message stays in
        # the maildrop queue ("message not accepted, try again later").
        problem = "virtual_alias_maps map lookup problem"
        seen = stack.postfix.logs().count(problem)
        stack.postfix.sendmail(address, queued)
        wait_until(
            lambda: stack.postfix.logs().count(problem) > seen,
            what="cleanup to report the failed lookup",
        )
        assert any(name.startswith("maildrop/") for name in stack.postfix.queued())
        assert stack.mailbox.find(queued) is None
    finally:
        stack.sidecar.ensure_running()
    # pickup retries the maildrop every 60 s; postqueue -f wakes it now.
    stack.postfix.flush()
    stack.mailbox.wait_for(queued)
    wait_until(lambda: not stack.postfix.queued(), what="empty queues")
    assert stack.mailbox.find(refused) is None


def test_stale_socket_after_sigkill_is_replaced(stack: Stack) -> None:
    replaced = "removed stale socket"
    seen = stack.sidecar.logs().count(replaced)
    stack.sidecar.kill("SIGKILL")
    try:
        wait_until(lambda: not stack.sidecar.running(), what="the sidecar to die")
        assert stack.postfix.socket_exists()  # left behind: nobody removed it
        assert stack.smtp.rcpt(stack.sidecar.address()).code == 451  # connection refused: deferred
    finally:
        stack.sidecar.ensure_running()
    assert stack.sidecar.logs().count(replaced) == seen + 1
    subject = unique_subject("after-kill")
    stack.smtp.send(stack.sidecar.address(), subject)
    stack.mailbox.wait_for(subject)


def test_postfix_restarted_while_the_sidecar_is_down(down: Stack) -> None:
    # The volume is empty now (the socket was removed): Docker copies Postfix's mount point
    # into it again. The sidecar must still be able to create its socket there afterwards.
    down.postfix.restart()
    down.sidecar.start()
    subject = unique_subject("postfix-restart")
    down.smtp.send_until_accepted(down.sidecar.address(), subject)
    down.mailbox.wait_for(subject)


def test_an_outage_defers_only_the_temporary_domains(stack: Stack) -> None:
    """Sidecar stopped: user@localhost is delivered at once (SMTP and sendmail); a temporary
    address gets 451, and the client's retry after the sidecar is back is delivered."""
    temporary = stack.sidecar.address()
    later = unique_subject("temporary-after-outage")
    stack.sidecar.stop()
    try:
        for label, submit in (("smtp", stack.smtp.send), ("sendmail", stack.postfix.sendmail)):
            subject = unique_subject(f"local-during-outage-{label}")
            t0 = time.monotonic()
            submit(RECIPIENT, subject)
            stack.mailbox.wait_for(subject, timeout=10)
            print(f"\n{label} to {RECIPIENT} delivered in {time.monotonic() - t0:.2f} s")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refusal:
            stack.smtp.send(temporary, later)
        code, text = refusal.value.recipients[temporary]
        assert (code, text) == (
            451,
            b"4.3.0 <" + temporary.encode() + b">: Temporary lookup failure",
        )
        assert not stack.sidecar.running()
    finally:
        stack.sidecar.ensure_running()
    # An MTA keeps retrying 4xx: now it is accepted and delivered.
    stack.smtp.send_until_accepted(temporary, later)
    stack.mailbox.wait_for(later)
