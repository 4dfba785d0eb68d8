"""Run the tempmail server the way ``tempmail serve`` does, with one thing changed, to measure it.

    python benchmarks/experiments/serve.py [--loop uvloop] [--impl protocol]
                                           [--midnight-at EPOCH] -c FILE serve

``--impl``:

* ``server`` (default): exactly what ``tempmail serve`` runs (``tempmail.server.Server``:
  anyio structure, a protocol per connection), on ``--loop asyncio`` or ``--loop uvloop``
  (``tempmail serve`` picks uvloop when installed).
* ``protocol``: a plain asyncio ``Protocol`` per connection feeding the same
  ``tempmail.session.Session``; no idle timeout and no connection cap. The headroom: what the
  same protocol code can do with the cheapest asyncio I/O path.
* ``bufproto``: the same with ``asyncio.BufferedProtocol``: the transport reads into one
  preallocated buffer per connection (``recv_into``) instead of ``recv(256 KiB)``, which on
  CPython 3.11's selector loop costs an mmap/mremap/munmap per read.

Earlier experiments (anyio streams, ``loop.sock_recv``, protocols behind the anyio accept
loop) led to the current design; their figures are in docs/benchmarks.md.

``--midnight-at EPOCH`` shifts the server's wall clock so that a local midnight of the first
identity falls at the real instant EPOCH: a day rollover under load, on demand, through the
``clock`` parameter that ``Server`` already has. Throwaway experiment code: not a product.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio

from tempmail import config as config_module
from tempmail import listeners, logs
from tempmail.handler import Handler, HandlerRef
from tempmail.privileges import drop_privileges
from tempmail.server import Server
from tempmail.session import Session
from tempmail.stats import Stats

if TYPE_CHECKING:
    from collections.abc import Callable

    from tempmail.config import Config
    from tempmail.listeners import Bound


def main() -> int:
    """Serve the config with the chosen implementation until SIGTERM or SIGINT."""
    args = _parser().parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    logs.configure("info")
    config = config_module.load(args.config)
    logs.configure(config.server.log_level)
    clock = _clock(config, args.midnight_at)
    bound = [listeners.bind(config.socket)]
    loader = functools.partial(config_module.load, config.path, os.environ)
    try:
        if args.impl in ("protocol", "bufproto"):
            drop_privileges(config.server.user)
            protocol = SocketmapProtocol if args.impl == "protocol" else BufferedSocketmapProtocol
            _run_protocol(config, bound, clock, loader, protocol, uvloop=args.loop == "uvloop")
        else:
            # As tempmail.service.run_server (minus systemd notification, unused here).
            cls = Server

            async def serve() -> None:
                drop_privileges(config.server.user)
                server = cls(config, bound, loader=loader, clock=clock)
                if not args.lag_monitor:
                    await server.run()
                    return
                lags: list[float] = []
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_watch_loop, lags)
                    await server.run()
                    tg.cancel_scope.cancel()
                _report_lags(lags)

            options = {"use_uvloop": True} if args.loop == "uvloop" else {}
            anyio.run(serve, backend="asyncio", backend_options=options)
    finally:
        for b in bound:
            b.close()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # `-c CONFIG serve`, as `tempmail -c CONFIG serve`: the harness starts both alike.
    parser.add_argument("-c", "--config", required=True, type=Path)
    parser.add_argument("command", choices=["serve"], help="what tempmail's command line says")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument(
        "--impl",
        choices=["server", "protocol", "bufproto"],
        default="server",
    )
    parser.add_argument(
        "--midnight-at", type=float, metavar="EPOCH", help="shift the clock: midnight then"
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        metavar="S",
        help="sys.setswitchinterval(S) (CPython's GIL hand-over interval, default 0.005)",
    )
    parser.add_argument(
        "--lag-monitor",
        action="store_true",
        help="--impl server: time a 1 ms sleep in a loop; print how late it woke, at exit",
    )
    return parser


def _clock(config: Config, midnight_at: float | None) -> Callable[[], float]:
    """time.time, or time.time shifted so that a local midnight happens at ``midnight_at``."""
    if midnight_at is None:
        return time.time
    zone = config.identities[0].timezone
    tomorrow = dt.datetime.fromtimestamp(midnight_at, zone).date() + dt.timedelta(days=1)
    midnight = dt.datetime.combine(tomorrow, dt.time(0), tzinfo=zone).timestamp()
    offset = midnight - midnight_at
    print(f"serve.py: clock shifted by {offset:.3f} s", file=sys.stderr)
    return lambda: time.time() + offset


# --- loop lag monitor -----------------------------------------------------------------------

#: The monitor's sleep: short, so that any stall of the loop shows up almost in full.
_TICK = 0.001


async def _watch_loop(lags: list[float]) -> None:
    """Sleep 1 ms, again and again, recording how much later than asked each wake-up was.

    A stall of the event loop (a long callback, the GIL held by another thread) delays the
    wake-up by about its length: the in-process view of "a lookup had to wait", free of the
    client's own scheduling noise.
    """
    while True:
        start = time.perf_counter()
        await anyio.sleep(_TICK)
        lags.append(time.perf_counter() - start - _TICK)


def _report_lags(lags: list[float]) -> None:
    ordered = sorted(lags)
    summary = {
        "samples": len(ordered),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else None,
        "p999_ms": round(ordered[int(0.999 * (len(ordered) - 1))] * 1000, 2) if ordered else None,
        "over_5ms": len([x for x in ordered if x > 0.005]),
        "over_10ms": len([x for x in ordered if x > 0.010]),
    }
    print(f"serve.py: loop lag {json.dumps(summary)}", file=sys.stderr)


# --- protocol: asyncio Protocol over the same Session ---------------------------------------


class SocketmapProtocol(asyncio.Protocol):
    """One connection: bytes in, ``Session.receive``, replies out; no task, no coroutine."""

    def __init__(self, ref: HandlerRef, clock: Callable[[], float]) -> None:
        self._session = Session(ref)
        self._clock = clock
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport: replies go out through it."""
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        """Answer every whole request received; close after a protocol error."""
        replies, close = self._session.receive(data, self._clock())
        transport = self._transport
        assert transport is not None  # noqa: S101 - set in connection_made
        if replies:
            transport.write(replies)
        if close:
            transport.close()

    def eof_received(self) -> bool | None:
        """Answer what is buffered, then close (a partial request gets no reply)."""
        replies, _ = self._session.receive(b"", self._clock())
        if replies and self._transport is not None:
            self._transport.write(replies)
        return False  # close our side too

    def pause_writing(self) -> None:
        """The client does not read its replies: stop reading its requests."""
        # The client does not read its replies: stop reading its requests (bounded memory).
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        """The client reads again: so do we."""
        if self._transport is not None:
            self._transport.resume_reading()


