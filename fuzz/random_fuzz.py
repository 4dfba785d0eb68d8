"""Plain-Python fallback fuzzer: random and mutated inputs through fuzz/targets.py.

For machines where atheris does not build. No coverage guidance, but structured mutations of
the seeds (splices, bit flips, inserted tokens, length fields) reach the same branches.

    .venv/bin/python -m fuzz.random_fuzz --runs 1000000 [--seed N]

Prints the number of inputs, the time taken and inputs per second; a failing input is written
to ``fuzz-failure-<sha1>`` and its traceback printed, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
import traceback
from pathlib import Path

from fuzz.make_seeds import seeds
from fuzz.targets import run_all

TOKENS = [
    b":",
    b",",
    b"tempmail ",
    b"@example.org",
    b"+",
    b".",
    b"shop.",
    b"0:,",
    b"100000:",
    b"100001:",
    b"\x00",
    b"\xff",
    b"NOTFOUND ",
    b"OK ",
    b"PERM ",
    b"0",
    b"9",
    b";",
]


def mutate(rng: random.Random, corpus: list[bytes]) -> bytes:
    """One new input from the seeds."""
    data = bytearray(rng.choice(corpus))
    for _ in range(rng.randint(1, 6)):
        choice = rng.random()
        position = rng.randint(0, len(data))
        if choice < 0.2 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif choice < 0.4:
            data[position:position] = rng.choice(TOKENS)
        elif choice < 0.55 and data:
            del data[position : position + rng.randint(1, 16)]
        elif choice < 0.7:
            other = rng.choice(corpus)
            start = rng.randint(0, len(other))
            data[position:position] = other[start : start + rng.randint(1, 64)]
        elif choice < 0.8:
            data[position:position] = b"%d:" % rng.choice(
                [0, 1, 9, 63, 64, 65, 127, 128, 129, 99999, 100000, 100001, rng.randint(0, 10**7)]
            )
        elif choice < 0.9:
            data[position:position] = rng.randbytes(rng.randint(1, 8))
        elif data:
            data[0:4] = rng.randbytes(4)  # the header: read sizes, max_length, end of stream
    return bytes(data)


def main() -> int:
    """Fuzz for --runs inputs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    corpus = seeds()
    started = time.monotonic()
    for run in range(1, args.runs + 1):
        data = mutate(rng, corpus) if rng.random() < 0.9 else rng.randbytes(rng.randint(0, 300))
        try:
            run_all(data)
        except Exception:  # noqa: BLE001 - every exception is a finding
            name = f"fuzz-failure-{hashlib.sha1(data, usedforsecurity=False).hexdigest()}"
            Path(name).write_bytes(data)
            traceback.print_exc()
            print(f"failure after {run} inputs; input written to {name}")
            return 1
        if run % 100_000 == 0:
            elapsed = time.monotonic() - started
            print(f"{run} inputs in {elapsed:.0f} s ({run / elapsed:.0f}/s)", flush=True)
        if rng.random() < 0.01 and len(corpus) < 5000:
            corpus.append(data)
    elapsed = time.monotonic() - started
    print(f"done: {args.runs} inputs in {elapsed:.1f} s ({args.runs / elapsed:.0f}/s), no failure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
