"""The README block extractor: what it returns, and each malformed marker it refuses."""

from __future__ import annotations

import pytest

from .readme import Block, ReadmeError, block, blocks, parse

GOOD = """# Title

<!-- test: first-step -->
```sh
apt-get install -y python3-venv   # a comment stays
# a comment line
python3 -m venv /opt/x
```

```sh
not marked: not a test block
```

<!--test:second-->
```sh
echo "$HOME"
```
"""


def test_marked_blocks_are_returned_verbatim() -> None:
    """The text between the fences, unchanged; unmarked fences are ignored."""
    found = parse(GOOD)
    assert list(found) == ["first-step", "second"]
    assert found["first-step"] == Block(
        "first-step",
        4,
        "apt-get install -y python3-venv   # a comment stays\n# a comment line\n"
        "python3 -m venv /opt/x\n",
    )
    assert found["first-step"].lines() == [
        "apt-get install -y python3-venv   # a comment stays",
        "python3 -m venv /opt/x",
    ]
    assert found["second"].text == 'echo "$HOME"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "<!-- test: a -->\n\n```sh\nx\n```\n",
            "README.md:1: the line after the marker of 'a' must be ```sh",
            id="blank-line-between",
        ),
        pytest.param(
            "<!-- test: a -->\n```python\nx\n```\n",
            "README.md:1: the line after the marker of 'a' must be ```sh",
            id="not-sh",
        ),
        pytest.param(
            "<!-- test: a -->\n```sh\nx\n",
            "README.md:1: the block 'a' is never closed with ```",
            id="unclosed",
        ),
        pytest.param(
            "<!-- test: a -->\n```sh\n\n```\n",
            "README.md:1: the block 'a' is empty",
            id="empty",
        ),
        pytest.param(
            "<!-- test: a -->\n```sh\nx\n```\n<!-- test: a -->\n```sh\ny\n```\n",
            "README.md:5: block 'a' is already defined at line 1",
            id="duplicate",
        ),
        pytest.param(
            "<!-- test: Host_Install -->\n```sh\nx\n```\n",
            "README.md:1: block name 'Host_Install' is not lower-case-with-hyphens",
            id="bad-name",
        ),
        pytest.param(
            "<!-- test: a b -->\n```sh\nx\n```\n",
            "README.md:1: malformed test marker: <!-- test: a b -->",
            id="two-words",
        ),
        pytest.param(
            "text <!-- test: a -->\n```sh\nx\n```\n",
            "README.md:1: malformed test marker: text <!-- test: a -->",
            id="not-alone-on-its-line",
        ),
    ],
)
def test_malformed_markers_are_refused_with_the_line(text: str, message: str) -> None:
    """Each mistake names README.md's line, so a docs edit cannot silently drop a test."""
    with pytest.raises(ReadmeError) as caught:
        parse(text)
    assert str(caught.value) == message


def test_an_unknown_name_lists_the_known_ones() -> None:
    """Asking for a block the README does not mark names the ones it does."""
    with pytest.raises(ReadmeError) as caught:
        block("no-such-block")
    assert str(caught.value) == (
        f"README.md has no block marked 'no-such-block' (it has: {', '.join(blocks())})"
    )


def test_the_readme_marks_every_block_the_host_tests_run() -> None:
    """The host and systemd tests' blocks exist in README.md, in the order the README gives."""
    names = list(blocks())
    expected = [
        "host-install",
        "host-user",
        "host-config",
        "host-postfix",
        "host-serve",
        "host-check",
        "host-reload",
        "systemd-install",
        "systemd-reload",
        "systemd-socket",
    ]
    assert [name for name in names if name in expected] == expected
