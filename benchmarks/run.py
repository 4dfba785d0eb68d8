"""Benchmark ``tempmail serve`` side by side with the floor server, in the same run.

    .venv/bin/python -m benchmarks.run                 # builds smload, floor from ../shared/bench
    .venv/bin/python -m benchmarks.run --smload PATH --floor PATH
    .venv/bin/python -m benchmarks.run --quick         # 2 s runs, 1 repetition: for development

For every scenario (1, 16 and 100 persistent connections, 16 clients with one connection per
lookup, optionally pipelined), every server gets the same smload command, repetition after
repetition, alternating (the order rotates each repetition), so the ratio to the floor is
measured under the same background load. Then the extra measurements of benchmarks/extras.py
(startup time, memory, reload and day-rollover stalls) run unless ``--skip-extras``.

Output: a Markdown report on stdout and, under benchmarks/results/, the same report (.md) and
every raw figure (.json). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from benchmarks import common, extras

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_SHARED_BENCH: Final = common.REPO_DIR.parent / "shared" / "bench"


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named smload workload."""

    name: str
    title: str
    conns: int
    depth: int = 1
    reconnect: bool = False

    def load(self, warmup: float, duration: float) -> common.Load:
        """Smload parameters for this scenario."""
        return common.Load(self.conns, self.depth, self.reconnect, warmup, duration)


SCENARIOS: Final = {
    s.name: s
    for s in [
        Scenario("c1", "1 connection", 1),
        Scenario("c16", "16 connections", 16),
        Scenario("c100", "100 connections", 100),
        Scenario("r16", "16 clients, new connection per lookup", 16, reconnect=True),
        Scenario("p16", "16 connections, 16 pipelined requests each", 16, depth=16),
    ]
}
DEFAULT_SCENARIOS: Final = ("c1", "c16", "c100", "r16")

DEFAULT_SERVERS: Final = ("tempmail",)

#: Issue 4's targets: minimum share of the floor's lookups/s, and the p99 limit at 100.
TARGET_RATIO: Final = 0.15
TARGET_P99_US: Final = 5000.0


# --- the throughput run ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One server of the run: a kind from common.SERVERS (or the floor) and an interpreter."""

    label: str  # in the tables: "tempmail", or "tempmail@3.12.1" for another interpreter
    kind: str
    python: str
    config: Path


def entries(args: argparse.Namespace, work: Path) -> list[Entry]:
    """The floor, then ``--servers`` (``KIND`` or ``KIND@/path/to/python``)."""
    result = []
    for i, spec in enumerate(["floor", *args.servers]):
        kind, _, python = spec.partition("@")
        label = f"{kind}@{common.python_version(python)}" if python else kind
        config = common.write_config(work, f"s{i}-{kind}")
        result.append(Entry(label, kind, python or args.python, config))
    return result


