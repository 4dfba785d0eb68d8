"""The command blocks of README.md that tests run verbatim, so the docs and the tests cannot drift.

A block is marked with an HTML comment (invisible when rendered) on the line right before its
fence, which must be a ``sh`` fence:

    <!-- test: host-install -->
    ```sh
    python3 -m venv /opt/tempmail
    ```

``block("host-install")`` returns the text between the fences, unchanged. Tests run it with
:func:`shell`, i.e. ``bash -euo pipefail -c TEXT``: every line as pasted into a root shell, but
the first failing command fails the block instead of being scrolled past. A malformed marker, a
name used twice or a name that is not in the README raises :class:`ReadmeError` naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"

#: ``<!-- test: NAME -->`` alone on its line; NAME is lower-case words joined by hyphens.
MARKER = re.compile(r"<!--\s*test:\s*(?P<name>[^\s]*)\s*-->")
NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
FENCE = "```"


class ReadmeError(Exception):
    """README.md's markers or fences are not what the tests expect."""


@dataclass(frozen=True, slots=True)
class Block:
    """One marked command block: its name, where it starts in the file, and its text."""

    name: str
    line: int  # 1-based line number of the opening fence
    text: str

    def lines(self) -> list[str]:
        """The block's non-blank lines that are not comments, in order."""
        return [
            line
            for line in self.text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]


def parse(text: str, source: str = "README.md") -> dict[str, Block]:
    """Every marked block of a Markdown text, by name."""
    lines = text.splitlines()
    blocks: dict[str, Block] = {}
    for index, line in enumerate(lines):
        marker = MARKER.fullmatch(line.strip())
        if marker is None:
            if "<!--" in line and "test:" in line:
                raise ReadmeError(f"{source}:{index + 1}: malformed test marker: {line.strip()}")
            continue
        name = marker["name"]
        where = f"{source}:{index + 1}"
        if not NAME.fullmatch(name):
            raise ReadmeError(f"{where}: block name {name!r} is not lower-case-with-hyphens")
        if name in blocks:
            raise ReadmeError(
                f"{where}: block {name!r} is already defined at line {blocks[name].line - 1}"
            )
        if index + 1 >= len(lines) or lines[index + 1].strip() != FENCE + "sh":
            raise ReadmeError(f"{where}: the line after the marker of {name!r} must be ```sh")
        try:
            end = lines.index(FENCE, index + 2)
        except ValueError:
            raise ReadmeError(f"{where}: the block {name!r} is never closed with ```") from None
        body = "\n".join(lines[index + 2 : end])
        if not body.strip():
            raise ReadmeError(f"{where}: the block {name!r} is empty")
        blocks[name] = Block(name, index + 2, body + "\n")
    return blocks


@cache
def blocks() -> dict[str, Block]:
    """Every marked block of this checkout's README.md."""
    return parse(README.read_text(encoding="utf-8"), str(README.name))


def block(name: str) -> Block:
    """The marked block ``name`` of README.md."""
    found = blocks()
    if name not in found:
        raise ReadmeError(f"README.md has no block marked {name!r} (it has: {', '.join(found)})")
    return found[name]


def shell(name: str) -> list[str]:
    """The argv that runs block ``name`` verbatim in bash, stopping at the first failure."""
    return ["bash", "-euo", "pipefail", "-c", block(name).text]
