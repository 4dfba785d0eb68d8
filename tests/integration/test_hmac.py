"""An hmac identity that still accepts md5 addresses, with Postfix started before the sidecar."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .postfix_container import POSTFIX_SOCKET_DIR
from .sending import unique_subject
from .sidecar import base_config
from .stack import Stack

pytestmark = pytest.mark.containers


@pytest.fixture(scope="module")
def hmac_stack(make_stack: Callable[..., Stack]) -> Stack:
    # Europe/Berlin: the image must carry time zone data (the tzdata wheel).
    config = base_config(scheme="hmac", accept=["hmac", "md5"], timezone="Europe/Berlin")
    return make_stack(config, order="postfix-first")


@pytest.mark.parametrize("scheme", ["hmac", "md5"])
@pytest.mark.parametrize("days_ago", [0, 1], ids=["today", "yesterday"])
def test_both_schemes_are_delivered(hmac_stack: Stack, scheme: str, days_ago: int) -> None:
    address = hmac_stack.sidecar.address(days_ago, scheme=scheme)
    assert hmac_stack.smtp.rcpt(address).code == 250
    subject = unique_subject(f"{scheme}-{days_ago}")
    hmac_stack.smtp.send(address, subject)
    assert hmac_stack.mailbox.wait_for(subject)["X-Original-To"] == address


def test_hmac_and_md5_codes_differ(hmac_stack: Stack) -> None:
    assert hmac_stack.sidecar.address(scheme="hmac") != hmac_stack.sidecar.address(scheme="md5")


@pytest.mark.parametrize("scheme", ["hmac", "md5"])
def test_day_before_yesterday_is_refused(hmac_stack: Stack, scheme: str) -> None:
    assert hmac_stack.smtp.rcpt(hmac_stack.sidecar.address(2, scheme=scheme)).code == 550


def test_socket_permissions_hold_when_postfix_starts_first(hmac_stack: Stack) -> None:
    listing = hmac_stack.postfix.exec(
        f"stat -c '%u:%g %a' {POSTFIX_SOCKET_DIR} {POSTFIX_SOCKET_DIR}/socket"
    )
    assert listing.split("\n")[:2] == ["10001:10001 750", "10001:10001 660"]
