"""Profile a server under smload with py-spy and summarise where its CPU time goes.

    .venv/bin/python -m benchmarks.profile_server --py-spy PATH [--scenario c16] [--server tempmail]
                                           [--smload PATH | --shared-bench DIR] [--native]

py-spy is not a project dependency: install it anywhere (``pip install py-spy`` in a scratch
venv) and pass its path. The server runs under the same smload load as in run.py; py-spy
attaches to it for the measured window and writes the raw (collapsed) stacks; this script
prints the functions and source lines with the most samples, self and inclusive, and writes
the stacks (and, with --svg, a flame graph from a second recording) under benchmarks/results/.
Only samples of a busy thread count (py-spy skips idle ones), so percentages are shares of the
server's CPU time, not of wall time. Caveat, measured with a calibration loop: py-spy's default
(blocking) sampling over-weights lines that make a syscall by up to ~2x; read the ranking, and
take absolute costs from the experiments and run.py's CPU µs per lookup.

    .venv/bin/python -m benchmarks.profile_server --syscalls [--servers tempmail,protocol-uvloop]

counts instead, with ``perf stat`` on the syscall tracepoints (no ptrace, so no slowdown), the
system calls each server makes per lookup under the same load.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from benchmarks import common
from benchmarks import run as run_module

if TYPE_CHECKING:
    from collections.abc import Sequence

#: A py-spy frame: "function (file:line)".
_FRAME: Final = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*):(?P<line>\d+)\)$")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--py-spy", type=Path, help="py-spy binary (for a profile)")
    parser.add_argument("--syscalls", action="store_true", help="count syscalls (perf stat)")
    parser.add_argument("--perf", default="perf", help="perf binary (for --syscalls)")
    parser.add_argument(
        "--servers",
        type=run_module.names(common.SERVERS),
        default=["tempmail"],
        help="--syscalls: servers besides the floor, comma-separated",
    )
    parser.add_argument("--smload", type=Path)
    parser.add_argument("--floor", type=Path)
    parser.add_argument("--shared-bench", type=Path, default=run_module.DEFAULT_SHARED_BENCH)
    parser.add_argument("--scenario", choices=run_module.SCENARIOS, default="c16")
    parser.add_argument("--server", choices=common.SERVERS, default="tempmail")
    parser.add_argument("-d", "--duration", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="include C frames (py-spy)")
    parser.add_argument("--svg", action="store_true", help="also record a flame graph")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--python", default=common.PYTHON, help="interpreter for the servers")
    return parser.parse_args(argv)


def record(args: argparse.Namespace, work: Path, tools: dict[str, Path]) -> dict[str, Path]:
    """Run the server under load and py-spy; return the raw stacks (and the SVG)."""
    config = common.write_config(work, args.server)
    sock = common.socket_of(config)
    scenario = run_module.SCENARIOS[args.scenario]
    # smload runs longer than py-spy records: py-spy attaches after the warm-up.
    load = scenario.load(warmup=1.0, duration=args.duration * (2 if args.svg else 1) + 1)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    common.RESULTS_DIR.mkdir(exist_ok=True)
    base = common.RESULTS_DIR / f"profile-{args.server}-{args.scenario}-{stamp}"
    outputs = {"raw": base.with_suffix(".txt")}
    if args.svg:
        outputs["svg"] = base.with_suffix(".svg")
    process = common.server_process(
        args.server, config, tools["floor"], work / "server.log", args.python
    )
    with process as server:
        keys, _ = common.write_keys(work, common.current_codes(config))
        smload_argv = load.argv(tools["smload"], sock, keys, expect=True)
        with common.Process(smload_argv, work / "smload.log") as smload:
            time.sleep(load.warmup)
            for fmt, path in outputs.items():
                spy = [str(args.py_spy), "record", "--pid", str(server.pid)]
                spy += ["-d", str(int(args.duration)), "-r", str(args.rate), "-o", str(path)]
                spy += ["-f", "raw" if fmt == "raw" else "flamegraph"]
                spy += ["--native"] if args.native else []
                subprocess.run(spy, check=True, stdout=subprocess.DEVNULL)
            assert smload.proc is not None  # noqa: S101 - started above
            smload.proc.wait(timeout=load.duration + 30)
        print(f"smload: {(work / 'smload.log').read_text(errors='replace')[-400:]}")
    return outputs


SYSCALLS: Final = [
    "recvfrom",
    "read",
    "sendto",
    "write",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "getpid",
    "mmap",
    "munmap",
    "mremap",
    "brk",
    "accept4",
    "close",
    "getsockname",
    "getpeername",
    "futex",
]


def count_syscalls(args: argparse.Namespace, work: Path, tools: dict[str, Path]) -> str:
    """System calls per lookup of each server over smload's measured window (perf stat)."""
    scenario = run_module.SCENARIOS[args.scenario]
    load = scenario.load(warmup=1.0, duration=args.duration)
    events = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{name}" for name in SYSCALLS]
    rows: dict[str, dict[str, float]] = {}
    for name in ["floor", *args.servers]:
        config = common.write_config(work, name)
        sock = common.socket_of(config)
        process = common.server_process(
            name, config, tools["floor"], work / f"{name}.log", args.python
        )
        with process as server:
            keys, plain = common.write_keys(work, common.current_codes(config))
            smload_argv = load.argv(
                tools["smload"], sock, plain if name == "floor" else keys, expect=name != "floor"
            )
            out = work / f"smload-{name}.json"
            with common.Process(smload_argv, work / "smload.log", stdout_path=out) as smload:
                time.sleep(load.warmup)
                perf = [args.perf, "stat", "-x", ",", "-p", str(server.pid), "-e", ",".join(events)]
                stat = subprocess.run(
                    [*perf, "--", "sleep", str(args.duration)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stderr
                assert smload.proc is not None  # noqa: S101 - started above
                smload.proc.wait(timeout=load.duration + 30)
            lookups = json.loads(out.read_text())["lookups_per_s"] * args.duration
        counts = {}
        for line in stat.splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[0].isdigit():
                counts[fields[2].rpartition("sys_enter")[2].lstrip("_") or "all"] = int(fields[0])
        rows[name] = {k: v / lookups for k, v in counts.items() if v}
        rows[name]["lookups/s"] = lookups / args.duration
    columns = ["lookups/s", "all", *[s for s in SYSCALLS if any(s in r for r in rows.values())]]
    out_lines = [
        f"System calls per lookup, {scenario.title}, {args.duration:g} s (perf stat)",
        "",
        "| server | " + " | ".join(columns) + " |",
        "|---|" + "--:|" * len(columns),
    ]
    for name, row in rows.items():
        cells = [f"{row['lookups/s']:,.0f}"] + [f"{row.get(c, 0):.2f}" for c in columns[1:]]
        out_lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out_lines)


#: Where a sample's time goes: the innermost frame that matches decides (first match wins).
BUCKETS: Final = [
    ("sans-I/O: Session (decode, lookup, stats)", re.compile(r"^Session\.")),
    ("anyio stream send (incl. the send syscall)", re.compile(r"^UNIXSocketStream\.send ")),
    ("anyio stream receive (incl. recv, reader add/remove)", re.compile(r"^UNIXSocketStream\.rec")),
    ("anyio accept", re.compile(r"^UNIXSocketListener\.accept ")),
    ("anyio task spawn (start_soon)", re.compile(r"^TaskGroup\.(start_soon|_spawn) ")),
    ("anyio cancel scopes, limiter, events", re.compile(r"^(CancelScope|CapacityLimiter|Event)")),
    ("closing connections", re.compile(r"\.aclose |^socket\.close ")),
    ("Protocol callbacks (experiments)", re.compile(r"Protocol\.")),
    ("epoll_wait (selector)", re.compile(r"^EpollSelector\.select ")),
]


def buckets(raw: Path) -> str:
    """Samples per bucket: a coarse, ranked answer to "where does the time go"."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for text in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = text.rpartition(" ")
        if not count_text.isdigit():
            continue
        total += int(count_text)
        name = "event loop and coroutine machinery (the rest)"
        for frame in reversed(stack.split(";")):
            hit = next((title for title, pattern in BUCKETS if pattern.search(frame)), None)
            if hit is not None:
                name = hit
                break
        counts[name] += int(count_text)
    return "\n".join(f"{n / total:6.1%}  {name}" for name, n in counts.most_common())


def summarise(raw: Path, top: int) -> str:
    """Self and inclusive sample shares by function and by source line."""
    self_line: collections.Counter[str] = collections.Counter()
    incl_func: collections.Counter[str] = collections.Counter()
    total = 0
    for text in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = text.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short(f) for f in stack.split(";")]
        self_line[frames[-1]] += count
        for func in {_func(f) for f in frames}:
            incl_func[func] += count
    self_func: collections.Counter[str] = collections.Counter()
    for frame, count in self_line.items():
        self_func[_func(frame)] += count
    out = [f"{total} samples ({raw})", "", "## by activity", "", buckets(raw), ""]
    for title, counter in [
        ("inclusive, by function", incl_func),
        ("self, by function", self_func),
        ("self, by source line", self_line),
    ]:
        out += [f"## {title}", ""]
        out += [f"{n / total:6.1%}  {name}" for name, n in counter.most_common(top)]
        out.append("")
    return "\n".join(out)


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py:12)``."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path}:{match['line']})"


def _func(frame: str) -> str:
    """The frame without its line number."""
    return re.sub(r":\d+\)$", ")", frame)


def main(argv: Sequence[str] | None = None) -> int:
    """Profile (py-spy) or count system calls (perf stat) of a server under load."""
    args = parse_args(argv)
    with common.stop_on_signals(), common.workdir() as work:
        tools = run_module.build_tools(args, work)
        try:
            if args.syscalls:
                print(count_syscalls(args, work, tools))
                return 0
            if args.py_spy is None:
                sys.exit("give --py-spy PATH (or --syscalls)")
            outputs = record(args, work, tools)
        except KeyboardInterrupt:
            return 130
    text = summarise(outputs["raw"], args.top)
    print(text)
    outputs["raw"].with_suffix(".summary.txt").write_text(text, encoding="utf-8")
    print(f"wrote {', '.join(str(p) for p in outputs.values())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
