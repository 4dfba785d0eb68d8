"""Who may search, read or write a path, judged as the kernel judges a daemon's user."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import require_root
from tempmail.access import Account, Permission

#: A uid and a gid that no passwd or group entry names, so their names are the numbers.
UID, GID = 54_321, 54_322
#: A user who is neither the owner nor in the group of the tree below: "others".
STRANGER = Account("stranger", 54_400, 54_400, frozenset({54_400}))


@pytest.fixture
def tree(short_dir: Path) -> Path:
    """``top/file``: top is 0751 and owned by UID:GID, file 0640 (root only changes owners)."""
    require_root()
    short_dir.chmod(0o755)  # /tmp and this directory let everyone pass
    top = short_dir / "top"
    top.mkdir(mode=0o751)
    (top / "file").write_text("x")
    os.chown(top, UID, GID)
    os.chown(top / "file", UID, GID)
    top.chmod(0o751)
    (top / "file").chmod(0o640)
    return top


def test_an_unknown_user_is_no_account() -> None:
    assert Account.named("no-such-user-for-tempmail") is None


def test_root_may_do_everything(tree: Path) -> None:
    """Root is never denied, not even a path that does not exist (the kernel decides then)."""
    root = Account.named("0")
    assert root is not None
    assert root.uid == 0
    assert root.denied(tree / "missing", Permission.WRITE) is None


def test_the_owner_bits_apply_to_the_owner(tree: Path) -> None:
    owner = Account("owner", UID, UID, frozenset({UID}))
    assert owner.denied(tree / "file", Permission.WRITE) is None
    denied = owner.denied(tree / "file", Permission.SEARCH)
    assert str(denied) == f"owner may not enter {tree}/file (mode 0640, owner {UID}:{GID})"


def test_the_group_bits_apply_to_members_of_the_group(tree: Path) -> None:
    member = Account("member", 54_401, 54_401, frozenset({54_401, GID}))
    assert member.denied(tree / "file", Permission.READ) is None
    denied = member.denied(tree / "file", Permission.WRITE)
    assert str(denied) == f"member may not write to {tree}/file (mode 0640, owner {UID}:{GID})"


def test_the_other_bits_apply_to_everyone_else(tree: Path) -> None:
    """Others may pass through top (x) but not list it, and not read the file."""
    assert STRANGER.denied(tree, Permission.SEARCH) is None
    assert str(STRANGER.denied(tree, Permission.READ)) == (
        f"stranger may not read {tree} (mode 0751, owner {UID}:{GID})"
    )
    assert str(STRANGER.denied(tree / "file", Permission.READ)) == (
        f"stranger may not read {tree}/file (mode 0640, owner {UID}:{GID})"
    )


def test_every_directory_on_the_way_must_be_searchable(tree: Path) -> None:
    """A closed directory stops the user before the path itself is looked at."""
    tree.chmod(0o750)
    assert str(STRANGER.denied(tree / "file", Permission.READ)) == (
        f"stranger may not enter {tree} (mode 0750, owner {UID}:{GID})"
    )


def test_a_path_that_cannot_be_examined_says_why(tree: Path) -> None:
    denied = STRANGER.denied(tree / "missing", Permission.READ)
    assert denied is not None
    assert denied.info is None
    assert str(denied) == f"{tree}/missing: No such file or directory"