def run_throughput(
    args: argparse.Namespace, tools: dict[str, Path], work: Path, stack: contextlib.ExitStack
) -> dict[str, Any]:
    """Every scenario x repetition x server, interleaved; returns the raw results."""
    servers = entries(args, work)
    procs: dict[str, common.Child] = {}
    for e in servers:
        log = work / f"{e.config.stem}.log"
        proc = stack.enter_context(
            common.server_process(e.kind, e.config, tools["floor"], log, e.python)
        )
        procs[e.label] = proc
    addresses = common.current_codes(servers[0].config)  # every config has the same secret
    keys_expect, keys_plain = common.write_keys(work, addresses)
    print(f"valid codes: {', '.join(addresses)}; keys: {keys_expect}", file=sys.stderr)
    results: dict[str, Any] = {}
    for scenario_name in args.scenarios:
        scenario = SCENARIOS[scenario_name]
        load = scenario.load(args.warmup, args.duration)
        runs: dict[str, list[common.Measurement]] = {e.label: [] for e in servers}
        for rep in range(args.reps):
            # Rotate the order each repetition: no server always runs right after the floor.
            order = servers[rep % len(servers) :] + servers[: rep % len(servers)]
            for e in order:
                floor = e.kind == "floor"
                keys = keys_plain if floor else keys_expect
                argv = load.argv(
                    tools["smload"], common.socket_of(e.config), keys, expect=not floor
                )
                tag = f"{scenario.name}-{e.config.stem}-{rep}"
                proc = procs[e.label]
                smload, server_cpu, machine_cpu = common.run_smload(
                    argv, proc.pid, load, work / f"smload-{tag}.log", tag
                )
                if not proc.alive() or not smload["requests"]:
                    # A figure of 0/s would be averaged in silently: stop instead.
                    raise common.BenchError(f"{e.label} answered nothing:\n{proc.log_tail()}")
                rss = common.rss_kb(proc.pid).get("VmRSS", 0)
                m = common.Measurement(e.label, smload, *server_cpu, machine_cpu, rss)
                runs[e.label].append(m)
                _progress(scenario, e.label, rep, m)
        results[scenario.name] = {
            "title": scenario.title,
            "smload_argv": load.argv(tools["smload"], Path("SOCKET"), Path("KEYS"), expect=True),
            "runs": {name: [m.as_dict() for m in ms] for name, ms in runs.items()},
            "summary": {name: summarise(ms, runs["floor"]) for name, ms in runs.items()},
        }
    return {
        "servers": {
            e.label: {"kind": e.kind, "python": e.python, "what": common.SERVERS.get(e.kind, "")}
            for e in servers
        },
        "scenarios": results,
    }


def _progress(scenario: Scenario, name: str, rep: int, m: common.Measurement) -> None:
    s = m.smload
    print(
        f"  {scenario.name:5} {name:16} rep {rep}: {m.lookups_per_s:9.0f}/s "
        f"p99 {s['p99_us']:7.0f} us  server {m.server_cpu_pct:5.1f}%  "
        f"smload {s['client_cpu_pct']:5.1f}%  machine {m.machine_cpu_pct:5.1f}%  "
        f"errors {s['errors']}",
        file=sys.stderr,
    )


def summarise(
    ms: Sequence[common.Measurement], floor: Sequence[common.Measurement]
) -> dict[str, Any]:
    """Medians over repetitions; the ratio is paired with the floor run of the same repetition."""
    med = common.median
    paired = [m.lookups_per_s / f.lookups_per_s for m, f in zip(ms, floor, strict=True)]
    return {
        "lookups_per_s": med([m.lookups_per_s for m in ms]),
        "ratio": med(paired),
        "ratio_min": min(paired),
        "ratio_max": max(paired),
        "p50_us": med([m.smload["p50_us"] for m in ms]),
        "p99_us": med([m.smload["p99_us"] for m in ms]),
        "p999_us": med([m.smload["p999_us"] for m in ms]),
        "max_us": max(m.smload["max_us"] for m in ms),
        "server_cpu_pct": med([m.server_cpu_pct for m in ms]),
        "server_sys_share": med([m.server_sys_pct / (m.server_cpu_pct or 1) for m in ms]),
        "cpu_us_per_lookup": med([m.cpu_us_per_lookup for m in ms]),
        "client_cpu_pct": med([m.smload["client_cpu_pct"] for m in ms]),
        "machine_cpu_pct": med([m.machine_cpu_pct for m in ms]),
        "errors": sum(m.smload["errors"] for m in ms),
        "mismatch": sum(m.smload["mismatch"] for m in ms),
        "server_rss_mb": max(m.server_rss_kb for m in ms) / 1024,
    }


# --- report ---------------------------------------------------------------------------------


