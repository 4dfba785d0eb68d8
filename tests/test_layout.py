"""The README's "How the code is laid out" names every module of src/ and every folder."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Folders that hold no code of the project: caches, builds, environments.
GENERATED = {"build", "dist", "htmlcov"}


def layout_section() -> str:
    text = (REPO / "README.md").read_text()
    found = re.search(
        r"^## How the code is laid out\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL
    )
    assert found is not None, "README.md has no section 'How the code is laid out'"
    return found[1]


def test_every_module_of_the_package_is_named() -> None:
    section = layout_section()
    package = REPO / "src" / "tempmail"
    modules = sorted(
        path.name
        for path in package.glob("*.py")
        if path.name not in {"__init__.py", "__main__.py"}
    )
    assert [name for name in modules if f"`{name}`" not in section] == []
    subpackages = sorted(path.parent.name for path in package.glob("*/__init__.py"))
    assert [name for name in subpackages if f"`{name}/`" not in section] == []


def test_every_folder_of_the_repository_is_named() -> None:
    """A new folder needs its line; a folder that went away must not keep one."""
    section = layout_section()
    folders = sorted(
        path.name
        for path in REPO.iterdir()
        if path.is_dir()
        and path.name not in GENERATED
        and not path.name.endswith(".egg-info")
        and (not path.name.startswith(".") or path.name == ".ci")
    )
    assert [name for name in folders if f"`{name}/`" not in section] == []
    subpackages = {path.parent.name for path in (REPO / "src" / "tempmail").glob("*/__init__.py")}
    named = set(re.findall(r"`([.\w]+)/`", section)) - subpackages - {"integration"}
    assert sorted(name for name in named if not (REPO / name).is_dir()) == []
