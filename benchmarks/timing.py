"""Timing side channel: whether a lookup's duration tells a wrong code from a right one.

Compares, interleaved in random order so that drift and noise hit every class alike:

* ``wrong``     a random code (the attacker's usual guess);
* ``wrong2``    another set of random codes: the control; any "difference" between ``wrong``
                and ``wrong2`` is what noise alone produces (``tag_wrong2`` likewise);
* ``old_day``   a code that was right 3 or more days ago (right secret, outside the window);
* ``right``     today's code (answered OK: the reply says so anyway);
* ``tag_*``     the same three for tagged addresses ``TAG.CODE`` (hmac.compare_digest path),
                and ``tag_revoked``: today's right code for a revoked tag (answered NOTFOUND).

Two measurements:

* in-process: ``AddressTable.resolve`` per call with ``time.perf_counter_ns`` (GC off);
* over the socket: round trips on one persistent connection to ``tempmail serve`` running
  in a subprocess (what a network attacker could measure, minus the network).

For each pair it reports the medians with a distribution-free 95% confidence interval (order
statistics), the 10th/90th percentiles, the Mann-Whitney U test (normal approximation with
tie correction; p-value) and the effect size A = P(X < Y) + P(X = Y)/2 (0.5: no difference).

Run:  .venv/bin/python -m benchmarks.timing [--samples N] [--socket-samples N] [--repeat R]
      [--json F]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import random
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness import ServerProcess, one_identity, serving_config, write_config
from tempmail import config, generate, netstring, schemes, socketmap
from tempmail.client import Client
from tempmail.lookup import Resolver

SECRET = "timing measurement secret, 32 bytes or more of it"  # noqa: S105 - a test value
DOMAIN = "example.org"
CLASSES = (
    "wrong",
    "wrong2",
    "old_day",
    "right",
    "tag_wrong",
    "tag_wrong2",
    "tag_old_day",
    "tag_right",
    "tag_revoked",
)
REVOKED = [f"r{n}" for n in range(1000)]
PAIRS = (
    ("wrong", "wrong2"),  # control: noise only
    ("wrong", "old_day"),  # the question of issue 5
    ("wrong", "right"),
    ("tag_wrong", "tag_wrong2"),  # control for the tagged path
    ("tag_wrong", "tag_old_day"),
    ("tag_wrong", "tag_right"),
    ("tag_wrong", "tag_revoked"),
)


def _config_data() -> dict[str, Any]:
    """The harness's identity with tags on and 1,000 revoked tags."""
    return one_identity(SECRET, domain=DOMAIN, tags=True, revoked_tags=REVOKED)


