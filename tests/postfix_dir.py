"""A Postfix configuration of the test's own: never the host's /etc/postfix.

Debian's postfix package installed with "No configuration" has no /etc/postfix/main.cf, and
postmap and postconf then fail ("fatal: open /etc/postfix/main.cf"). Every test gives them a
directory of its own with ``-c DIR``: a main.cf with only what the test sets, and optionally
Debian's default master.cf (/usr/share/postfix/master.cf.dist: smtpd, cleanup, pickup,
bounce, trivial-rewrite, ... chrooted). The queue directory is a directory of the test's own
too, so a check may chroot into it.

Postfix's daemons run as ``mail_owner`` (postfix, created by Debian's package); the
directories here are world-searchable so that a process running as postfix reaches them, as it
reaches /etc/postfix and /var/spool/postfix on a real host.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import require_tool

#: Debian's default master.cf (package postfix).
MASTER_CF_DIST = Path("/usr/share/postfix/master.cf.dist")
#: The user Postfix's daemons run as (Debian's package creates it).
MAIL_OWNER = "postfix"


@dataclass(frozen=True)
class PostfixDir:
    """A config directory (main.cf, master.cf) and a queue directory, both the test's."""

    config: Path
    queue: Path

    def postconf(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``postconf -c DIR ARGS``."""
        return subprocess.run(
            [require_tool("postconf", "postfix"), "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=30,
        )

    def set(self, *lines: str) -> None:
        """``postconf -c DIR -e LINE...``: what an operator does."""
        self.postconf("-e", *lines)
        self.date_back()

    def date_back(self) -> None:
        """Make main.cf ten seconds old.

        Postfix's programs wait until a table is about two seconds old before they read it
        (measured: a postmap -q right after a main.cf change takes 2.1 s instead of 6 ms;
        inline tables count as main.cf), so that a half-written file is never used. Nobody is
        writing here.
        """
        old = time.time() - 10
        os.utime(self.config / "main.cf", (old, old))

    def value(self, name: str, *, expanded: bool = False) -> str:
        """A parameter as main.cf holds it, or as the daemons see it (``expanded``)."""
        flags = "-hx" if expanded else "-h"
        return self.postconf(flags, name).stdout.rstrip("\n")

    def postmap(
        self, *args: str, input_text: str | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``postmap -c DIR ARGS`` (in the queue directory unless told otherwise)."""
        return subprocess.run(
            [require_tool("postmap", "postfix"), "-c", str(self.config), *args],
            input=input_text,
            capture_output=True,
            text=True,
            check=False,
            cwd=cwd or self.queue,
            timeout=30,
        )


def make_postfix_dir(root: Path, *, master_cf: bool = True) -> PostfixDir:
    """``root``/etc with a main.cf naming ``root``/queue as the queue directory.

    ``master_cf``: Debian's default master.cf (chrooted smtpd and cleanup), else none.
    """
    require_tool("postconf", "postfix")
    root.mkdir(mode=0o755, exist_ok=True)
    root.chmod(0o755)  # a short_dir is 0700
    config = root / "etc"
    queue = root / "queue"
    for directory in (config, queue, queue / "tempmail"):
        directory.mkdir(mode=0o755)
        directory.chmod(0o755)  # whatever the umask
    (config / "main.cf").write_text(f"queue_directory = {queue}\n")
    if master_cf:
        (config / "master.cf").write_text(MASTER_CF_DIST.read_text())
    for file in config.iterdir():
        file.chmod(0o644)
    made = PostfixDir(config, queue)
    made.date_back()
    return made


def require_root() -> None:
    """Becoming Postfix's mail_owner and chrooting need root: skip locally, fail in CI."""
    if os.geteuid() == 0:
        return
    message = "needs root (to connect as Postfix's mail_owner, chrooted)"
    if os.environ.get("TEMPMAIL_REQUIRE_ALL") == "1":
        pytest.fail(message + " (TEMPMAIL_REQUIRE_ALL=1: nothing may be skipped)")
    pytest.skip(message)
