"""The Secret type and secret files: values compared in constant time, files read with care."""

from __future__ import annotations

from pathlib import Path

import pytest

from tempmail.secret import MAX_SECRET_FILE, Permissions, Secret, read_secret_file


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^a secret must not be empty$"):
        Secret(b"")


def test_secrets_are_equal_by_value_and_hash_alike() -> None:
    """Equal values are equal secrets (a set keeps one); a secret never equals its bytes."""
    assert Secret(b"one") == Secret(b"one")
    assert Secret(b"one") != Secret(b"two")
    assert Secret(b"one") != b"one"
    assert len({Secret(b"one"), Secret(b"one"), Secret(b"two")}) == 2


def test_a_path_with_a_nul_is_named_plainly(tmp_path: Path) -> None:
    """os.open's own message for it is odd; the path itself is never shown (it may be a secret)."""
    with pytest.raises(ValueError, match="secret") as caught:
        read_secret_file(tmp_path / "a\0b", Permissions.PRIVATE)
    assert str(caught.value) == "cannot read the secret file: the path holds a NUL character"


def test_a_secret_file_over_64_kib_is_refused(tmp_path: Path) -> None:
    """One secret per file: anything that large is a mistake (a key ring, a log), not read on."""
    path = tmp_path / "secret"
    path.write_bytes(b"s" * (MAX_SECRET_FILE + 1))
    path.chmod(0o600)
    with pytest.raises(ValueError, match="secret") as caught:
        read_secret_file(path, Permissions.PRIVATE)
    assert str(caught.value) == (
        "the secret file is larger than 64 KiB; a secret file holds one secret"
    )


def test_a_secret_file_of_exactly_64_kib_is_read(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"s" * MAX_SECRET_FILE)
    path.chmod(0o600)
    assert read_secret_file(path, Permissions.PRIVATE) == Secret(b"s" * MAX_SECRET_FILE)
