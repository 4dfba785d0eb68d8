"""Coverage-guided fuzzing of the codec, the session, the reply parser and the lookup (atheris).

Usage, from the repository root (see fuzz/README.md)::

    .venv/bin/pip install atheris
    mkdir -p /tmp/tempmail-corpus /tmp/tempmail-findings
    .venv/bin/python -m fuzz.fuzz_codec -runs=1000000 -max_len=4096 \
        -artifact_prefix=/tmp/tempmail-findings/ /tmp/tempmail-corpus fuzz/seeds

libFuzzer options apply (``-runs``, ``-max_total_time``, ``-jobs``); new inputs go to the first
directory, so keep the committed seeds second. A finding is written to ``crash-*`` under
``-artifact_prefix``; replay it with ``.venv/bin/python -m fuzz.fuzz_codec FILE``.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["tempmail"]):
    import tempmail.lookup
    import tempmail.netstring
    import tempmail.session
    import tempmail.socketmap  # noqa: F401 - instrumented for coverage

from fuzz.targets import run_all


def test_one_input(data: bytes) -> None:
    """One fuzzer input through every target."""
    run_all(data)


def main() -> None:
    """Run libFuzzer with the command-line options."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
