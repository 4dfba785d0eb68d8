"""Dropping root: which user the server becomes, and what it says when it cannot or need not.

The process's identity is faked with monkeypatch (as in test_secret_hygiene): a test must never
switch the test runner's own user.
"""

from __future__ import annotations

import os

import pytest

from tempmail import privileges
from tempmail.errors import ConfigError, ServerError

#: A uid without a passwd entry, as a container's ``--user 54321`` gives.
NAMELESS_UID = 54_321


def _forbidden(*_: object) -> None:
    raise AssertionError("must not change the user")


def test_not_root_a_configured_user_is_ignored_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Started unprivileged the server cannot switch: it says so and keeps its own user."""
    monkeypatch.setattr(os, "geteuid", lambda: NAMELESS_UID)
    monkeypatch.setattr(os, "setuid", _forbidden)
    privileges.drop_privileges("tempmail")
    assert [r.getMessage() for r in caplog.records] == [
        "server.user = 'tempmail' is ignored: the server was not started as root"
    ]


def test_not_root_a_nameless_uid_is_its_own_user(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A uid without a passwd entry (containers) is named by its number: no warning."""
    monkeypatch.setattr(os, "geteuid", lambda: NAMELESS_UID)
    monkeypatch.setattr(os, "setuid", _forbidden)
    privileges.drop_privileges(str(NAMELESS_UID))
    privileges.check_switch("anyone")  # nothing to check without root
    assert caplog.records == []


def test_root_with_a_user_that_does_not_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "setuid", _forbidden)
    for step in (privileges.check_switch, privileges.drop_privileges):
        with pytest.raises(ConfigError) as caught:
            step("no-such-user-for-tempmail")
        assert str(caught.value) == (
            "server.user: no user 'no-such-user-for-tempmail' on this system"
        )


def test_root_that_cannot_switch_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """setuid can fail (a container without CAP_SETUID): one line, exit 71, no traceback."""

    def refuse(_: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "initgroups", lambda *_: None)
    monkeypatch.setattr(os, "setgid", refuse)
    monkeypatch.setattr(os, "setuid", _forbidden)
    with pytest.raises(ServerError) as caught:
        privileges.drop_privileges("nobody")
    assert str(caught.value) == "server.user: cannot switch to 'nobody': Operation not permitted"
    assert caught.value.exit_code == 71