class BufferedSocketmapProtocol(SocketmapProtocol, asyncio.BufferedProtocol):
    """``SocketmapProtocol`` reading into one reusable buffer (no allocation per read)."""

    def __init__(self, ref: HandlerRef, clock: Callable[[], float]) -> None:
        super().__init__(ref, clock)
        self._buffer = bytearray(65536)
        self._view = memoryview(self._buffer)

    def get_buffer(self, sizehint: int) -> memoryview:
        """The one preallocated buffer the transport reads into."""
        del sizehint
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` arrived in the buffer: answer them."""
        self.data_received(bytes(self._view[:nbytes]))  # small copy: Session wants bytes


def _run_protocol(  # noqa: PLR0913 - every part of the server, injected
    config: Config,
    bound: list[Bound],
    clock: Callable[[], float],
    loader: Callable[[], Config],
    protocol: type[SocketmapProtocol],
    *,
    uvloop: bool,
) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if uvloop:
        import uvloop as uvloop_module  # noqa: PLC0415 - optional

        factory = uvloop_module.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve_protocol(config, bound, clock, loader, protocol))


async def _serve_protocol(
    config: Config,
    bound: list[Bound],
    clock: Callable[[], float],
    loader: Callable[[], Config],
    protocol: type[SocketmapProtocol],
) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats(started=clock())
    ref = HandlerRef(Handler(config, clock(), stats))
    servers: list[Any] = []
    for b in bound:
        factory = functools.partial(protocol, ref, clock)
        if b.sock.family == socket.AF_UNIX:
            servers.append(await loop.create_unix_server(factory, sock=b.sock))
        else:
            servers.append(await loop.create_server(factory, sock=b.sock))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        # As Server.reload: parse in a worker thread, build the new table on the loop.
        new = await loop.run_in_executor(None, loader)
        ref.handler = Handler(new, clock(), stats)
        print("serve.py: configuration reloaded", file=sys.stderr)

    def on_hup() -> None:
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    addresses = ", ".join(b.description for b in bound)
    # The line tempmail serve logs once ready (the harness waits for it).
    print(
        f"serve.py: protocol server ({type(loop).__module__}) listening on {addresses}",
        file=sys.stderr,
    )
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    sys.exit(main())
