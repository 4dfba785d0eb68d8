"""Running tempmail servers for the tests, benchmarks and fuzzing: the one way to start one.

* :func:`one_identity` is the config of one standard identity (:data:`IDENTITY`) with a secret
  of the caller's; :func:`write_config` writes a configuration file (TOML, mode 0600) from a dict;
  :func:`serving_config` first puts the socket in a directory of the caller's (a unix socket
  there, or TCP on a port the kernel picks) and, for a process started as root, names the
  current user as ``server.user``.
* :class:`InProcessServers` runs servers in this process, in one event-loop thread (an anyio
  blocking portal), with injectable clocks; each is a :class:`RunningServer`.
* :class:`ServerProcess` runs ``tempmail serve`` as a child process, ready once it logs where
  it listens; its log is read as it comes.
* :class:`Flood` pipelines lookups on one connection without pause: the load beside which
  another client's :func:`lookup_latencies` are measured (fairness).

This package is not in the wheel (the sdist carries it for the tests): pytest
(``pythonpath``) and ``python -m benchmarks.…`` / ``python -m fuzz.…`` from the repository root
import it.
"""

from __future__ import annotations

from harness.configs import IDENTITY, identity, one_identity, serving_config, write_config
from harness.in_process import InProcessServers, RunningServer
from harness.load import Flood, lookup_latencies
from harness.process import PYTHON_M_TEMPMAIL, LaunchError, ServerProcess

__all__ = [
    "IDENTITY",
    "PYTHON_M_TEMPMAIL",
    "Flood",
    "InProcessServers",
    "LaunchError",
    "RunningServer",
    "ServerProcess",
    "identity",
    "lookup_latencies",
    "one_identity",
    "serving_config",
    "write_config",
]
