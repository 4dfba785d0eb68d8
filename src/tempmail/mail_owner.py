"""Connect to tempmail's socket as Postfix's ``mail_owner``, the way Postfix's daemons do.

A forked child becomes the user exactly as a daemon does (chroot_uid(3): setgid, initgroups,
chroot to the queue directory when master.cf chroots the service, else chdir there, then
setuid) and connects to the socket by the name main.cf gives it, so that a relative socket
name is resolved where the daemons resolve it. ``tempmail check`` (tempmail.doctor) runs it
for the chrooted and the other services; the server's warning at start judges permission bits
instead, without connecting (tempmail.access).

The child reports one short JSON line through a pipe and leaves with ``os._exit``; the parent
waits for it at most :data:`PROBE_TIMEOUT` seconds, then kills it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tempmail.access import Account
from tempmail.client import Client
from tempmail.errors import TempmailError

if TYPE_CHECKING:
    from pathlib import PurePosixPath

#: What the probe looks up: never a valid address (.invalid, RFC 2606).
PROBE_KEY: Final = "tempmail-check@check.invalid"
#: Seconds one probe may take, connecting and asking included.
PROBE_TIMEOUT: Final = 30.0
#: What one probe child may report (a short status line).
_PROBE_REPLY_LIMIT: Final = 4096


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe: None for a server that answered, else why not."""

    error: str | None
    errno: int | None = None


def probe(
    account: Account, target: str, map_name: str, queue: PurePosixPath, *, chroot: bool
) -> ProbeResult:
    """Connect to ``target`` as ``account`` in a child process, as a Postfix daemon would.

    The child runs no Python code that takes a lock another thread could hold (the parent
    may run threads: tests serve from one): it only makes system calls and writes one line
    to a pipe, then leaves with ``os._exit``.
    """
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its result is asserted through the parent
        os.close(reader)
        status = 0
        try:
            line = _probe_child(account, target, map_name, queue, chroot=chroot)
            os.write(writer, line.encode()[:_PROBE_REPLY_LIMIT])
        except BaseException:  # noqa: BLE001 - nothing may escape a forked child
            status = 1
        os._exit(status)
    os.close(writer)
    finished = False
    try:
        reply, finished = _read_with_deadline(reader, time.monotonic() + PROBE_TIMEOUT)
    finally:
        os.close(reader)
        if not finished:  # hung (or the parent was interrupted): it must not outlive us
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    try:
        data = json.loads(reply)
    except ValueError:
        return ProbeResult("the probe gave no answer (it timed out or failed)")
    return ProbeResult(data.get("error"), data.get("errno"))


def _probe_child(
    account: Account, target: str, map_name: str, queue: PurePosixPath, *, chroot: bool
) -> str:  # pragma: no cover - runs in the forked child
    try:
        if os.geteuid() == 0:
            # chroot_uid(3): group ids first, then the jail, then the user id.
            os.setgid(account.gid)
            os.setgroups(list(account.groups))
            if chroot:
                os.chroot(queue)
                os.chdir("/")
            else:
                os.chdir(queue)
            os.setuid(account.uid)
        else:
            os.chdir(queue)
        with Client(target, timeout=PROBE_TIMEOUT / 3) as client:
            reply = client.query(map_name, PROBE_KEY)
    except OSError as exc:
        return json.dumps({"error": exc.strerror or str(exc), "errno": exc.errno})
    except TempmailError as exc:
        return json.dumps({"error": f"not a socketmap server: {exc}"})
    if reply.status.value not in ("OK", "NOTFOUND"):
        return json.dumps({"error": f"the server answered {reply.status.value} {reply.data}"})
    return json.dumps({"error": None})


def _read_with_deadline(fd: int, deadline: float) -> tuple[bytes, bool]:
    """What the child wrote, and whether it closed the pipe (exited) before ``deadline``."""
    chunks: list[bytes] = []
    size = 0
    while size <= _PROBE_REPLY_LIMIT:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b"".join(chunks), False
        chunk = os.read(fd, _PROBE_REPLY_LIMIT)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False
