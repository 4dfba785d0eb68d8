"""The non-throughput targets of issue 4: startup, memory, reload and day-rollover stalls.

Run by benchmarks/run.py (unless --skip-extras); on its own:

    .venv/bin/python -m benchmarks.extras [--smload PATH | --shared-bench DIR]

* startup: wall time of the whole ``tempmail --config FILE address`` process (median of N),
  next to a bare ``python -c pass`` of the same interpreter, plus the slowest imports;
* memory: VmRSS of ``tempmail serve`` idle, then with N open connections that each made one
  lookup (held open, idle), from /proc/PID/status;
* reload: smload against ``tempmail serve`` while it gets a SIGHUP every few tens of ms (>= 100
  reloads), next to the same run without signals: the worst latency and p99.9 show any stall;
  the log gives each reload's duration (SIGHUP received -> reloaded, ms resolution);
* rollover: (a) in-process cost of building the day's table (``AddressTable``), which is what
  the first lookup after local midnight does, for the benchmark config and a large one;
  (b) end to end: the server with its clock shifted (benchmarks/experiments/serve.py
  --midnight-at) so that midnight passes in the middle of an smload run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from benchmarks import common
from tempmail import config as config_module
from tempmail import generate, socketmap
from tempmail.client import Client
from tempmail.handler import Handler
from tempmail.lookup import AddressTable

if TYPE_CHECKING:
    from collections.abc import Sequence

#: A log line's timestamp, as tempmail.logs writes it.
_STAMP: Final = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the extra measurements (shared with run.py)."""
    group = parser.add_argument_group("extra measurements")
    group.add_argument("--startup-runs", type=int, default=20, help="tempmail address runs")
    group.add_argument("--idle-conns", type=int, default=1000, help="open connections (memory)")
    group.add_argument("--reload-seconds", type=float, default=12.0, help="per reload run")
    group.add_argument("--reload-interval", type=float, default=0.1, help="seconds between HUPs")
    group.add_argument("--rollover-seconds", type=float, default=4.0, help="per rollover run")


def run(args: argparse.Namespace, tools: dict[str, Path], work: Path) -> dict[str, Any]:
    """All extra measurements; each section's figures as a dict."""
    config = common.write_config(work, "extras")
    result: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("startup", lambda: measure_startup(config, args.startup_runs)),
        ("memory", lambda: measure_memory(work, config, args.idle_conns, args.python)),
        ("table_build", lambda: measure_table_build(work, config)),
        ("reload", lambda: measure_reload(work, config, tools["smload"], args)),
        ("loop_lag", lambda: measure_loop_lag(work, config, tools["smload"], args)),
        (
            "rollover",
            lambda: measure_rollover(work, tools["smload"], args.rollover_seconds, args.python),
        ),
    ]
    for name, step in steps:
        print(f"extras: {name}", file=sys.stderr)
        result[name] = step()
    return result


# --- startup --------------------------------------------------------------------------------


