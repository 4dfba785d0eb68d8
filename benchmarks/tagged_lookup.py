"""In-process cost of one tagged lookup (issue 11, point 3): valid, bogus and revoked keys.

    .venv/bin/python -m benchmarks.tagged_lookup [--repeats 7] [--seconds 0.2]
    PYTHONPATH=/elsewhere/src .venv/bin/python -m benchmarks.tagged_lookup   # another version

For ``tag_window`` 30 and 366, with one secret and with a previous secret as well, it times
``Resolver.resolve`` (what the server does for each request) on keys of these classes:

* ``valid``:   tagged addresses of dates spread over the tag window (answered OK);
* ``bogus``:   the same addresses with the digits after the day hint and key id replaced by
  random ones: the worst case an attacker can send (a date in the window, a key id in use);
* ``revoked``: valid addresses of a revoked tag (answered NOTFOUND);
* ``legacy bogus`` (only where ``legacy_tags_until`` exists): random 1.x codes ``TAG.CODE``
  on the upgrade day, when the whole tag window is still checked in the 1.x format.

With ``--revoked`` it measures instead whether a revoked tag can be told from another by the
time of one lookup (SECURITY.md, "Revoked tags"): 1,000 revoked tags, and per class 5,000
distinct keys (revoked tags with right codes, revoked tags with wrong codes, unrevoked tags
with wrong codes from 5,000 and from 1,000 tags), each lookup timed on its own in a shuffled
order (60,000 per class, garbage collection off); it prints each class's median in ns.

Each measurement is a loop of many lookups of one class, timed with ``time.perf_counter_ns``
(wall clock) and ``time.thread_time_ns`` (this thread's CPU time, which time spent waiting for
a core on a busy machine does not inflate); the classes are interleaved and each is repeated;
the figures are the medians of the repeats, in microseconds per lookup. Every reply is checked
once before timing, so a figure is never of a wrong answer.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import os
import platform
import random
import statistics
import time
from typing import Any

from tempmail import config, generate, lookup, window
from tempmail.config import Identity
from tempmail.socketmap import Status

NOW = dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC).timestamp()
SECRET = "correct horse $battery staple ü"  # noqa: S105 - test data
#: Chosen so that its key id differs from SECRET's: the lookup then computes one HMAC.
PREVIOUS = "the secret of last month"
POOL = 64


def identity_data(tag_window: int, secrets: int, legacy: bool) -> dict[str, Any]:
    """A tagged identity with ``tag_window`` and ``secrets`` secrets (1.x codes if ``legacy``)."""
    table: dict[str, Any] = {
        "domain": "example.org",
        "recipient": "owner@example.net",
        "secret": SECRET,
        "length": 8,
        "tags": True,
        "tag_window": tag_window,
        "revoked_tags": ["gone"],
    }
    if secrets == 2:
        table["previous_secrets"] = [PREVIOUS]
    if legacy:
        table["legacy_tags_until"] = "2026-11-27"
    return {"identities": {"default": table}}


def keys(identity: Identity, tag_window: int, rng: random.Random) -> dict[str, list[bytes]]:
    """Keys of every class for ``identity``, dates spread over the tag window."""
    today = dt.date(2026, 11, 27)
    days = [today - dt.timedelta(days=rng.randrange(tag_window)) for _ in range(POOL)]
    valid = [generate.address_on(identity, day, tag=f"t{i}") for i, day in enumerate(days)]

    def scrambled(address: generate.Address) -> bytes:
        tag, _, code = address.local.partition(".")
        random_digits = "".join(rng.choice("0123456789abcdef") for _ in range(identity.length))
        keep = code[: len(code) - identity.length]  # the day hint and key id, if any
        return f"{tag}.{keep}{random_digits}@{address.domain}".encode()

    classes = {
        "valid": [str(a).encode() for a in valid],
        "bogus": [scrambled(a) for a in valid],
        "revoked": [str(generate.address_on(identity, day, tag="gone")).encode() for day in days],
    }
    if getattr(identity, "legacy_tags_until", None) is not None:
        classes["legacy bogus"] = [
            f"t{i}.{rng.getrandbits(32):08x}@example.org".encode() for i in range(POOL)
        ]
    return classes


def time_class(resolver: lookup.Resolver, pool: list[bytes], count: int) -> tuple[float, float]:
    """Microseconds per lookup (wall, CPU) over ``count`` lookups cycling through ``pool``."""
    resolve = resolver.resolve
    batch = (pool * (count // len(pool) + 1))[:count]
    cpu = time.thread_time_ns()
    start = time.perf_counter_ns()
    for key in batch:
        resolve(key, NOW)
    wall = time.perf_counter_ns() - start
    cpu = time.thread_time_ns() - cpu
    return wall / count / 1000, cpu / count / 1000


def measure(
    tag_window: int, secrets: int, legacy: bool, repeats: int, seconds: float
) -> dict[str, tuple[float, float]]:
    """Median wall and CPU microseconds per lookup, per class of key."""
    loaded = config.parse(identity_data(tag_window, secrets, legacy), environ={})
    identity = loaded.identities[0]
    resolver = lookup.Resolver(loaded.identities, "+", NOW)
    classes = keys(identity, tag_window, random.Random(tag_window * 10 + secrets))
    expected = {"valid": Status.OK}
    counts = {}
    for name, pool in classes.items():
        for key in pool:  # every reply is checked once, outside the timing
            status = resolver.resolve(key, NOW).reply.status
            if status is not expected.get(name, Status.NOTFOUND):
                raise SystemExit(f"{name}: {key!r} answered {status.value}")
        per_lookup, _ = time_class(resolver, pool, 50)
        counts[name] = max(50, int(seconds * 1e6 / per_lookup))
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in classes}
    for _ in range(repeats):
        for name, pool in classes.items():
            samples[name].append(time_class(resolver, pool, counts[name]))
    return {
        name: (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
        for name, values in samples.items()
    }


def compare_revoked(samples: int) -> dict[str, float]:
    """Median ns of single lookups per class: revoked and unrevoked tags, right and wrong."""
    data = identity_data(30, 1, legacy=False)
    data["identities"]["default"]["revoked_tags"] = [f"r{n}" for n in range(1000)]
    loaded = config.parse(data, environ={})
    identity = loaded.identities[0]
    table = lookup.Resolver(loaded.identities, "+", NOW).table(NOW)
    today = window.local_date(NOW, identity.timezone)
    rng = random.Random(5)

    def local(tag: str) -> str:
        return generate.address_on(identity, today, tag=tag).local

    def wrong(tag: str) -> str:
        code = local(tag)
        return f"{code[: -identity.length]}{rng.getrandbits(32):08x}@example.org"

    sources = {
        "revoked, right code": [f"{local(f'r{n}')}@example.org" for n in range(1000)],
        "revoked, wrong code": [wrong(f"r{n}") for n in range(1000)],
        "unrevoked (5,000 tags), wrong code": [wrong(f"t{n}") for n in range(5000)],
        "unrevoked (1,000 tags), wrong code": [wrong(f"u{n}") for n in range(1000)],
    }
    # Distinct key objects, as many per class, so no class is faster by being hot in a cache.
    keys = {
        name: [bytes(bytearray(found[i % len(found)].encode())) for i in range(5000)]
        for name, found in sources.items()
    }
    for name, pool in keys.items():
        status = table.resolve(pool[0], b"+").reply.status
        if status is not Status.NOTFOUND:
            raise SystemExit(f"{name}: {pool[0]!r} answered {status.value}")
    order = [name for name in keys for _ in range(samples)]
    rng.shuffle(order)
    cursor = dict.fromkeys(keys, 0)
    timings: dict[str, list[int]] = {name: [] for name in keys}
    resolve, clock = table.resolve, time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for name in order:
            key = keys[name][cursor[name] % 5000]
            cursor[name] += 1
            start = clock()
            resolve(key, b"+")
            timings[name].append(clock() - start)
    finally:
        gc.enable()
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> None:
    """Measure every configuration and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.2, help="per measurement")
    parser.add_argument("--revoked", action="store_true", help="revoked against other tags")
    args = parser.parse_args()
    if args.revoked:
        for name, median in compare_revoked(60_000).items():
            print(f"{name:36} median {median:8,.0f} ns")
        return
    has_legacy = any(f.name == "legacy_tags_until" for f in dataclasses.fields(config.Identity))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"Python {platform.python_version()} ({platform.machine()}, {os.cpu_count()} cores); "
        f"tempmail from {lookup.__file__}; median of {args.repeats} repeats; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average before: {load}",
        flush=True,
    )
    print("\nµs per lookup, wall clock / CPU time of the thread:\n")
    header = "| tag_window | secrets | valid | bogus | revoked |"
    print(header + (" legacy bogus (upgrade day) |" if has_legacy else ""))
    print("|--:|--:|--:|--:|--:|" + ("--:|" if has_legacy else ""))
    for tag_window in (30, 366):
        for secrets in (1, 2):
            result = measure(tag_window, secrets, has_legacy, args.repeats, args.seconds)
            cells = [f"{wall:,.1f} / {cpu:,.1f}" for wall, cpu in result.values()]
            print(f"| {tag_window} | {secrets} | " + " | ".join(cells) + " |", flush=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average after: {load}")


if __name__ == "__main__":
    main()
