"""Root never changes another file through the socket's name (issue 11 point 1).

The README's socket directory belongs to the service user, who must remove the socket when it
stops. That user could exchange the socket's name with a symlink to a root-only file while
root, starting the server, gave the socket its mode and owner by name: root then changed the
root-only file (0660 in 29 of 30 starts, or 0666 with mode = "0666"). This test runs that
attack for real: a racing process as the service user, root starting the listener 30 times.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from helpers import require_tool
from tempmail import config as config_module
from tempmail import listeners
from tempmail.errors import ServerError

RACER = Path(__file__).with_name("symlink_racer.py")
STARTS = 30


def test_a_racing_service_user_cannot_make_root_chmod_or_chown_another_file(
    service_user: pwd.struct_passwd, short_dir: Path
) -> None:
    """30 starts against an exchange loop: the root-only file keeps its owner and mode."""
    setpriv = require_tool("setpriv", "util-linux")
    python = require_tool("/usr/bin/python3", "python3")  # Debian's: any user may run it
    short_dir.chmod(0o711)  # the service user may pass through, as through /var/spool/postfix
    victim = short_dir / "root-only"
    victim.write_text("root's\n")
    victim.chmod(0o600)
    sockets = short_dir / "tempmail"
    sockets.mkdir(mode=0o750)
    shutil.chown(sockets, service_user.pw_uid, service_user.pw_gid)  # the README's install -d
    racer = short_dir / RACER.name  # where the service user can read it
    shutil.copy(RACER, racer)
    racer.chmod(0o644)
    path = sockets / "socket"
    settings = config_module.SocketSettings(
        path=path, owner=service_user.pw_uid, group=service_user.pw_gid, mode=0o666
    )
    command = [setpriv, f"--reuid={service_user.pw_uid}", f"--regid={service_user.pw_gid}"]
    command += ["--init-groups", python, str(racer), str(path), str(victim), "8"]
    attack = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert attack.stdout is not None
    assert attack.stdout.readline() == "ready\n"
    started = refused = 0
    try:
        for _ in range(STARTS):
            try:
                bound = listeners.bind(settings)
            except ServerError:
                refused += 1  # the racer's symlink was at the name: refused, never followed
            else:
                started += 1
                time.sleep(0.02)  # serving: the socket exists, the racer exchanges its name
                bound.close()
    finally:
        out, err = attack.communicate(timeout=30)
    exchanges = int(out.strip() or 0)
    info = victim.lstat()
    print(f"\n{started} starts, {refused} refused, racer made {exchanges} exchanges")
    assert attack.returncode == 0, err
    assert exchanges > 0  # the attack really ran while the sockets existed
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o600, 0, 0)
    assert victim.read_text() == "root's\n"


def test_a_private_directory_replaced_before_it_is_opened_is_refused(
    service_user: pwd.struct_passwd, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap of the private directory itself, made deterministic: between root's mkdir and
    its open, the service user renames root's directory away and makes one of its own under
    the same name. Root refuses to bind there (the socket would be the user's to swap)."""
    sockets = short_dir / "tempmail"
    sockets.mkdir(mode=0o750)
    shutil.chown(sockets, service_user.pw_uid, service_user.pw_gid)
    real_mkdir = os.mkdir

    def mkdir_then_swapped(name: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real_mkdir(name, mode, dir_fd=dir_fd)
        os.rename(name, name + ".moved", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        real_mkdir(name, 0o700, dir_fd=dir_fd)
        os.chown(name, service_user.pw_uid, service_user.pw_gid, dir_fd=dir_fd)

    monkeypatch.setattr(os, "mkdir", mkdir_then_swapped)
    settings = config_module.SocketSettings(path=sockets / "socket", mode=0o660)
    with pytest.raises(ServerError) as caught:
        listeners.bind(settings)
    assert str(caught.value).startswith(
        f"socket.path: the directory made in {sockets} to create the socket in was replaced "
        f"(now owner uid {service_user.pw_uid}, mode 0700)"
    )
    assert not (sockets / "socket").exists()