def _wall_ms(argv: Sequence[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def measure_startup(config: Path, runs: int) -> dict[str, Any]:
    """Whole-process wall time of ``tempmail address`` and of a bare interpreter."""
    command = [common.TEMPMAIL, "--config", str(config), "address"]
    bare = [common.PYTHON, "-c", "pass"]
    for _ in range(3):  # page cache and .pyc files warm, as on a host that ran it before
        _wall_ms(command)
    address_ms, python_ms = [], []
    for _ in range(runs):  # interleaved, so background load affects both alike
        address_ms.append(_wall_ms(command))
        python_ms.append(_wall_ms(bare))
    return {
        "command": " ".join(command),
        "runs": runs,
        "address_ms": _spread(address_ms),
        "bare_python_ms": _spread(python_ms),
        "imports": slowest_imports(command),
    }


def _spread(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(common.median(ordered), 1),
        "min": round(ordered[0], 1),
        "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
        "max": round(ordered[-1], 1),
    }


def slowest_imports(command: Sequence[str], top: int = 8) -> list[dict[str, Any]]:
    """Top-level imports of ``command`` by cumulative time (python -X importtime)."""
    argv = [common.PYTHON, "-X", "importtime", *command]
    err = subprocess.run(argv, check=True, capture_output=True, text=True).stderr
    rows: list[tuple[float, str]] = []
    for line in err.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if not cumulative.strip().isdigit():
            continue  # the header line
        # The name column is " " + two spaces per nesting level + the module name.
        if not name[1:].startswith(" "):
            rows.append((int(cumulative) / 1000, name.strip()))
    rows.sort(reverse=True)
    return [{"module": module, "cumulative_ms": ms} for ms, module in rows[:top]]


# --- memory ---------------------------------------------------------------------------------


def measure_memory(work: Path, config: Path, conns: int, python: str) -> dict[str, Any]:
    """RSS of a fresh ``tempmail serve``: idle, with ``conns`` open connections, and after."""
    sock_path = common.socket_of(config)
    key = common.current_codes(config)[0]
    result: dict[str, Any] = {"connections": conns}
    process = common.server_process("tempmail", config, Path(), work / "memory-server.log", python)
    with process as server:
        time.sleep(1.0)
        result["idle_kb"] = common.rss_kb(server.pid)
        clients: list[Client] = []
        try:
            for _ in range(conns):
                clients.append(Client(f"unix:{sock_path}", timeout=10))
                clients[-1].send_raw(socketmap.encode_request(common.MAP_NAME, key))
            for client in clients:  # every connection served one lookup: a real Postfix one
                client.read_reply()
            time.sleep(1.0)
            result["open_kb"] = common.rss_kb(server.pid)
        finally:
            for client in clients:
                client.close()
        time.sleep(1.0)
        result["after_close_kb"] = common.rss_kb(server.pid)
    per_conn = (result["open_kb"]["VmRSS"] - result["idle_kb"]["VmRSS"]) / conns
    result["per_connection_kb"] = round(per_conn, 1)
    return result


# --- day table and reload -------------------------------------------------------------------


_BIG_IDENTITY: Final = """
[identities.id{n}]
domains = ["d{n}.example.org", "d{n}.example.net", "d{n}.example.com"]
recipient = "owner{n}@example.net"
secret = "benchmark secret number {n} with some length to it"
previous_secrets = ["the previous benchmark secret number {n}"]
scheme = "hmac"
accept = ["hmac", "md5"]
length = 8
window = 7
timezone = "Europe/Berlin"
"""


def measure_table_build(work: Path, config: Path, repeat: int = 300) -> dict[str, Any]:
    """What midnight (AddressTable) and a reload (config.load + Handler) cost, in process."""
    big = work / "big.toml"
    head = config.read_text(encoding="utf-8").split("[identities.default]")[0]
    big.write_text(head + "".join(_BIG_IDENTITY.format(n=n) for n in range(20)), "utf-8")
    big.chmod(0o600)
    result: dict[str, Any] = {}
    for name, path in [("benchmark", config), ("big", big)]:
        loaded = config_module.load(path)
        key, now = secrets.token_bytes(32), time.time()
        table_us = _time_us(functools.partial(AddressTable, loaded.identities, now, key), repeat)
        result[name] = {
            "identities": len(loaded.identities),
            "addresses": len(AddressTable(loaded.identities, now, key)),
            "address_table_us": table_us,
            "config_load_us": _time_us(functools.partial(config_module.load, path), repeat // 3),
            "handler_us": _time_us(functools.partial(Handler, loaded, now), repeat),
        }
    return result


def _time_us(action: Callable[[], object], repeat: int) -> dict[str, float]:
    action()  # first call: caches (zoneinfo, imports) as a long-running server has them
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1e6)
    return {k: round(v) for k, v in _spread(times).items()}


def measure_reload(
    work: Path, config: Path, smload: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Smload plus the latency probe, with and without a SIGHUP every interval, at 1 and 16."""
    sock_path = common.socket_of(config)
    codes = common.current_codes(config)
    keys, _ = common.write_keys(work, codes, "reload-keys")
    log = work / "reload-server.log"
    result: dict[str, Any] = {"interval_s": args.reload_interval, "window_s": RELOAD_WINDOW}
    with common.server_process("tempmail", config, Path(), log, args.python) as server:
        for conns in (1, 16):
            load = common.Load(conns, warmup=0.5, duration=args.reload_seconds)
            argv = load.argv(smload, sock_path, keys, expect=True)
            runs: dict[str, Any] = {}
            for mode in ("baseline", "sighup"):
                before = log.read_text(errors="replace").count("configuration reloaded")
                # The baseline records the same instants without signalling, so its "near"
                # lookups are a like-for-like comparison.
                hup = functools.partial(server.signal, signal.SIGHUP) if mode == "sighup" else None
                runs[mode] = _run_with_probe(
                    argv,
                    load,
                    log=work / f"reload-{conns}-{mode}.log",
                    probe=common.LatencyProbe(sock_path, codes[0]),
                    schedule=_every(args.reload_interval, hup),
                    window=RELOAD_WINDOW,
                )
                text = log.read_text(errors="replace")
                runs[mode]["reloads"] = text.count("configuration reloaded") - before
                runs[mode]["failed_reloads"] = text.count("reload failed")
            result[f"c{conns}"] = runs
        result["reload_ms"] = _spread(_reload_durations(log.read_text(errors="replace")))
    return result


#: Probe lookups that start up to this long after a SIGHUP count as "near" it.
RELOAD_WINDOW: Final = 0.03
#: ... and up to this long after midnight (the first lookup after it builds the new table).
ROLLOVER_WINDOW: Final = 0.2

#: Something to do during the measured window: called with the window's end (monotonic);
#: returns the instants (monotonic) of the events it caused.
Schedule = Callable[[float], list[float]]


def _every(interval: float, action: Callable[[], None] | None) -> Schedule:
    """Call ``action`` (if any) every ``interval`` seconds until the end; record the instants."""

    def schedule(end: float) -> list[float]:
        events = []
        while time.monotonic() < end - interval:
            events.append(time.monotonic())
            if action is not None:
                action()
            time.sleep(interval)
        return events

    return schedule


def _at(instant: float) -> Schedule:
    """One event at the monotonic ``instant`` (caused by the server's own clock)."""

    def schedule(end: float) -> list[float]:
        time.sleep(max(0.0, end - time.monotonic()))
        return [instant]

    return schedule


def _run_with_probe(  # noqa: PLR0913 - the load, the probe and the schedule, by keyword
    argv: Sequence[str],
    load: common.Load,
    *,
    log: Path,
    probe: common.LatencyProbe,
    schedule: Schedule,
    window: float,
) -> dict[str, Any]:
    """smload, and the probe over smload's measured window while ``schedule`` runs."""
    out = log.with_suffix(".json")
    with common.Process(argv, log, stdout_path=out) as client:
        time.sleep(load.warmup)
        with probe:
            events = schedule(time.monotonic() + load.duration)
        assert client.proc is not None  # noqa: S101 - started above
        client.proc.wait(timeout=load.duration + 30)
    result = _pick(json.loads(out.read_text(encoding="utf-8")))
    result["probe"] = probe.around(events, after=window)
    return result


def measure_loop_lag(
    work: Path, config: Path, smload: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The server's own view of stalls: its event loop's lateness under load, with/without HUP.

    experiments/serve.py --lag-monitor runs `tempmail serve`'s code plus a task that sleeps
    1 ms again and again and records how late it wakes; a stall of the loop (a long callback,
    the GIL held by the reload thread) shows up in full, without the client's scheduling noise.
    """
    sock_path = common.socket_of(config)
    keys, _ = common.write_keys(work, common.current_codes(config), "lag-keys")
    load = common.Load(16, warmup=0.5, duration=args.reload_seconds)
    result: dict[str, Any] = {}
    # The third run tests one hypothesis for reload stalls: the loop thread waiting up to
    # CPython's GIL switch interval (5 ms) while the reload's worker thread parses the config.
    modes = {
        "baseline": [],
        "sighup": [],
        "sighup, GIL switch interval 0.5 ms": ["--switch-interval", "0.0005"],
    }
    for n, (mode, extra) in enumerate(modes.items()):
        log = work / f"lag-{n}-server.log"
        process = common.server_process(
            "uvloop", config, Path(), log, args.python, extra=["--lag-monitor", *extra]
        )
        with process as server:
            hup = functools.partial(server.signal, signal.SIGHUP) if n else None
            out = work / f"lag-{n}.json"
            argv = load.argv(smload, sock_path, keys, expect=True)
            with common.Process(argv, work / f"lag-{n}.log", stdout_path=out) as client:
                time.sleep(load.warmup)
                _every(args.reload_interval, hup)(time.monotonic() + load.duration)
                assert client.proc is not None  # noqa: S101 - started above
                client.proc.wait(timeout=load.duration + 30)
        text = log.read_text(errors="replace")
        lag_line = [line for line in text.splitlines() if "serve.py: loop lag " in line]
        result[mode] = {
            "reloads": text.count("configuration reloaded"),
            "lag": json.loads(lag_line[-1].partition("loop lag ")[2]) if lag_line else None,
            "smload": _pick(json.loads(out.read_text(encoding="utf-8"))),
        }
    return result


def _pick(smload: dict[str, Any]) -> dict[str, Any]:
    keys = ("lookups_per_s", "p50_us", "p99_us", "p999_us", "max_us", "errors", "mismatch")
    return {k: smload[k] for k in keys}


def _reload_durations(log_text: str) -> list[float]:
    """Milliseconds from each 'received SIGHUP' to the next 'configuration reloaded'."""
    durations, start = [], None
    for line in log_text.splitlines():
        match = _STAMP.match(line)
        if match is None:
            continue
        stamp = dt.datetime.fromisoformat(match.group(1)).timestamp()
        if "received SIGHUP" in line:
            start = start if start is not None else stamp
        elif "configuration reloaded" in line and start is not None:
            durations.append((stamp - start) * 1000)
            start = None
    return durations or [float("nan")]


# --- day rollover, end to end ---------------------------------------------------------------


def measure_rollover(
    work: Path, smload: Path, seconds: float, python: str, reps: int = 3
) -> dict[str, Any]:
    """Smload and the probe over a shifted-clock midnight, next to unshifted runs (16 conns)."""
    config = common.write_config(work, "rollover")
    identity = config_module.load(config).identities[0]
    sock_path = common.socket_of(config)
    load = common.Load(16, warmup=0.5, duration=seconds)
    result: dict[str, Any] = {"window_s": ROLLOVER_WINDOW, "baseline": [], "midnight": []}
    for rep in range(reps):
        for mode in ("baseline", "midnight"):
            label = f"rollover-{mode}-{rep}"
            margin = 1.0  # the server is ready in ~0.3 s; midnight falls mid-window anyway
            midnight_at = time.time() + margin + load.warmup + seconds / 2
            fake_before = _shifted(midnight_at, identity.timezone, midnight_at - 1)
            now = fake_before if mode == "midnight" else time.time()
            # Today's code just before midnight stays valid after it (as yesterday's): the
            # expected OK holds throughout, and smload counts any wrong answer.
            keep = str(generate.current_addresses(identity, now)[0])
            keys, _ = common.write_keys(work, [keep], label)
            # experiments/serve.py on uvloop: the code of `tempmail serve`, plus the
            # shifted clock.
            shift = ["--midnight-at", f"{midnight_at:.3f}"] if mode == "midnight" else []
            log = work / f"{label}-server.log"
            process = common.server_process("uvloop", config, Path(), log, python, extra=shift)
            with process:
                instant = midnight_at - time.time() + time.monotonic()
                run = _run_with_probe(
                    load.argv(smload, sock_path, keys, expect=True),
                    load,
                    log=work / f"{label}.log",
                    probe=common.LatencyProbe(sock_path, keep),
                    schedule=_at(instant),
                    window=ROLLOVER_WINDOW,
                )
                if mode == "midnight":
                    new_code = str(generate.current_addresses(identity, fake_before + 2)[0])
                    old_code = str(generate.current_addresses(identity, fake_before)[1])
                    with Client(f"unix:{sock_path}") as client:
                        run["after"] = {
                            "new_day_code": client.query(common.MAP_NAME, new_code).status.value,
                            "expired_code": client.query(common.MAP_NAME, old_code).status.value,
                        }
            result[mode].append(run)
    return result


def _shifted(midnight_at: float, zone: Any, real: float) -> float:  # noqa: ANN401 - ZoneInfo
    """The server's shifted clock at the real instant ``real`` (same rule as serve.py)."""
    tomorrow = dt.datetime.fromtimestamp(midnight_at, zone).date() + dt.timedelta(days=1)
    midnight = dt.datetime.combine(tomorrow, dt.time(0), tzinfo=zone).timestamp()
    return real + (midnight - midnight_at)


# --- report ---------------------------------------------------------------------------------


def render(extras: dict[str, Any]) -> list[str]:
    """Markdown sections for the extra measurements."""
    out: list[str] = []
    if "startup" in extras:
        s = extras["startup"]
        a, b = s["address_ms"], s["bare_python_ms"]
        out += [
            "## `tempmail address` (whole process)",
            "",
            (
                f"Median of {s['runs']}: **{a['median']} ms** (min {a['min']}, p90 {a['p90']}, "
                f"max {a['max']}); a bare `python -c pass` of the same interpreter: "
                f"{b['median']} ms. Target ≤ 150 ms."
            ),
            "",
            "Slowest top-level imports (cumulative, one run of `-X importtime`): "
            + ", ".join(f"{r['module']} {r['cumulative_ms']:.1f} ms" for r in s["imports"]),
            "",
        ]
    if "memory" in extras:
        m = extras["memory"]
        mb = {k: m[k]["VmRSS"] / 1024 for k in ("idle_kb", "open_kb", "after_close_kb")}
        peak = m["after_close_kb"]["VmHWM"] / 1024
        out += [
            "## Memory (VmRSS of `tempmail serve`)",
            "",
            (
                f"Idle: **{mb['idle_kb']:.1f} MB** (target ≤ 60). With {m['connections']} open "
                f"connections, each after one lookup: **{mb['open_kb']:.1f} MB** (target ≤ 120),"
                f" {m['per_connection_kb']} KiB per connection; after closing them: "
                f"{mb['after_close_kb']:.1f} MB (peak {peak:.1f} MB)."
            ),
            "",
        ]
    out += _render_stalls(extras)
    return out


def _render_stalls(extras: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if "table_build" in extras:
        out += [
            "## Day table and reload cost, in process (µs, median / max)",
            "",
            (
                "All three run in a worker thread in `tempmail serve` (the next day's table is "
                "built ahead of midnight; a reload builds its Handler with the config): the "
                "figures are CPU time taken from the machine, not time a lookup waits."
            ),
            "",
            (
                "| config | identities | addresses | AddressTable (a day's table) | Handler "
                "(at reload) | config.load (at reload) |"
            ),
            "|---|--:|--:|--:|--:|--:|",
        ]
        for name, t in extras["table_build"].items():
            cells = [
                f"{t[k]['median']:,} / {t[k]['max']:,}"
                for k in ("address_table_us", "handler_us", "config_load_us")
            ]
            cells_text = " | ".join(cells)
            out.append(f"| {name} | {t['identities']} | {t['addresses']} | {cells_text} |")
        out.append("")
    if "reload" in extras:
        out += _render_reload(extras["reload"])
    if "loop_lag" in extras:
        out += _render_loop_lag(extras["loop_lag"])
    if "rollover" in extras:
        out += _render_rollover(extras["rollover"])
    return out


_STALL_HEADER: Final = (
    "| lookups/s | p99 µs | p99.9 µs | max µs | errors | probe: worst near event µs | "
    "probe: worst elsewhere µs | probe > 10 ms near / elsewhere |"
)


def _stall_cells(v: dict[str, Any]) -> str:
    p = v["probe"]
    return (
        f"{v['lookups_per_s']:,.0f} | {v['p99_us']:,.0f} | {v['p999_us']:,.0f} | "
        f"{v['max_us']:,.0f} | {v['errors']} | {p['near_max_us'] or 0:,} | "
        f"{p['other_max_us'] or 0:,} | {p['near_over_10ms']} / {p['other_over_10ms']} |"
    )


def _render_reload(r: dict[str, Any]) -> list[str]:
    d = r["reload_ms"]
    out = [
        f"## SIGHUP reloads under load (a SIGHUP every {r['interval_s'] * 1000:g} ms)",
        "",
        (
            "smload at 1 and 16 connections, plus a probe connection timing every lookup "
            f"(one per 2 ms); 'near': probe lookups that started within {r['window_s'] * 1000:g}"
            " ms after a SIGHUP (the baseline records the same instants without signalling)."
        ),
        "",
        f"| conns | run | reloads {_STALL_HEADER}",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for conns in ("c1", "c16"):
        for mode, v in r[conns].items():
            out.append(f"| {conns[1:]} | {mode} | {v['reloads']} | {_stall_cells(v)}")
    out += [
        "",
        (
            f"Reload duration (SIGHUP received → reloaded, log stamps): median {d['median']} ms, "
            f"p90 {d['p90']} ms, max {d['max']} ms."
        ),
        "",
    ]
    return out


def _render_loop_lag(r: dict[str, Any]) -> list[str]:
    out = [
        "### The same, seen from inside the server (event-loop lag)",
        "",
        (
            "`tempmail serve`'s code with a task that sleeps 1 ms in a loop and records how late "
            "it wakes (experiments/serve.py --lag-monitor), 16 connections of load."
        ),
        "",
        "| run | reloads | lookups/s | wake-ups | lag p99.9 ms | lag max ms | > 5 ms | > 10 ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for mode, v in r.items():
        lag = v["lag"] or {}
        out.append(
            f"| {mode} | {v['reloads']} | {v['smload']['lookups_per_s']:,.0f} | "
            f"{lag.get('samples', 0):,} | {lag.get('p999_ms')} | {lag.get('max_ms')} | "
            f"{lag.get('over_5ms')} | {lag.get('over_10ms')} |"
        )
    out.append("")
    return out


def _render_rollover(r: dict[str, Any]) -> list[str]:
    out = [
        "## Day rollover under load (16 connections; clock shifted so midnight passes mid-run)",
        "",
        (
            "'near': probe lookups that started within "
            f"{r['window_s'] * 1000:g} ms after midnight (baseline: the same instant, no "
            "midnight)."
        ),
        "",
        f"| run {_STALL_HEADER}",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for mode in ("baseline", "midnight"):
        out += [f"| {mode} | {_stall_cells(v)}" for v in r[mode]]
    after = [v["after"] for v in r["midnight"]]
    out += [
        "",
        (
            "After each midnight: the new day's code → "
            f"{', '.join(a['new_day_code'] for a in after)}; the code that left the window → "
            f"{', '.join(a['expired_code'] for a in after)}."
        ),
        "",
    ]
    return out


def main() -> int:
    """Run only the extra measurements, with run.py's options."""
    from benchmarks import run as run_module  # noqa: PLC0415 - run.py imports this module

    return run_module.main([*sys.argv[1:], "--skip-throughput"])


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
