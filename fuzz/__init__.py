"""Fuzzing: random and coverage-guided inputs.

To the codec, the session, the reply parser, the lookup and a live server. Run from the
repository root as modules, e.g. ``python -m fuzz.random_fuzz`` (see fuzz/README.md).
"""
