"""`tempmail postfix-config` applied to a real Postfix (the example image), and what it changes.

The lines come from the sidecar image and are applied by the Postfix image's entrypoint with
the README's ``xargs -r -d '\\n' postconf -e`` (stack.py). The controls start the same
stack with a bare socketmap lookup instead (no guard, as 1.x documented it): each shows the
defect that the guard removes, so the tests here cannot pass for the wrong reason. The last
tests are the example image's refusals: what it says, and exits with, when its lookup is
missing or would not work.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from helpers import wait_until

from .engine import Images
from .postfix_container import unguarded_lines
from .sending import unique_subject
from .sidecar import DOMAIN, RECIPIENT, base_config, run_container
from .stack import Stack

pytestmark = pytest.mark.containers

#: A domain that only tempmail's configuration has: Postfix was never told about it.
ONLY_TEMPMAIL = "only-tempmail.test"
#: The last key of a series of lookups (an unknown code).
END_MARK = "fffffff0@example.test"
#: The control's lookup: tempmail asked about every recipient.
UNGUARDED = unguarded_lines(DOMAIN)


@pytest.fixture(scope="module")
def guarded(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()


def test_main_cf_holds_the_printed_lines(guarded: Stack) -> None:
    """What postconf -n shows in the Postfix container is what postfix-config printed."""
    printed = guarded.postfix.main_cf_lines.splitlines()
    assert printed == [
        "virtual_alias_domains = example.test",
        (
            "virtual_alias_maps = pipemap:{regexp:{{/^([^@]+@example\\.test)$$/ $${1}}}, "
            "socketmap:unix:tempmail/socket:tempmail}"
        ),
        "recipient_delimiter = +",
    ]
    shown = guarded.postfix.exec(
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
    guarded: Stack, spelling: Callable[[str], str], label: str
) -> None:
    address = spelling(guarded.sidecar.address())
    subject = unique_subject(f"guarded-{label}")
    guarded.smtp.send(address, subject)
    message = guarded.mailbox.wait_for(subject)
    assert message["Delivered-To"] == RECIPIENT


def test_unknown_codes_are_still_refused(guarded: Stack) -> None:
    result = guarded.smtp.rcpt("0123abcd@example.test")
    assert result.code == 550
    assert "User unknown in virtual alias table" in result.text


def widen_to_only_tempmail(stack: Stack) -> str:
    """Give the identity a second domain in tempmail's config only; its address there.

    Postfix then relays for its own networks (permit_mynetworks): a client there may send to
    any domain, which is how the unguarded lookup rewrote mail for a domain Postfix never
    listed.
    """
    config = copy.deepcopy(stack.sidecar.config)
    identity = config["identities"]["default"]
    identity["domains"] = [identity.pop("domain"), ONLY_TEMPMAIL]
    stack.sidecar.write_config(config)
    stack.sidecar.kill("SIGHUP")
    address = stack.sidecar.address().replace("@example.test", f"@{ONLY_TEMPMAIL}")
    wait_until(
        lambda: stack.sidecar.exec(["tempmail", "query", address])[0] == 0,
        what="the sidecar to serve the new domain",
    )
    stack.postfix.reload_with(
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination"
    )
    return address


def test_a_domain_only_in_tempmail_config_is_not_rewritten(
    make_stack: Callable[..., Stack],
) -> None:
    """Postfix decides which domains are served: the guard does not pass the new domain, so
    Postfix routes the address as it is (here to the error transport, which smtpd refuses at
    RCPT) and a local submission bounces; nothing reaches the owner."""
    stack = make_stack(base_config())
    address = widen_to_only_tempmail(stack)
    result = stack.smtp.rcpt(address)  # from 127.0.0.1: relaying is permitted
    assert result.code == 550
    assert "outbound mail disabled in this container" in result.text
    subject = unique_subject("only-in-tempmail-sendmail")
    stack.postfix.sendmail(address, subject)
    wait_until(
        lambda: any(
            f"to=<{address}>" in line and "status=bounced" in line
            for line in stack.postfix.logs().splitlines()
        ),
        what="Postfix to bounce the unrewritten address",
    )
    assert stack.mailbox.find(subject) is None


def test_control_without_the_guard_such_mail_was_rewritten(
    make_stack: Callable[..., Stack],
) -> None:
    """A bare socketmap lookup: tempmail is asked about every recipient, and rewrites."""
    stack = make_stack(base_config(), postfix_lines=UNGUARDED)
    address = widen_to_only_tempmail(stack)
    assert stack.smtp.rcpt(address).code == 250
    subject = unique_subject("only-in-tempmail-unguarded")
    stack.postfix.sendmail(address, subject)
    assert stack.mailbox.wait_for(subject)["X-Original-To"] == address


def test_control_without_the_guard_an_outage_defers_local_mail(
    make_stack: Callable[..., Stack],
) -> None:
    """A bare socketmap lookup: with the sidecar stopped, user@localhost gets 451 too."""
    stack = make_stack(base_config(), postfix_lines=UNGUARDED)
    stack.sidecar.stop()
    try:
        result = stack.smtp.rcpt(RECIPIENT)
    finally:
        stack.sidecar.ensure_running()
    assert result.code == 451
    assert "Temporary lookup failure" in result.text


def looked_up(stack: Stack) -> list[str]:
    """The keys the sidecar was asked about (its debug log), in order."""
    return [
        line.split("lookup key=", 1)[1].split(" result=", 1)[0]
        for line in stack.sidecar.logs().splitlines()
        if "lookup key=" in line
    ]


def debug_config() -> dict[str, Any]:
    config = base_config()
    config["server"]["log_level"] = "debug"
    return config


def ask(stack: Stack) -> list[str]:
    """RCPT for an unknown code with an extension and for user@localhost; the keys the
    sidecar was asked meanwhile (a last RCPT marks the end: the log is in order)."""
    assert stack.smtp.rcpt("0123abcd+ext@example.test").code == 550
    assert stack.smtp.rcpt(RECIPIENT).code == 250
    assert stack.smtp.rcpt(END_MARK).code == 550
    wait_until(lambda: END_MARK in looked_up(stack), what="the end mark in the sidecar's log")
    keys = looked_up(stack)
    return keys[: keys.index(END_MARK)]


def test_tempmail_is_asked_only_about_whole_addresses_of_its_domains(
    make_stack: Callable[..., Stack],
) -> None:
    """Behind the guard, Postfix asks about the whole address, extension included, and
    never about user@localhost."""
    stack = make_stack(debug_config())
    assert ask(stack) == ["0123abcd+ext@example.test"]


def test_control_without_the_guard_tempmail_is_asked_about_everything(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(debug_config(), postfix_lines=UNGUARDED)
    assert "user@localhost" in ask(stack)


def run_postfix_image(images: Images, environment: dict[str, str]) -> tuple[int, str]:
    """The example image started once with ``environment``; its exit status and output."""
    return run_container(
        images.client,
        images.postfix,
        None,
        timeout=60,
        network_mode="none",
        environment=environment,
    )


PRINT = "tempmail postfix-config --postfix-socket /var/spool/postfix/tempmail/socket"


def test_the_example_image_refuses_to_start_without_its_lookup(docker_images: Images) -> None:
    """No TEMPMAIL_POSTFIX_CONFIG: exit 78, and the one line says what to set."""
    assert run_postfix_image(docker_images, {}) == (
        78,
        (
            f"entrypoint.sh: set TEMPMAIL_POSTFIX_CONFIG to what '{PRINT}' prints "
            "(see docs/containers.md)\n"
        ),
    )


def test_the_variables_of_1x_are_refused(docker_images: Images) -> None:
    """TEMPMAIL_DOMAINS (1.x: a lookup without the guard) stops the start, even next to
    TEMPMAIL_POSTFIX_CONFIG: an upgrade notices it instead of running something else."""
    expected = (
        78,
        (
            "entrypoint.sh: TEMPMAIL_DOMAINS, TEMPMAIL_SOCKET and TEMPMAIL_MAP were removed in "
            f"2.0.0: remove them and set TEMPMAIL_POSTFIX_CONFIG to what '{PRINT}' prints (see "
            "docs/containers.md)\n"
        ),
    )
    assert run_postfix_image(docker_images, {"TEMPMAIL_DOMAINS": DOMAIN}) == expected
    both = {"TEMPMAIL_MAP": "tempmail", "TEMPMAIL_POSTFIX_CONFIG": UNGUARDED}
    assert run_postfix_image(docker_images, both) == expected


def test_a_line_postfix_config_never_prints_is_refused(docker_images: Images) -> None:
    """Anything but its three settings (here: what a failed command printed) stops the start."""
    lines = "tempmail: /etc/tempmail/config.toml: No such file or directory\n" + UNGUARDED
    assert run_postfix_image(docker_images, {"TEMPMAIL_POSTFIX_CONFIG": lines}) == (
        78,
        (
            f"entrypoint.sh: TEMPMAIL_POSTFIX_CONFIG has a line that '{PRINT}' does not print: "
            "tempmail: /etc/tempmail/config.toml: No such file or directory\n"
        ),
    )


def test_a_guard_whose_dollars_were_halved_is_refused(guarded: Stack) -> None:
    """The printed lines after compose's or Kubernetes' '$$' -> '$': refused at the start,
    where they would otherwise fail every lookup."""
    halved = guarded.postfix.main_cf_lines.replace("$$", "$")
    assert halved != guarded.postfix.main_cf_lines
    assert run_postfix_image(guarded.images, {"TEMPMAIL_POSTFIX_CONFIG": halved}) == (
        78,
        (
            "entrypoint.sh: TEMPMAIL_POSTFIX_CONFIG: postconf cannot expand virtual_alias_maps "
            "(a '$$' of the printed lines arrived as '$'?): write each '$' of them as '$$' in a "
            "compose file, or pass them from a ConfigMap with valueFrom in Kubernetes (see "
            "docs/containers.md)\n"
        ),
    )