def _keys(now: float, per_class: int) -> dict[str, list[bytes]]:
    """A pool of distinct keys per class (random codes are drawn fresh, never reused)."""
    identity = config.parse(_config_data()).identities[0]
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    pool = min(per_class, 5000)
    # Many distinct old codes, so that the class is not a handful of keys whose digests
    # happen to probe the table faster or slower than average.
    old_days = [today - dt.timedelta(days=n) for n in range(3, 3 + pool // 2)]
    valid = {str(a).split("@")[0] for a in generate.current_addresses(identity, now)}

    def random_code() -> str:
        while (code := secrets.token_hex(4)) in valid:
            pass
        return code

    def tagged(day: dt.date, tag: str) -> str:
        return str(generate.address_on(identity, day, tag=tag))

    def tagged_wrong(tag: str) -> str:
        # Today's day hint and the secret's key id, then random digits: the attacker's best
        # guess, which the server must check with an HMAC.
        local = generate.address_on(identity, today, tag=tag).local
        return f"{local[: -identity.length]}{random_code()}@{DOMAIN}"

    tags = [f"t{n}" for n in range(pool)]
    raw = {
        "wrong": [f"{random_code()}@{DOMAIN}".encode() for _ in range(pool)],
        "wrong2": [f"{random_code()}@{DOMAIN}".encode() for _ in range(pool)],
        "old_day": [
            str(generate.address_on(identity, day, scheme=s)).encode()
            for day in old_days
            for s in (schemes.HMAC, schemes.MD5)
        ],
        "right": [
            str(generate.address_on(identity, today, scheme=s)).encode()
            for s in (schemes.HMAC, schemes.MD5)
        ],
        "tag_wrong": [tagged_wrong(tag).encode() for tag in tags],
        "tag_wrong2": [tagged_wrong(tag).encode() for tag in tags],
        "tag_old_day": [
            tagged(old_days[i % len(old_days)], t).encode() for i, t in enumerate(tags)
        ],
        "tag_right": [tagged(today, t).encode() for t in tags],
        # today's right code for a revoked tag: answered NOTFOUND
        "tag_revoked": [tagged(today, t).encode() for t in REVOKED],
    }
    # The same number of distinct key objects per class, allocated round-robin, so that no
    # class is faster only because its keys are fewer (hot in the cache) or packed closer.
    keys: dict[str, list[bytes]] = {name: [] for name in CLASSES}
    for index in range(pool):
        for name in CLASSES:
            source = raw[name][index % len(raw[name])]
            keys[name].append(bytes(bytearray(source)))
    return keys


def _schedule(per_class: int) -> list[str]:
    order = [name for name in CLASSES for _ in range(per_class)]
    random.shuffle(order)
    return order


def measure_in_process(per_class: int) -> dict[str, list[int]]:
    """Nanoseconds per ``AddressTable.resolve`` call, per class."""
    now = time.time()
    identities = config.parse(_config_data()).identities
    resolver = Resolver(identities, "+", now)
    table = resolver.table(now)
    keys = _keys(now, per_class)
    expected = {name: name.endswith("right") for name in CLASSES}  # tag_revoked: NOTFOUND
    for name in CLASSES:  # sanity: the classes are what they claim to be
        for key in keys[name][:50]:
            is_ok = table.resolve(key, b"+").reply.status is socketmap.Status.OK
            if is_ok != expected[name]:
                raise RuntimeError(f"{key!r} is not a {name} key")
    samples: dict[str, list[int]] = {name: [] for name in CLASSES}
    cursor = dict.fromkeys(CLASSES, 0)
    clock = time.perf_counter_ns
    resolve = table.resolve
    for name in CLASSES:  # warm up every path
        for key in keys[name][:1000]:
            resolve(key, b"+")
    gc.collect()
    gc.disable()
    try:
        for name in _schedule(per_class):
            pool = keys[name]
            key = pool[cursor[name] % len(pool)]
            cursor[name] += 1
            start = clock()
            resolve(key, b"+")
            samples[name].append(clock() - start)
    finally:
        gc.enable()
    return samples


def measure_socket(per_class: int) -> dict[str, list[int]]:
    """Nanoseconds per round trip to ``tempmail serve`` in a subprocess, per class."""
    with tempfile.TemporaryDirectory(prefix="tm-timing-") as directory:
        # log_level stays info: lookups are logged at debug only, and the harness waits for
        # the info line that says where the server listens.
        data = _config_data()
        data = serving_config(data, Path(directory), "s", as_process=True)
        config_path = write_config(Path(directory) / "c.toml", data)
        with ServerProcess(config_path, measured=False) as server:
            return _socket_samples(server.target, per_class)


def _socket_samples(target: str, per_class: int) -> dict[str, list[int]]:
    keys = _keys(time.time(), per_class)
    samples: dict[str, list[int]] = {name: [] for name in CLASSES}
    cursor = dict.fromkeys(CLASSES, 0)
    clock = time.perf_counter_ns
    with Client(target) as client:
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)

        def ask(key: bytes) -> bytes:
            client.send_raw(netstring.encode(b"tempmail " + key))
            return client.read_reply().wire

        for name in CLASSES:  # warm up, and check the classes
            for key in keys[name][:200]:
                if (b"OK" in ask(key)) != name.endswith("right"):
                    raise RuntimeError(f"{key!r} is not a {name} key")
        gc.collect()
        gc.disable()
        try:
            for name in _schedule(per_class):
                pool = keys[name]
                key = pool[cursor[name] % len(pool)]
                cursor[name] += 1
                start = clock()
                ask(key)
                samples[name].append(clock() - start)
        finally:
            gc.enable()
    return samples


# --- statistics (pure Python: no numpy or scipy in the venv) ------------------------------------


def percentile(ordered: Sequence[int], fraction: float) -> float:
    """The value at ``fraction`` of a sorted sequence (nearest rank)."""
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def median_ci(ordered: Sequence[int]) -> tuple[float, float, float]:
    """The median and a distribution-free 95% CI from order statistics (binomial, normal)."""
    n = len(ordered)
    half = 1.96 * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half))
    high = min(n - 1, math.ceil(n / 2 + half))
    return percentile(ordered, 0.5), float(ordered[low]), float(ordered[high])


def mann_whitney(x: Sequence[int], y: Sequence[int]) -> tuple[float, float, float]:
    """(z, two-sided p, A) of the Mann-Whitney U test with tie correction."""
    n1, n2 = len(x), len(y)
    merged = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    rank_sum_x = 0.0
    ties = 0.0
    index = 0
    n = n1 + n2
    while index < n:
        end = index
        while end + 1 < n and merged[end + 1][0] == merged[index][0]:
            end += 1
        count = end - index + 1
        average_rank = (index + end) / 2 + 1
        rank_sum_x += average_rank * sum(1 for k in range(index, end + 1) if merged[k][1] == 0)
        ties += count**3 - count
        index = end + 1
    u_x = rank_sum_x - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    z = (u_x - mean) / sigma if sigma else 0.0
    p = math.erfc(abs(z) / math.sqrt(2))
    # A = P(X > Y) + P(X = Y)/2 from U of x: 0.5 means neither is faster.
    return z, p, u_x / (n1 * n2)


