"""Write the seed corpus (fuzz/seeds/): valid, odd and malformed requests and replies.

Run from the repository root: ``.venv/bin/python -m fuzz.make_seeds``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fuzz.targets import VALID
from tempmail import netstring


def seeds() -> list[bytes]:
    """Inputs that reach every branch quickly; each starts with a header (see split_header)."""

    def req(key: str | bytes) -> bytes:
        raw = key.encode() if isinstance(key, str) else key
        return netstring.encode(b"tempmail " + raw)

    streams = [
        b"".join(req(a) for a in VALID),
        req(VALID[0].upper()) + req(VALID[0].replace("@", "+ext@")),
        req("x@example.org") + req("example.org") + req("@example.org"),
        req(b"\xff\x00@example.org") + req('"a b"@example.org'),
        req("k" * 300),
        b"0:,",
        b"8:tempmail,",
        netstring.encode(b"virtual x@example.org"),
        b"01:a,",
        b"18446744073709551616:",
        b"100001:",
        b"99999:" + b"x" * 200,
        b"5:hello;",
        b"22:tempmail x@example.org",
        b"123456789",
        b"GET / HTTP/1.1\r\n\r\n",
        b"9:NOTFOUND ,",
        b"20:OK owner@example.net,",
        b"9:TEMP busy,4:PERM,12:TIMEOUT slow,",
        b"3:BAD,",
    ]
    header = bytes([0x80, 0, 64, 3, 7, 1, 200])  # end of stream, max_length 64, 3 read sizes
    return [header + stream for stream in streams] + [a.encode() for a in VALID]


def main() -> None:
    """Replace fuzz/seeds/ with the current seeds."""
    directory = Path(__file__).parent / "seeds"
    directory.mkdir(exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    for seed in seeds():
        (directory / hashlib.sha1(seed, usedforsecurity=False).hexdigest()).write_bytes(seed)


if __name__ == "__main__":
    main()