def throughput_table(results: dict[str, Any]) -> list[str]:
    """The side-by-side table: one row per scenario and server."""
    lines = [
        (
            "| scenario | server | lookups/s | vs floor | p50 µs | p99 µs | p99.9 µs | "
            "server CPU (sys) | CPU µs/lookup | smload CPU | errors |"
        ),
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for scenario in results["scenarios"].values():
        for name, s in scenario["summary"].items():
            ratio = "—" if name == "floor" else f"**{s['ratio']:.0%}**"
            if name != "floor" and s["ratio_max"] - s["ratio_min"] >= 0.005:
                ratio += f" ({s['ratio_min']:.0%}-{s['ratio_max']:.0%})"
            lines.append(
                f"| {scenario['title']} | {name} | {s['lookups_per_s']:,.0f} | {ratio} | "
                f"{s['p50_us']:,.0f} | {s['p99_us']:,.0f} | {s['p999_us']:,.0f} | "
                f"{s['server_cpu_pct']:.0f} % ({s['server_sys_share']:.0%}) | "
                f"{s['cpu_us_per_lookup']:.1f} | "
                f"{s['client_cpu_pct']:.0f} % | {s['errors']} |"
            )
    return lines


def target_lines(results: dict[str, Any]) -> list[str]:
    """Issue 4's throughput targets, checked for every non-floor server."""
    lines = []
    scenarios = results["scenarios"]
    for name in results["servers"]:
        if name == "floor":
            continue
        checks = []
        for key in ("c16", "c100", "r16"):
            if key in scenarios:
                ratio = scenarios[key]["summary"][name]["ratio"]
                checks.append(f"{key} {ratio:.1%} {'✓' if ratio >= TARGET_RATIO else '✗'}")
        if "c100" in scenarios:
            p99 = scenarios["c100"]["summary"][name]["p99_us"]
            checks.append(f"c100 p99 {p99 / 1000:.2f} ms {'✓' if p99 < TARGET_P99_US else '✗'}")
        lines.append(f"- {name}: " + "; ".join(checks))
    return lines


def render(report: dict[str, Any]) -> str:
    """The whole Markdown report."""
    info = report["machine"]
    out = [
        f"# tempmail benchmark, {report['started']}",
        "",
        (
            f"Machine: {info['nproc']} x {info['cpu_model']}, Linux {info['kernel']}, "
            f"Python {report['server_python']} (servers), anyio {info['packages']['anyio']}, "
            f"uvloop {info['packages']['uvloop']}. Load average at start: "
            f"{info['load_average_start']}, at end: {report['load_average_end']}."
        ),
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    if "throughput" in report:
        p = report["parameters"]
        out += [
            "## Lookups, side by side with the floor (unix socket)",
            "",
            (
                f"smload -w {p['warmup']} -d {p['duration']}, median of {p['reps']} interleaved "
                "repetitions; half the lookups are valid keys (2 codes x 5 spellings), half "
                f"unknown keys `{common.INVALID_TEMPLATE}`. 'vs floor': median of the "
                "per-repetition ratios of lookups/s (range in brackets). Server CPU: % of one "
                "core over the measured window, from /proc/PID/stat (in brackets: the share "
                "spent in the kernel); CPU µs/lookup = server CPU time / lookups, the figure "
                "least disturbed by other load; smload CPU: the load generator's own."
            ),
            "",
            *throughput_table(report["throughput"]),
            "",
            (
                f"Targets (≥ {TARGET_RATIO:.0%} of the floor; p99 < {TARGET_P99_US / 1000:g} ms "
                "at 100 connections):"
            ),
            "",
            *target_lines(report["throughput"]),
            "",
        ]
    if "extras" in report:
        out += extras.render(report["extras"])
    return "\n".join(out) + "\n"


# --- tools and main -------------------------------------------------------------------------


def build_tools(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    """Smload and floor_server: given paths, or compiled from --shared-bench into ``work``."""
    if args.smload and args.floor:
        return {"smload": args.smload.resolve(), "floor": args.floor.resolve()}
    source: Path = args.shared_bench
    if not (source / "smload.c").is_file():
        sys.exit(f"no smload.c in {source}: give --shared-bench DIR or --smload and --floor")
    tools = {"smload": work / "smload", "floor": work / "floor_server"}
    for out, src, libs in [
        (tools["smload"], "smload.c", ["-lm"]),
        (tools["floor"], "floor_server.c", []),
    ]:
        subprocess.run(["gcc", "-O2", "-o", str(out), str(source / src), *libs], check=True)
    return tools


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``--quick`` sets short runs)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    tools = parser.add_argument_group("load generator and floor (from ../shared/bench)")
    tools.add_argument("--smload", type=Path, help="smload binary")
    tools.add_argument("--floor", type=Path, help="floor_server binary")
    tools.add_argument(
        "--shared-bench",
        type=Path,
        default=DEFAULT_SHARED_BENCH,
        help=f"build both from this source directory (default {DEFAULT_SHARED_BENCH})",
    )
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("-w", "--warmup", type=float, default=1.0, help="warm-up seconds")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per server")
    parser.add_argument("--quick", action="store_true", help="-d 2 -w 0.5 --reps 1")
    parser.add_argument(
        "--scenarios",
        type=names(SCENARIOS),
        default=list(DEFAULT_SCENARIOS),
        help=f"comma-separated, of {', '.join(SCENARIOS)} (default {','.join(DEFAULT_SCENARIOS)})",
    )
    parser.add_argument(
        "--servers",
        type=names(common.SERVERS),
        default=list(DEFAULT_SERVERS),
        help=(
            f"besides the floor, comma-separated, of {', '.join(common.SERVERS)}; "
            "NAME@/path/to/python runs that one with another interpreter"
        ),
    )
    parser.add_argument(
        "--python",
        default=common.PYTHON,
        help="interpreter for the Python servers (default: this one, the project venv)",
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-extras", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--output", type=Path, help="JSON path (default benchmarks/results/...)")
    extras.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.reps = 2.0, 0.5, 1
    return args


def names(known: dict[str, Any]) -> Any:  # noqa: ANN401 - an argparse type function
    """An argparse type: comma-separated names of ``known`` (``NAME@PYTHON`` allowed)."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n.partition("@")[0] not in known]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)}")
        return names

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    """Run the throughput scenarios and the extras; write the report."""
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    report: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "-m", "benchmarks.run", *sys.argv[1:]]),
        "machine": common.machine_info(),
        "server_python": common.python_version(args.python),
        "parameters": {"warmup": args.warmup, "duration": args.duration, "reps": args.reps},
    }
    with common.stop_on_signals(), common.workdir(args.keep) as work:
        tools = build_tools(args, work)
        try:
            if not args.skip_throughput:
                with contextlib.ExitStack() as stack:  # servers stop when the scenarios end
                    report["throughput"] = run_throughput(args, tools, work, stack)
            if not args.skip_extras:
                report["extras"] = extras.run(args, tools, work)
        except KeyboardInterrupt:
            print("interrupted: every process started was stopped", file=sys.stderr)
            return 130
        except common.BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    report["load_average_end"] = common.load_average()
    write_outputs(report, args.output, started)
    return 0


def write_outputs(report: dict[str, Any], output: Path | None, started: dt.datetime) -> None:
    """Print the Markdown and save it with the JSON under benchmarks/results/."""
    text = render(report)
    print(text)
    if output is None:
        common.RESULTS_DIR.mkdir(exist_ok=True)
        output = common.RESULTS_DIR / f"run-{started:%Y%m%d-%H%M%S}.json"
    output.write_text(json.dumps(report, indent=2, default=_json_default), encoding="utf-8")
    output.with_suffix(".md").write_text(text, encoding="utf-8")
    print(f"wrote {output} and {output.with_suffix('.md')}", file=sys.stderr)


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    start = time.monotonic()
    status = main()
    print(f"done in {time.monotonic() - start:.0f} s", file=sys.stderr)
    sys.exit(status)