def summarise(samples: dict[str, list[int]], unit: str) -> dict[str, Any]:
    """Per class quantiles and, per pair, the Mann-Whitney test."""
    scale = 1.0 if unit == "ns" else 1e-3
    rows: dict[str, Any] = {}
    for name, values in samples.items():
        ordered = sorted(values)
        med, low, high = median_ci(ordered)
        rows[name] = {
            "n": len(values),
            "median": med * scale,
            "median_ci95": [low * scale, high * scale],
            "p10": percentile(ordered, 0.10) * scale,
            "p90": percentile(ordered, 0.90) * scale,
            "p99": percentile(ordered, 0.99) * scale,
        }
    comparisons = []
    for a, b in PAIRS:
        z, p, effect = mann_whitney(samples[a], samples[b])
        comparisons.append(
            {
                "pair": f"{a} vs {b}",
                "median_difference": rows[b]["median"] - rows[a]["median"],
                "mann_whitney_z": z,
                "p": p,
                "A": effect,
            }
        )
    return {"unit": unit, "classes": rows, "comparisons": comparisons}


def report(title: str, summary: dict[str, Any]) -> None:
    """Print one run's table."""
    unit = summary["unit"]
    print(f"\n{title}")
    print(f"  {'class':<12} {'n':>8} {'median':>9} {'95% CI of median':>21} {'p10':>8} {'p90':>8}")
    for name, row in summary["classes"].items():
        low, high = row["median_ci95"]
        print(
            f"  {name:<12} {row['n']:>8} {row['median']:>9.2f} "
            f"{f'[{low:.2f}, {high:.2f}]':>21} {row['p10']:>8.2f} {row['p90']:>8.2f}  {unit}"
        )
    for row in summary["comparisons"]:
        print(
            f"  {row['pair']:<28} median diff {row['median_difference']:+8.2f} {unit}  "
            f"MW z={row['mann_whitney_z']:+7.2f} p={row['p']:.3g} A={row['A']:.3f}"
        )


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per pair over the repetitions: the range of A and how often p < 0.01."""
    rows = []
    for index, (a, b) in enumerate(PAIRS):
        effects = [run["comparisons"][index]["A"] for run in runs]
        differences = [run["comparisons"][index]["median_difference"] for run in runs]
        rows.append(
            {
                "pair": f"{a} vs {b}",
                "A_mean": sum(effects) / len(effects),
                "A_min": min(effects),
                "A_max": max(effects),
                "median_difference_min": min(differences),
                "median_difference_max": max(differences),
                "runs_with_p_below_0.01": sum(
                    run["comparisons"][index]["p"] < 0.01 for run in runs
                ),
                "runs": len(runs),
            }
        )
    return rows


def report_aggregate(title: str, rows: list[dict[str, Any]], unit: str) -> None:
    """Print the summary over all runs."""
    print(f"\n{title}")
    for row in rows:
        low, high = row["median_difference_min"], row["median_difference_max"]
        print(
            f"  {row['pair']:<28} A {row['A_mean']:.3f} [{row['A_min']:.3f}, {row['A_max']:.3f}]"
            f"  median diff {low:+.2f}..{high:+.2f} {unit}"
            f"  p<0.01 in {row['runs_with_p_below_0.01']}/{row['runs']} runs"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print, and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200_000, help="in-process, per class")
    parser.add_argument("--socket-samples", type=int, default=20_000, help="per class")
    parser.add_argument("--repeat", type=int, default=1, help="independent repetitions")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    random.seed(args.seed)
    results: dict[str, Any] = {"python": sys.version.split()[0], "argv": sys.argv}
    steps: list[tuple[str, str, Callable[[int], dict[str, list[int]]], int, str]] = [
        ("in_process", "in-process AddressTable.resolve", measure_in_process, args.samples, "ns"),
        ("socket", "round trip over a unix socket", measure_socket, args.socket_samples, "us"),
    ]
    for key, title, measure, count, unit in steps:
        if count <= 0:
            continue
        runs = []
        for repetition in range(args.repeat):
            started = time.monotonic()
            summary = summarise(measure(count), unit)
            summary["seconds"] = round(time.monotonic() - started, 1)
            runs.append(summary)
            report(f"{title}, run {repetition + 1} ({summary['seconds']} s)", summary)
        results[key] = {"runs": runs, "aggregate": aggregate(runs)}
        if args.repeat > 1:
            report_aggregate(f"{title}: {args.repeat} runs", results[key]["aggregate"], unit)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
