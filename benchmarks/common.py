"""Shared plumbing for the benchmarks: configs, key files, processes, /proc readings, smload.

The servers run as separate processes, started by the repository's harness (the C floor and
smload by :class:`Process`); the valid addresses come from ``tempmail address``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Protocol, Self

from harness import ServerProcess, one_identity, serving_config
from harness import write_config as write_config_file
from tempmail.client import Client
from tempmail.errors import ProtocolError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO_DIR: Final = BENCH_DIR.parent
RESULTS_DIR: Final = BENCH_DIR / "results"
EXPERIMENT_SERVER: Final = BENCH_DIR / "experiments" / "serve.py"
#: The interpreter that runs the benchmark also runs the server (the project's venv).
PYTHON: Final = sys.executable
TEMPMAIL: Final = str(Path(sys.executable).with_name("tempmail"))

MAP_NAME: Final = "tempmail"
DOMAIN: Final = "example.org"
RECIPIENT: Final = "owner@example.net"
SECRET: Final = "a long benchmark secret value 0123456789"  # noqa: S105 - test data
#: Unknown keys: our domain in mixed case, so every one is lower-cased, hashed and probed,
#: the most expensive NOTFOUND path (a foreign domain is rejected before hashing).
INVALID_TEMPLATE: Final = "Nx-{}@Example.org"
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")

#: A realistic one-identity config (hmac, md5 accepted); the socket is filled in per server.
CONFIG: Final[dict[str, Any]] = {
    "server": {"max_connections": 2000, "idle_timeout": 60.0, "log_level": "info"},
    "socket": {"mode": "0660"},
    **one_identity(SECRET, domain=DOMAIN, recipient=RECIPIENT),
}


class BenchError(RuntimeError):
    """A benchmark could not run (a server did not start, smload failed, ...)."""


# --- files ----------------------------------------------------------------------------------


def write_config(directory: Path, name: str) -> Path:
    """A 0600 config (it holds an inline secret) whose socket is ``directory/name.sock``."""
    data = serving_config(CONFIG, directory, name, as_process=True)
    return write_config_file(directory / f"{name}.toml", data)


def socket_of(config: Path) -> Path:
    """The socket path written into ``config`` by :func:`write_config`."""
    return config.with_suffix(".sock")


def current_codes(config: Path) -> list[str]:
    """The valid addresses now, today's first, as ``tempmail address`` prints them."""
    out = subprocess.run(
        [TEMPMAIL, "--config", str(config), "address", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [row["address"] for row in json.loads(out)]


def key_variants(address: str) -> list[str]:
    """How one valid address reaches the server: case as typed by senders, with extensions."""
    local, _, domain = address.partition("@")
    return [
        address,
        f"{local.upper()}@{domain.upper()}",
        f"{local}@{domain.title()}",
        f"{local}+news@{domain}",
        f"{local.upper()}+Shop-2024@{domain.title()}",
    ]


def write_keys(directory: Path, addresses: Sequence[str], name: str = "keys") -> tuple[Path, Path]:
    """Two key files with the same keys: with the expected class (OK) and without (floor).

    The floor answers everything with OK, so it gets no expectations; the request bytes, and
    with smload's fixed seed the interleaved unknown keys, are identical for both servers.
    """
    keys = [variant for address in addresses for variant in key_variants(address)]
    expected = directory / f"{name}.expect.txt"
    plain = directory / f"{name}.txt"
    expected.write_text("".join(f"{k}\tOK\n" for k in keys), encoding="ascii")
    plain.write_text("".join(f"{k}\n" for k in keys), encoding="ascii")
    return expected, plain


# --- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU time of a process (all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return utime / CLK_TCK, stime / CLK_TCK


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [
        int(x) for x in Path("/proc/stat").read_text(encoding="ascii").split("\n")[0].split()[1:]
    ]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already included in user/nice
    return (total - idle) / CLK_TCK, total / CLK_TCK


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text(encoding="ascii").split()[:3])


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    versions = {}
    for package in ("anyio", "uvloop", "tempmail"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "load_average_start": load_average(),
    }


# --- processes ------------------------------------------------------------------------------


class Child(Protocol):
    """What the benchmarks do with a server process: a :class:`Process` or a ServerProcess."""

    @property
    def pid(self) -> int:
        """The process id (started)."""
        ...

    def alive(self) -> bool:
        """Whether it still runs."""
        ...

    def signal(self, signum: int) -> None:
        """Send a signal if it still runs."""
        ...

    def log_tail(self, lines: int = 20) -> str:
        """The last lines it logged (for error messages)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class Process:
    """A child process (the floor server, smload), terminated by pid when the context ends."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        stdout_path: Path | None = None,
        env: dict[str, str] | None = None,
        ready_socket: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self._ready_socket = ready_socket  # entering waits until this unix socket accepts
        self.log_path = log_path
        self.stdout_path = stdout_path  # None: stdout goes to the log with stderr
        self._env = env
        self._files: list[IO[bytes]] = []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process id (the process must be running)."""
        assert self.proc is not None  # noqa: S101 - started in __enter__
        return self.proc.pid

    def __enter__(self) -> Self:
        log = self.log_path.open("ab")
        out = self.stdout_path.open("wb") if self.stdout_path else log
        self._files = [log, out]
        # A new session: a Ctrl-C in the terminal reaches only us, and we stop the children in
        # order (server after its client) instead of having them die mid-measurement.
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=log,
            env=self._env,
            start_new_session=True,
        )
        if self._ready_socket is not None:
            wait_for_socket(self._ready_socket, self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        """Send a signal if the process is still running."""
        if self.alive():
            self.proc.send_signal(signum)  # type: ignore[union-attr]

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for file in self._files:
            file.close()
        self._files = []
        return proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the process wrote (for error messages)."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def wait_for_socket(path: Path, process: Process, timeout: float = 15.0) -> None:
    """Wait until something accepts connections on the unix socket ``path``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise BenchError(f"{process.argv[0]} exited early:\n{process.log_tail()}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(0.02)
                continue
            return
    raise BenchError(f"no server on {path} after {timeout} s:\n{process.log_tail()}")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into KeyboardInterrupt, so every ``finally`` stops its children.

    SIGINT explicitly too: a shell starts background jobs with SIGINT ignored.
    """

    def handler(signum: int, frame: object) -> None:
        del signum, frame
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    """A private temporary directory under /tmp (kept with ``keep`` for post-mortems)."""
    path = Path(tempfile.mkdtemp(prefix="tempmail-bench-", dir="/tmp"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


#: Servers the benchmark can start. "floor" is always run: every ratio is relative to it.
#: The others are tempmail's own code; the experiments run benchmarks/experiments/serve.py.
SERVERS: Final = {
    "tempmail": "tempmail serve (the product: anyio structure, a protocol per connection, uvloop)",
    "asyncio": "the same Server on asyncio's own loop instead of uvloop",
    "protocol": "asyncio Protocol over the same Session (experiment: no idle timeout, no cap)",
    "protocol-uvloop": "protocol on uvloop (experiment)",
    "bufproto": "protocol as an asyncio BufferedProtocol: recv_into, no allocation per read",
    "bufproto-uvloop": "bufproto on uvloop (experiment)",
}


def server_process(  # noqa: PLR0913 - what differs between the servers of a run
    name: str,
    config: Path,
    floor: Path,
    log: Path,
    python: str = PYTHON,
    *,
    extra: Sequence[str] = (),
) -> Child:
    """The server ``name`` on the socket of ``config`` (not started yet: use ``with``).

    Every tempmail server starts through the harness and is ready once it logs that it
    listens; the floor is a C program, ready once its socket accepts. Another
    interpreter (``--python``, e.g. a 3.12 venv with anyio and uvloop) imports tempmail from
    this checkout's src/ through PYTHONPATH: nothing is installed into it.
    """
    if name == "floor":
        reply = f"OK {RECIPIENT}"  # same length as tempmail's OK reply
        argv = [str(floor), "-l", f"unix:{socket_of(config)}", "-r", reply]
        return Process(argv, log, ready_socket=socket_of(config))
    env = None
    if python != PYTHON:
        env = {**os.environ, "PYTHONPATH": str(REPO_DIR / "src")}
    if name == "tempmail":
        command = [TEMPMAIL] if python == PYTHON else [python, "-m", "tempmail"]
    else:  # experiments/serve.py IMPL[-LOOP], e.g. "protocol-uvloop"; "asyncio": Server on it
        impl, _, loop = name.partition("-")
        if name in ("asyncio", "uvloop"):
            impl, loop = "server", name
        command = [python, str(EXPERIMENT_SERVER), "--impl", impl, "--loop", loop or "asyncio"]
    # Speed is what is measured: never traced by coverage; a Ctrl-C reaches only this process.
    return ServerProcess(
        config, *extra, command=command, env=env, measured=False, new_session=True, log_path=log
    )


def python_version(python: str) -> str:
    """The version of the interpreter ``python``."""
    code = "import platform; print(platform.python_version())"
    return subprocess.run(
        [python, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()


# --- smload ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """smload parameters shared by the floor and the server under test."""

    conns: int
    depth: int = 1
    reconnect: bool = False
    warmup: float = 1.0
    duration: float = 5.0
    invalid_ratio: float = 0.5

    def argv(self, smload: Path, sock: Path, keys: Path, *, expect: bool) -> list[str]:
        """The smload command line; ``expect`` adds the expected class of unknown keys."""
        argv = [str(smload), "-t", f"unix:{sock}", "-m", MAP_NAME, "-k", str(keys)]
        argv += ["-c", str(self.conns), "-p", str(self.depth)]
        argv += ["-w", str(self.warmup), "-d", str(self.duration)]
        if self.invalid_ratio > 0:
            argv += ["-i", str(self.invalid_ratio), "--invalid-template", INVALID_TEMPLATE]
            if expect:
                argv += ["--invalid-expect", "NOTFOUND"]
        if self.reconnect:
            argv.append("-r")
        return argv


@dataclass(slots=True)
class Measurement:
    """One smload run against one server, with the server's CPU over the measured window."""

    server: str
    smload: dict[str, Any]
    server_user_pct: float  # % of one core, in user mode (Python, the interpreter)
    server_sys_pct: float  # % of one core, in the kernel (syscalls: send, recv, epoll...)
    machine_cpu_pct: float  # whole machine, % of one core (so up to nproc * 100)
    server_rss_kb: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lookups_per_s(self) -> float:
        """Replies per second in the measured window."""
        return float(self.smload["lookups_per_s"])

    @property
    def server_cpu_pct(self) -> float:
        """User + system CPU of the server, % of one core."""
        return self.server_user_pct + self.server_sys_pct

    @property
    def cpu_us_per_lookup(self) -> float:
        """Server CPU time per answered lookup, in microseconds."""
        rate = self.lookups_per_s
        return self.server_cpu_pct / 100 / rate * 1e6 if rate else float("nan")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "server": self.server,
            "server_cpu_pct": round(self.server_cpu_pct, 1),
            "server_user_pct": round(self.server_user_pct, 1),
            "server_sys_pct": round(self.server_sys_pct, 1),
            "machine_cpu_pct": round(self.machine_cpu_pct, 1),
            "server_rss_kb": self.server_rss_kb,
            "cpu_us_per_lookup": round(self.cpu_us_per_lookup, 2),
            "smload": self.smload,
            **self.extra,
        }


def run_smload(
    argv: Sequence[str], server_pid: int, load: Load, log_path: Path, label: str
) -> tuple[dict[str, Any], tuple[float, float], float]:
    """Run smload; return its JSON, the server's (user, system) CPU % and the machine's CPU %.

    CPU is sampled from /proc at the start and the end of smload's measured window (after its
    warm-up), so connection set-up and the final drain are left out, as in smload's own figures.
    """
    out_path = log_path.with_suffix(".json")
    with Process([*argv, "-l", label], log_path, stdout_path=out_path) as smload:
        time.sleep(load.warmup)
        cpu0, (busy0, _) = cpu_seconds(server_pid), machine_busy()
        t0 = time.monotonic()
        time.sleep(load.duration)
        cpu1, (busy1, _) = cpu_seconds(server_pid), machine_busy()
        elapsed = time.monotonic() - t0
        assert smload.proc is not None  # noqa: S101 - started by the context manager
        try:
            smload.proc.wait(timeout=load.duration + 30)
        except subprocess.TimeoutExpired:
            raise BenchError(f"smload did not finish: {' '.join(argv)}") from None
        if smload.proc.returncode not in (0, 1):  # 1: the run had errors, still JSON
            raise BenchError(f"smload failed ({smload.proc.returncode}):\n{smload.log_tail()}")
    try:
        result: dict[str, Any] = json.loads(out_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise BenchError(f"no smload JSON in {out_path}:\n{smload.log_tail()}") from None
    server_pct = ((cpu1[0] - cpu0[0]) / elapsed * 100, (cpu1[1] - cpu0[1]) / elapsed * 100)
    machine_pct = (busy1 - busy0) / elapsed * 100
    return result, server_pct, machine_pct


def median(values: Sequence[float]) -> float:
    """The median (NaN for no values)."""
    return statistics.median(values) if values else float("nan")


# --- latency probe --------------------------------------------------------------------------


class LatencyProbe:
    """One extra connection doing a lookup every ``interval`` s, each one timed on its own.

    smload reports distributions for the whole window; to tell whether a slow lookup happened
    right after a SIGHUP or at midnight we need every lookup's start time. The probe runs in a
    thread of this (otherwise sleeping) process; its own jitter is in the figures, so they
    are an upper bound, and the same probe runs in the baseline.
    """

    def __init__(self, sock_path: Path, key: str, interval: float = 0.002) -> None:
        self._key = key
        self._sock_path = sock_path
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-probe", daemon=True)
        self.samples: list[tuple[float, float]] = []  # (monotonic start, seconds)
        self.error: BaseException | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            with Client(f"unix:{self._sock_path}", timeout=10) as client:
                while not self._stop.is_set():
                    start = time.monotonic()
                    client.query(MAP_NAME, self._key)
                    self.samples.append((start, time.monotonic() - start))
                    self._stop.wait(self._interval)
        except (OSError, ProtocolError) as exc:
            self.error = exc

    def around(
        self, events: Sequence[float], before: float = 0.005, after: float = 0.1
    ) -> dict[str, Any]:
        """Probe latencies starting within [event - before, event + after] vs all the others."""
        near: list[float] = []
        far: list[float] = []
        for start, seconds in self.samples:
            hit = any(e - before <= start <= e + after for e in events)
            (near if hit else far).append(seconds * 1e6)
        far.sort()
        return {
            "probes": len(self.samples),
            "events": len(events),
            "near_max_us": round(max(near)) if near else None,
            "near_over_10ms": len([x for x in near if x > 10_000]),
            "other_max_us": round(far[-1]) if far else None,
            "other_p999_us": round(far[int(0.999 * (len(far) - 1))]) if far else None,
            "other_over_10ms": len([x for x in far if x > 10_000]),
            "error": str(self.error) if self.error else None,
        }
