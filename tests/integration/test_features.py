"""Issue 6 through real Postfix: tagged addresses, key rotation, several identities."""

from __future__ import annotations

import contextlib
import copy
import secrets
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import docker
import pytest

from helpers import wait_until

from .addresses import address_of, wait_past_utc_midnight
from .mailbox import MAILDIR, Mailbox, subject_counts
from .postfix_container import sendmail_in
from .sending import unique_subject
from .sidecar import RECIPIENT, SECRET_DIR, base_config, base_identity
from .stack import Stack

pytestmark = pytest.mark.containers


@pytest.fixture(autouse=True)
def _not_at_midnight() -> None:
    """The tests compare addresses computed here and in the sidecar: not across midnight."""
    wait_past_utc_midnight(margin=60)


def today(stack: Stack, tag: str | None = None, name: str = "default") -> str:
    return stack.sidecar.address(tag=tag, identity=name)


def sidecar_addresses(stack: Stack, *args: str) -> list[str]:
    """What ``tempmail address ARGS`` prints inside the sidecar (today's first)."""
    code, output = stack.sidecar.exec(["tempmail", "address", *args])
    assert code == 0, output
    return [line for line in output.splitlines() if "@" in line and " " not in line]


def deliver(stack: Stack, address: str, label: str, maildir: str = MAILDIR) -> EmailMessage:
    """RCPT 250, then the message arrives in ``maildir``; returns it."""
    result = stack.smtp.rcpt(address)
    assert result.code == 250, (address, result)
    subject = unique_subject(label)
    stack.smtp.send(address, subject)
    return Mailbox(stack.postfix.docker, maildir).wait_for(subject)


