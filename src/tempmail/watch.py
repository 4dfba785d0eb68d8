"""Has a file changed? Signatures of files as their readers see them, compared over time.

A configuration or secret file changes in three ways, and a reader must see all three:

* **edited in place** (``>>``, ``truncate``): same inode, new size or modification time;
* **replaced by a rename** (editors, ``sed -i``, ``install``): a new inode at the same name;
* **swapped through a symlink**, as the kubelet updates ConfigMap and Secret volumes: the
  names are symlinks through ``..data``, which is atomically pointed at a new directory.

``os.stat`` follows symlinks, so one signature per path covers all three: the device and inode
of the file the name leads to now, its size, and its modification and change times in
nanoseconds. A file that cannot be read has the error number as its signature, so a file that
appears or disappears is a change too.

A change is acted on once the signatures have been the same for two polls in a row
(:class:`ChangeDetector`), so a file caught halfway through an editor's write is not loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

#: The signature of one file: (device, inode, size, mtime ns, ctime ns), or (errno,).
Signature = tuple[int, ...]


def signature(path: Path) -> Signature:
    """What identifies the current content of the file at ``path`` (following symlinks)."""
    try:
        info = path.stat()
    except OSError as exc:
        return (exc.errno or -1,)
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def signatures(paths: Iterable[Path]) -> tuple[Signature, ...]:
    """The signatures of ``paths``, in order."""
    return tuple(signature(path) for path in paths)


@dataclass(slots=True)
class ChangeDetector:
    """Tells when a set of files has changed and then stayed the same for one more poll."""

    baseline: tuple[Signature, ...]
    _pending: tuple[Signature, ...] | None = None

    def poll(self, current: tuple[Signature, ...]) -> bool:
        """Feed the signatures of one poll; True when a settled change should be acted on."""
        if current == self.baseline:
            self._pending = None
            return False
        if current != self._pending:
            self._pending = current  # changed since the last poll: wait until it settles
            return False
        self._pending = None
        return True

    def rebase(self, baseline: tuple[Signature, ...]) -> None:
        """What was loaded (or tried) last: changes are measured from here."""
        self.baseline = baseline
        self._pending = None
