"""May a given user search, read or write a path? Judged as the kernel will judge that user.

Used before the fact, where a mistake would otherwise show only later and elsewhere: whether
Postfix's daemons can connect to the socket (they get "Permission denied" and defer all mail
with 451, while ``postmap -q`` run as root works), and whether the service user can still read
the Python installation after the server dropped root (it crashes at its next import).

The rules are the classic permission bits with the user's uid and its groups from /etc/group
(what initgroups() gives a daemon): every directory above the path must grant search (x), the
path itself the permission asked for. Access control lists and capabilities are not looked at;
root may do everything.
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class Permission(enum.Enum):
    """What is asked of the path itself: (owner, group, other) bits."""

    SEARCH = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
    READ = (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
    WRITE = (stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH)


@dataclass(frozen=True, slots=True)
class Denied:
    """Where access stops, and why."""

    user: str
    path: Path
    permission: Permission
    info: os.stat_result | None  # None when the path cannot be examined at all
    reason: str = ""

    def __str__(self) -> str:
        if self.info is None:
            return f"{self.path}: {self.reason}"
        verb = {
            Permission.SEARCH: "enter",
            Permission.READ: "read",
            Permission.WRITE: "write to",
        }[self.permission]
        mode = stat.S_IMODE(self.info.st_mode)
        owner = f"{user_name(self.info.st_uid)}:{_group_name(self.info.st_gid)}"
        return f"{self.user} may not {verb} {self.path} (mode {mode:04o}, owner {owner})"


@dataclass(frozen=True, slots=True)
class Account:
    """A user as the kernel sees it after initgroups(): uid, primary gid and all its groups."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]

    @classmethod
    def named(cls, name: str) -> Account | None:
        """The user ``name`` (or a numeric uid), or None when there is no such user."""
        try:
            entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except KeyError:
            return None
        groups = frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)

    def denied(self, path: Path, permission: Permission) -> Denied | None:
        """Where this user is stopped on the way to ``permission`` on ``path``, or None."""
        if self.uid == 0:
            return None
        for directory in reversed(path.absolute().parents):
            problem = self._check(directory, Permission.SEARCH)
            if problem is not None:
                return problem
        return self._check(path, permission)

    def _check(self, path: Path, permission: Permission) -> Denied | None:
        try:
            info = path.stat()
        except OSError as exc:
            return Denied(self.name, path, permission, None, exc.strerror or str(exc))
        owner_bit, group_bit, other_bit = permission.value
        if info.st_uid == self.uid:
            bit = owner_bit
        elif info.st_gid in self.groups:
            bit = group_bit
        else:
            bit = other_bit
        return None if info.st_mode & bit else Denied(self.name, path, permission, info)


def user_name(uid: int) -> str:
    """The name of ``uid``, or the number when it has none here (common in containers)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