def with_identity(data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of a config with keys of the default identity changed (None removes a key)."""
    new = copy.deepcopy(data)
    table = new["identities"]["default"]
    for key, value in changes.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return new


# --- tagged addresses -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tag_stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(base_config(scheme="hmac", tags=True))


def test_tagged_address_is_delivered_with_the_tag_as_extension(tag_stack: Stack) -> None:
    address = sidecar_addresses(tag_stack, "--tag", "shop")[0]
    assert address == today(tag_stack, tag="shop")
    assert address.startswith("shop.")
    message = deliver(tag_stack, address, "tag-shop")
    # local(8) delivers user+shop to user's Maildir and writes the extension in Delivered-To.
    print(f"\ntagged: {address} -> Delivered-To: {message['Delivered-To']}")
    assert message["Delivered-To"] == "user+shop@localhost"
    assert message["X-Original-To"] == address
    assert f"orig_to=<{address}>" in tag_stack.postfix.logs()


@pytest.mark.parametrize(
    "make_address",
    [
        # (a is the local part shop.CODE)
        pytest.param(lambda a: a[:-2] + ("00" if a[-2:] != "00" else "11"), id="wrong-code"),
        pytest.param(lambda a: "news." + a.removeprefix("shop."), id="code-of-another-tag"),
        pytest.param(lambda a: a.replace("shop.", "", 1), id="tagged-code-without-tag"),
    ],
)
def test_tagged_address_with_a_wrong_code_is_refused(
    tag_stack: Stack, make_address: Callable[[str], str]
) -> None:
    local, domain = today(tag_stack, tag="shop").split("@")
    bad = make_address(local) + "@" + domain
    result = tag_stack.smtp.rcpt(bad)
    assert result.code == 550, (bad, result)
    assert "User unknown in virtual alias table" in result.text


def test_revoked_tag_is_refused_after_a_reload(tag_stack: Stack) -> None:
    shop, news = today(tag_stack, tag="shop"), today(tag_stack, tag="news")
    untagged = today(tag_stack)
    original = copy.deepcopy(tag_stack.sidecar.config)
    assert tag_stack.smtp.rcpt(shop).code == 250
    tag_stack.sidecar.write_config(with_identity(original, revoked_tags=["shop"]))
    tag_stack.sidecar.reload_and_wait()
    try:
        result = tag_stack.smtp.rcpt(shop)
        assert result.code == 550, result
        assert "User unknown in virtual alias table" in result.text
        # Only that tag: other tags and untagged addresses still arrive.
        assert deliver(tag_stack, news, "tag-news")["Delivered-To"] == "user+news@localhost"
        assert deliver(tag_stack, untagged, "untagged")["Delivered-To"] == RECIPIENT
    finally:
        tag_stack.sidecar.write_config(original)
        tag_stack.sidecar.reload_and_wait()
    assert tag_stack.smtp.rcpt(shop).code == 250  # un-revoked


# --- key rotation ---------------------------------------------------------------------------


@pytest.fixture
def rotation_stack(make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    stack = make_stack(base_config(scheme="hmac"))
    yield stack
    stack.close()  # now rather than at the end of the module (closing twice is harmless)


def rotate_to(stack: Stack, new: str, old: str, how: str) -> dict[str, Any]:
    """A config generating with ``new`` and still accepting ``old`` (both secrets' text)."""
    if how == "previous_secrets":  # inline, in a config file only uid 10001 may read
        return with_identity(
            stack.sidecar.config, secret_file=None, secret=new, previous_secrets=[old]
        )
    return with_identity(
        stack.sidecar.config,
        secret_file=stack.sidecar.write_secret("secret-b", new),
        previous_secret_files=[f"{SECRET_DIR}/secret"],
    )


def apply(stack: Stack, data: dict[str, Any], how: str) -> None:
    if how == "previous_secrets":
        stack.sidecar.write_private_config(data)
    else:
        stack.sidecar.write_config(data)
    stack.sidecar.reload_and_wait()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["previous_secrets", "previous_secret_files"])
def test_key_rotation_loses_no_mail(rotation_stack: Stack, how: str) -> None:
    stack = rotation_stack
    table = stack.sidecar.config["identities"]["default"]
    secret_a, secret_b = stack.sidecar.secret, secrets.token_urlsafe(32)
    address_a, address_b = address_of(table, secret_a), address_of(table, secret_b)
    assert sidecar_addresses(stack)[0] == address_a
    deliver(stack, address_a, "rotation-a-before")
    assert stack.smtp.rcpt(address_b).code == 550

    # Mail for A's address keeps coming in (SMTP and sendmail) before, while and after the
    # key changes.
    during: list[str] = []
    errors: list[BaseException] = []
    rotated = threading.Event()

    def traffic() -> None:
        try:
            with contextlib.closing(docker.from_env()) as client:  # not the main thread's
                postfix = client.containers.get(stack.postfix.name)
                i = after = 0
                while after < 4:
                    after += rotated.is_set()
                    subject = unique_subject(f"rotation-during-{i}")
                    if i % 2:
                        sendmail_in(postfix, address_a, subject)
                    else:
                        stack.smtp.send_until_accepted(address_a, subject)
                    during.append(subject)
                    i += 1
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    sender = threading.Thread(target=traffic, name="rotation-traffic", daemon=True)
    sender.start()
    wait_until(lambda: len(during) >= 2 or errors, what="traffic before the rotation")
    apply(stack, rotate_to(stack, secret_b, secret_a, how), how)
    rotated.set()
    sender.join(timeout=60)
    assert not errors, errors

    # Both keys now: B generates, A is still accepted.
    assert sidecar_addresses(stack)[0] == address_b
    assert sidecar_addresses(stack) == [
        address_of(table, secret_b, days_ago=d) for d in range(table["window"])
    ]
    deliver(stack, address_a, "rotation-a-after")
    deliver(stack, address_b, "rotation-b-after")

    # After the window: A is dropped.
    dropped = with_identity(stack.sidecar.config, previous_secrets=None, previous_secret_files=None)
    apply(stack, dropped, how)
    assert stack.smtp.rcpt(address_a).code == 550
    deliver(stack, address_b, "rotation-b-only")

    stack.postfix.flush()
    wait_until(
        lambda: all(subject_counts(stack.mailbox.messages())[s] for s in during),
        what="the mail sent during the rotation",
    )
    counts = subject_counts(stack.mailbox.messages())
    print(f"\nkey rotation ({how}): {len(during)} messages to A's address during the switch")
    assert [s for s in during if counts[s] != 1] == []
    assert "status=bounced" not in stack.postfix.logs()


# --- several identities ---------------------------------------------------------------------

ROOT_MAILDIR = "/root/Maildir"


@pytest.fixture(scope="module")
def two_identities(make_stack: Callable[..., Stack]) -> Stack:
    """Alice (md5, example.test -> user@localhost) and Bob (hmac, example.org -> root@localhost)."""
    config = base_config()
    config["identities"]["bob"] = base_identity(
        domain="example.org",
        recipient="root@localhost",
        secret_file=f"{SECRET_DIR}/secret-bob",
        scheme="hmac",
    )
    return make_stack(config, extra_secrets={"secret-bob": secrets.token_urlsafe(32)})


def bob(stack: Stack) -> str:
    return stack.sidecar.address(identity="bob")


def test_each_identity_is_delivered_to_its_own_recipient(two_identities: Stack) -> None:
    stack = two_identities
    alice_address, bob_address = today(stack), bob(stack)
    assert sidecar_addresses(stack, "--identity", "bob")[0] == bob_address
    alice_mail = deliver(stack, alice_address, "identity-alice", MAILDIR)
    bob_mail = deliver(stack, bob_address, "identity-bob", ROOT_MAILDIR)
    assert alice_mail["Delivered-To"] == RECIPIENT
    assert bob_mail["Delivered-To"] == "root@localhost"
    assert bob_mail["X-Original-To"] == bob_address
    # Neither lands in the other's Maildir.
    for maildir, other in ((MAILDIR, bob_mail), (ROOT_MAILDIR, alice_mail)):
        assert other["Subject"] not in subject_counts(
            Mailbox(stack.postfix.docker, maildir).messages()
        )
    code, output = stack.sidecar.exec(["tempmail", "query", "--self-test"])
    assert (code, output) == (0, "self-test passed: 2 identities OK (configuration generation 1)\n")


def test_an_identity_code_is_not_valid_at_the_other_identity_domain(
    two_identities: Stack,
) -> None:
    stack = two_identities
    alice_code = today(stack).split("@")[0]
    bob_code = bob(stack).split("@")[0]
    for address in (f"{alice_code}@example.org", f"{bob_code}@example.test"):
        result = stack.smtp.rcpt(address)
        assert result.code == 550, (address, result)
