"""`tempmail postfix-config` applied to a real Postfix (the example image), and what it changes.

The lines come from the sidecar image and are applied by the Postfix image's entrypoint with
the README's ``xargs -r -d '\\n' postconf -e`` (guarded.py). The controls start the same
stack with the old hand-written, unguarded lookup (TEMPMAIL_DOMAINS): each shows the defect
that the guard removes, so the tests here cannot pass for the wrong reason.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .conftest import Images
from .guarded import GuardedStack, guarded_stacks
from .stack import LABELS, RECIPIENT, Stack, base_config, unique_subject, wait_until

pytestmark = pytest.mark.containers

#: A domain that only tempmail's configuration has: Postfix was never told about it.
ONLY_TEMPMAIL = "only-tempmail.test"
#: The last key of a series of lookups (an unknown code).
END_MARK = "fffffff0@example.test"


@pytest.fixture(scope="module")
def make_guarded(docker_images: Images) -> Iterator[Callable[..., GuardedStack]]:
    yield from guarded_stacks(docker_images)


@pytest.fixture(scope="module")
def guarded(make_guarded: Callable[..., GuardedStack]) -> GuardedStack:
    return make_guarded()


def test_main_cf_holds_the_printed_lines(guarded: GuardedStack) -> None:
    """What postconf -n shows in the Postfix container is what postfix-config printed."""
    printed = guarded.postfix_config.splitlines()
    assert printed == [
        "virtual_alias_domains = example.test",
        (
            "virtual_alias_maps = pipemap:{regexp:{{/^([^@]+@example\\.test)$$/ $${1}}}, "
            "socketmap:unix:tempmail/socket:tempmail}"
        ),
        "recipient_delimiter = +",
    ]
    shown = guarded.postfix_exec(
        "postconf -n virtual_alias_domains virtual_alias_maps recipient_delimiter"
    )
    assert sorted(shown.splitlines()) == sorted(printed)


@pytest.mark.parametrize(
    ("spelling", "label"),
    [
        pytest.param(lambda a: a, "as-printed", id="as-printed"),
        pytest.param(str.upper, "upper-case", id="upper-case"),
        pytest.param(lambda a: a.replace("@", "+shop@"), "extension", id="extension"),
    ],
)
def test_mail_is_delivered_through_the_guard(
    guarded: GuardedStack, spelling: Callable[[str], str], label: str
) -> None:
    address = spelling(guarded.address())
    subject = unique_subject(f"guarded-{label}")
    guarded.send(address, subject)
    message = guarded.wait_for_message(subject)
    assert message["Delivered-To"] == RECIPIENT


def test_unknown_codes_are_still_refused(guarded: GuardedStack) -> None:
    result = guarded.rcpt("0123abcd@example.test")
    assert result.code == 550
    assert "User unknown in virtual alias table" in result.text


def widen_to_only_tempmail(stack: Stack) -> str:
    """Give the identity a second domain in tempmail's config only; its address there.

    Postfix then relays for its own networks (permit_mynetworks): a client there may send to
    any domain, which is how the unguarded lookup rewrote mail for a domain Postfix never
    listed.
    """
    config = copy.deepcopy(stack.config)
    identity = config["identities"]["default"]
    identity["domains"] = [identity.pop("domain"), ONLY_TEMPMAIL]
    stack.write_config(config)
    stack.kill_sidecar("SIGHUP")
    address = stack.address().replace("@example.test", f"@{ONLY_TEMPMAIL}")
    wait_until(
        lambda: stack.sidecar_exec(["tempmail", "query", address])[0] == 0,
        what="the sidecar to serve the new domain",
    )
    stack.postfix_exec(
        "postconf -e 'smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination'"
        " && touch -d '10 seconds ago' /etc/postfix/main.cf && postfix reload"
    )
    return address


def test_a_domain_only_in_tempmail_config_is_not_rewritten(
    make_guarded: Callable[..., GuardedStack],
) -> None:
    """Postfix decides which domains are served: the guard does not pass the new domain, so
    Postfix routes the address as it is (here to the error transport, which smtpd refuses at
    RCPT) and a local submission bounces; nothing reaches the owner."""
    stack = make_guarded(base_config())
    address = widen_to_only_tempmail(stack)
    result = stack.rcpt(address)  # from 127.0.0.1: relaying is permitted
    assert result.code == 550
    assert "outbound mail disabled in this container" in result.text
    subject = unique_subject("only-in-tempmail-sendmail")
    stack.sendmail_inside(address, subject)
    wait_until(
        lambda: any(
            f"to=<{address}>" in line and "status=bounced" in line
            for line in stack.postfix_logs().splitlines()
        ),
        what="Postfix to bounce the unrewritten address",
    )
    assert stack.find_message(subject) is None


def test_control_without_the_guard_such_mail_was_rewritten(
    make_stack: Callable[..., Stack],
) -> None:
    """The old hand-written lookup: tempmail is asked about every recipient, and rewrites."""
    stack = make_stack(base_config())
    address = widen_to_only_tempmail(stack)
    assert stack.rcpt(address).code == 250
    subject = unique_subject("only-in-tempmail-unguarded")
    stack.sendmail_inside(address, subject)
    assert stack.wait_for_message(subject)["X-Original-To"] == address


def test_control_without_the_guard_an_outage_defers_local_mail(
    make_stack: Callable[..., Stack],
) -> None:
    """The old hand-written lookup: with the sidecar stopped, user@localhost gets 451 too."""
    stack = make_stack(base_config())
    stack.stop_sidecar()
    try:
        result = stack.rcpt(RECIPIENT)
    finally:
        stack.ensure_sidecar_running()
    assert result.code == 451
    assert "Temporary lookup failure" in result.text


def looked_up(stack: Stack) -> list[str]:
    """The keys the sidecar was asked about (its debug log), in order."""
    return [
        line.split("lookup key=", 1)[1].split(" result=", 1)[0]
        for line in stack.sidecar_logs().splitlines()
        if "lookup key=" in line
    ]


def debug_config() -> dict[str, Any]:
    config = base_config()
    config["server"]["log_level"] = "debug"
    return config


def ask(stack: Stack) -> list[str]:
    """RCPT for an unknown code with an extension and for user@localhost; the keys the
    sidecar was asked meanwhile (a last RCPT marks the end: the log is in order)."""
    assert stack.rcpt("0123abcd+ext@example.test").code == 550
    assert stack.rcpt(RECIPIENT).code == 250
    assert stack.rcpt(END_MARK).code == 550
    wait_until(lambda: END_MARK in looked_up(stack), what="the end mark in the sidecar's log")
    keys = looked_up(stack)
    return keys[: keys.index(END_MARK)]


def test_tempmail_is_asked_only_about_whole_addresses_of_its_domains(
    make_guarded: Callable[..., GuardedStack],
) -> None:
    """Behind the guard, Postfix asks about the whole address, extension included, and
    never about user@localhost."""
    stack = make_guarded(debug_config())
    assert ask(stack) == ["0123abcd+ext@example.test"]


def test_control_without_the_guard_tempmail_is_asked_about_everything(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(debug_config())
    assert "user@localhost" in ask(stack)


def test_the_example_image_refuses_to_start_without_its_lookup(docker_images: Images) -> None:
    """Neither TEMPMAIL_POSTFIX_CONFIG nor the old variables: exit 78 with what to set."""
    container = docker_images.client.containers.create(
        docker_images.postfix, network_mode="none", labels=LABELS
    )
    try:
        container.start()
        status = container.wait(timeout=60)
        output = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert (status["StatusCode"], output) == (
        78,
        (
            "entrypoint.sh: set TEMPMAIL_POSTFIX_CONFIG to what 'tempmail postfix-config "
            "--postfix-socket /var/spool/postfix/tempmail/socket' prints (see docs/containers.md)\n"
        ),
    )


def test_the_old_variables_get_a_warning(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(base_config())
    assert (
        "entrypoint.sh: warning: TEMPMAIL_DOMAINS without TEMPMAIL_POSTFIX_CONFIG: every "
        "recipient is looked up, so a stopped sidecar defers all mail; set "
        "TEMPMAIL_POSTFIX_CONFIG to what 'tempmail postfix-config' prints"
    ) in stack.postfix_logs()
