"""Measurements of a running server.

How fast, how much memory, what timing reveals, and what operator faults cost. Run from the
repository root as modules, e.g. ``python -m benchmarks.run`` (see benchmarks/README.md); the
figures are in docs/benchmarks.md and docs/reliability.md.
"""
