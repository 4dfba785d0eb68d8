"""Per-request cost of tempmail's sans-I/O code, in process, without any socket or event loop.

    .venv/bin/python -m benchmarks.experiments.session_micro [--number 200000]

Times ``Session.receive`` for one request (what the server calls once per read when Postfix
sends one query at a time) and its parts, for the benchmark's key mix, so the profile of the
server can be split into "protocol and lookup" vs "I/O and event loop". Also times a few
alternatives the lead may consider (a plain dict of valid keys instead of the keyed BLAKE2b
digest; a fast path for "exactly one whole netstring in the buffer"; recv sizes), so that
each suggestion comes with a number. Throwaway experiment code.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from benchmarks import common
from tempmail import config as config_module
from tempmail import generate, socketmap
from tempmail.handler import Handler, HandlerRef
from tempmail.lookup import AddressTable
from tempmail.session import Session


def main() -> int:
    """Print the per-request figures, the table build and the recv sizes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=200_000, help="calls per figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tempmail-micro-", dir="/tmp") as tmp:
        config = config_module.load(common.write_config(Path(tmp), "micro"))
    now = time.time()
    identity = config.identities[0]
    valid = [str(a) for a in generate.current_addresses(identity, now)]
    keys = [k for a in valid for k in common.key_variants(a)]
    # The benchmark's mix: half valid spellings, half unknown keys at our domain.
    unknown = [common.INVALID_TEMPLATE.replace("{}", secrets.token_hex(8)) for _ in keys]
    mix = [k.encode() for pair in zip(keys, unknown, strict=True) for k in pair]
    requests = [common.MAP_NAME.encode() + b" " + k for k in mix]
    wires = [b"%d:%b," % (len(r), r) for r in requests]

    handler = Handler(config, now)
    session = Session(HandlerRef(handler))
    resolver = handler.resolver
    table = resolver.table(now)
    decoder = socketmap.decoder(512)
    lower_keys = [k.lower() for k in mix]
    plain = dict.fromkeys(lower_keys[::2], True)

    def cycle(action: Callable[[bytes], object], items: list[bytes]) -> Callable[[], None]:
        it = items * 1  # local copy

        def run() -> None:
            for item in it:
                action(item)

        return run

    def decode_one(wire: bytes) -> object:
        decoder.feed(wire)
        return decoder.next_event(), decoder.next_event()

    def fast_path(wire: bytes) -> bytes | None:
        # "Exactly one whole netstring": what a Postfix read almost always holds.
        colon = wire.find(b":", 0, 7)
        if (
            colon > 0
            and wire[-1:] == b","
            and wire[:colon].isdigit()
            and int(wire[:colon]) == len(wire) - colon - 2
        ):
            return wire[colon + 1 : -1]
        return None

    figures: list[tuple[str, Callable[[bytes], object], list[bytes]]] = [
        ("Session.receive (1 request per read)", lambda w: session.receive(w, now), wires),
        ("  NetstringDecoder feed + 2 x next_event", decode_one, wires),
        ("  Handler.answer", lambda r: handler.answer(r, now), requests),
        ("    Resolver.resolve", lambda k: resolver.resolve(k, now), mix),
        ("      AddressTable.resolve", lambda k: table.resolve(k, b"+"), mix),
        (
            "        keyed BLAKE2b digest of local@domain (AddressTable._digest)",
            lambda k: table._digest(k.partition(b"@")[0], b"example.org"),  # noqa: SLF001
            lower_keys,
        ),
        ("alt: one-netstring fast path (parse only)", fast_path, wires),
        ("alt: dict of lower-cased valid keys (probe only)", lambda k: k.lower() in plain, mix),
    ]
    print(f"{len(mix)} keys, {args.number} calls per figure; µs per request (best of 5)")
    for title, action, items in figures:
        run = cycle(action, items)
        loops = max(1, args.number // len(items))
        best = min(timeit.repeat(run, number=loops, repeat=5))
        print(f"{best / (loops * len(items)) * 1e6:7.3f}  {title}")
    print_table_build(config, now)
    print_recv_sizes()
    return 0


def print_table_build(config: config_module.Config, now: float) -> None:
    """Microseconds to build the day's table for ``config``."""
    key = secrets.token_bytes(32)
    best = min(timeit.repeat(lambda: AddressTable(config.identities, now, key), number=200))
    print(f"{best / 200 * 1e6:7.1f}  AddressTable build for this config (µs)")


def print_recv_sizes() -> None:
    """recv(N) of a 40-byte request: CPython allocates N bytes, then shrinks the object."""
    a, b = socket.socketpair()
    request = b"35:tempmail 54a97084+news@example.org,"
    buffer = bytearray(65536)
    with a, b:
        # (262144, asyncio's selector transport size, is left out: its cost depends on
        # glibc's adaptive mmap threshold, i.e. on the process's history.)
        for size in (65536, 4096):

            def recv(size: int = size) -> None:
                a.send(request)
                b.recv(size)

            best = min(timeit.repeat(recv, number=20000, repeat=5))
            print(
                f"{best / 20000 * 1e6:7.3f}  send + recv({size}) of one request over a socketpair"
            )

        def recv_into() -> None:
            a.send(request)
            b.recv_into(buffer)

        best = min(timeit.repeat(recv_into, number=20000, repeat=5))
        print(f"{best / 20000 * 1e6:7.3f}  send + recv_into(64 KiB bytearray) of one request")


if __name__ == "__main__":
    sys.exit(main())
