"""``tempmail serve`` as a child process: what Postfix talks to, with signals and all.

:class:`ServerProcess` starts the command, reads its log (stderr) in a thread as it comes, so
the server never blocks on a full pipe, and is ready when the server logs where it listens
(``listening on unix:PATH, inet:HOST:PORT``): those are its addresses, ports picked by the
kernel included. Leaving the context stops it (SIGTERM, then SIGKILL) and reaps it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

#: ``python -m tempmail`` of this interpreter: the checkout's code in the project's venv.
PYTHON_M_TEMPMAIL: tuple[str, ...] = (sys.executable, "-m", "tempmail")
#: What the server logs once every socket listens; the addresses follow.
READY: re.Pattern[str] = re.compile(r"listening on (?P<addresses>.+)$")
#: Environment variables through which coverage.py measures child processes (patch = subprocess).
COVERAGE_VARIABLES = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


class LaunchError(RuntimeError):
    """The server did not start, or did not log what was awaited in time; carries its log."""


class ServerProcess:
    """``tempmail serve -c CONFIG`` (or another command's) as a child process."""

    def __init__(  # noqa: PLR0913 - each option is a way a test or benchmark starts it
        self,
        config: Path,
        *extra: str,
        command: Sequence[str | Path] = PYTHON_M_TEMPMAIL,
        env: Mapping[str, str] | None = None,
        measured: bool = True,
        open_files: int | None = None,
        pass_fds: Iterable[int] = (),
        new_session: bool = False,
        log_path: Path | None = None,
    ) -> None:
        """Prepare ``COMMAND -c CONFIG serve EXTRA...``; ``with`` (or :meth:`start`) starts it.

        ``env``: the whole environment (default: this process's). ``measured=False`` hides
        coverage.py from the child: a server whose speed a test asserts must not run traced.
        ``open_files``: RLIMIT_NOFILE (soft and hard) of the child alone. ``new_session``: a
        Ctrl-C in the terminal reaches only the caller, which stops the child in its own
        order. ``log_path``: the log is also appended to this file as it comes.
        """
        self.argv = [*(str(part) for part in command), "-c", str(config), "serve", *extra]
        if open_files is not None:
            # The shell sets the limit and execs the server (same pid): no preexec_fn, which
            # is unsafe in a process with threads (the log readers).
            self.argv = ["sh", "-c", f'ulimit -n {open_files} && exec "$@"', "sh", *self.argv]
        self.config = config
        environment = dict(os.environ if env is None else env)
        if not measured:
            for name in COVERAGE_VARIABLES:
                environment.pop(name, None)
        self._env = environment
        self._pass_fds = tuple(pass_fds)
        self._new_session = new_session
        self._log_path = log_path
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None
        self.process: subprocess.Popen[str] | None = None
        self.addresses: list[str] = []

    # --- starting and stopping -----------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Self:
        """Start the server and wait until it listens (:class:`LaunchError` if it does not)."""
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self._env,
            pass_fds=self._pass_fds,
            start_new_session=self._new_session,
        )
        assert self.process.stderr is not None  # noqa: S101 - stderr=PIPE
        self._reader = threading.Thread(
            target=self._read_log, args=(self.process.stderr,), name="server-log", daemon=True
        )
        self._reader.start()
        try:
            found = self.wait_for(READY, timeout=timeout)
        except LaunchError:
            self.stop()
            raise
        self.addresses = [part.split(" ")[0] for part in found["addresses"].split(", ")]
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send ``signum`` (SIGKILL after ``timeout``), reap the process; its exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signum)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout)  # the log ends with the process
        if process.stderr is not None:
            process.stderr.close()
        return process.returncode

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit by itself; its exit status."""
        assert self.process is not None  # noqa: S101 - started
        status = self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return status

    def signal(self, signum: int) -> None:
        """Send a signal, if the process still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    # --- what it says and where it listens -----------------------------------------------------

    @property
    def pid(self) -> int:
        """The process id (started)."""
        assert self.process is not None  # noqa: S101 - started
        return self.process.pid

    @property
    def target(self) -> str:
        """The first address it listens on: ``unix:PATH`` or ``inet:HOST:PORT``."""
        return self.addresses[0]

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process is not None and self.process.poll() is None

    @property
    def log(self) -> str:
        """Everything the server has logged so far."""
        with self._changed:
            return "".join(self._lines)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log (for error messages)."""
        with self._changed:
            return "".join(self._lines[-lines:])

    def count(self, pattern: str | re.Pattern[str]) -> int:
        """How many log lines match ``pattern`` (a regular expression) so far."""
        with self._changed:
            return sum(1 for line in self._lines if re.search(pattern, line))

    def wait_for(
        self, pattern: str | re.Pattern[str], count: int = 1, timeout: float = 10.0
    ) -> re.Match[str]:
        """The match in the ``count``-th log line matching ``pattern``, once it is there."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matches = [m for line in self._lines if (m := re.search(pattern, line))]
                if len(matches) >= count:
                    return matches[count - 1]
                if self._reader is None or not self._reader.is_alive():
                    what = "exited" if self.process is None else f"exited ({self.process.poll()})"
                    raise LaunchError(
                        f"the server {what} before logging {pattern!r}:\n{''.join(self._lines)}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LaunchError(
                        f"the server did not log {pattern!r} within {timeout} s (it says where "
                        "it listens at log level info: not with log_level warning or error):\n"
                        + "".join(self._lines[-40:])
                    )
                self._changed.wait(remaining)

    def _read_log(self, stream: IO[str]) -> None:
        log_file = self._log_path.open("a", encoding="utf-8") if self._log_path else None
        with log_file or contextlib.nullcontext():
            for line in stream:
                if log_file is not None:
                    log_file.write(line)
                    log_file.flush()
                with self._changed:
                    self._lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()  # the end of the log: waiters stop waiting
