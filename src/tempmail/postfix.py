"""Postfix's side of tempmail: the main.cf settings for a configuration, and reading them back.

Pure: no I/O, no subprocesses. ``tempmail postfix-config`` prints :func:`settings`;
``tempmail check`` (tempmail.doctor) parses what Postfix has with :func:`split_list` and
:func:`tempmail_lookups`.

The lookup that Postfix is given is guarded::

    pipemap:{regexp:{{/^([^@]+@(DOMAIN|DOMAIN))$/ ${1}}}, socketmap:unix:tempmail/socket:tempmail}

Postfix consults virtual_alias_maps for *every* recipient, not only for the virtual alias
domains. The first table of the pipeline passes a key on unchanged only when it is an address
in one of the temporary domains (regexp tables match case-insensitively by default); any other
key is not found there, so Postfix never asks tempmail about it, and a tempmail outage defers
only the mail of the temporary domains. A regexp first table also makes the pipeline a pattern
table for Postfix (dict_pipe copies the first table's flags): the whole address is looked up
once, never ``user@domain`` without its extension nor ``@domain``; tempmail strips extensions
itself (``[server] recipient_delimiter``).

Inline regexp tables need Postfix 3.7 or later; pipemap, 3.0. main.cf expands ``$name`` in the
value, so every ``$`` of the regexp is written ``$$`` (postconf(5): "Specify $$ to produce a
single $ character").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from tempmail.config import Config, SocketSettings

#: Postfix's default queue_directory, also Debian's.
DEFAULT_QUEUE_DIRECTORY: Final = PurePosixPath("/var/spool/postfix")
#: The main.cf parameters ``tempmail postfix-config`` sets, in the order it prints them.
PARAMETERS: Final = ("virtual_alias_domains", "virtual_alias_maps", "recipient_delimiter")
#: Where Postfix names a socket (socketmap:unix:PATH:NAME), these characters mean something
#: else: spaces and ',' separate list items, '$' expands, '{' and '}' group.
_PATH_SPECIALS: Final = re.compile(r"[\s,${}\x00-\x1f\x7f]")
#: POSIX extended regular expression metacharacters (regex(7)).
_ERE_SPECIALS: Final = re.compile(r"([.\[\]{}()\\*+?^$|])")
#: Separators between the items of a Postfix list (main.cf lists and pipemap:{...}).
_LIST_SEPARATORS: Final = frozenset(", \t\r\n")


@dataclass(frozen=True, slots=True)
class Setting:
    """One main.cf parameter: ``value`` is written as main.cf holds it (``$`` as ``$$``)."""

    name: str
    value: str

    def line(self) -> str:
        """``name = value``, one argument of ``postconf -e``."""
        return f"{self.name} = {self.value}"


@dataclass(frozen=True, slots=True)
class Rendered:
    """The settings for a configuration, and notes for the operator (never part of main.cf)."""

    settings: tuple[Setting, ...]
    notes: tuple[str, ...]

    def text(self) -> str:
        """One ``name = value`` line per setting."""
        return "".join(setting.line() + "\n" for setting in self.settings)


@dataclass(frozen=True, slots=True)
class SocketmapTable:
    """A ``socketmap:TARGET:NAME`` table as Postfix names it."""

    target: str  # unix:PATH (PATH may be relative to the queue directory) or inet:HOST:PORT
    map_name: str


@dataclass(frozen=True, slots=True)
class TempmailLookup:
    """A socketmap table found in virtual_alias_maps, with the tables piped before it."""

    element: str  # the whole list item, as Postfix expands it
    guard: tuple[str, ...]  # the tables before the socketmap in a pipemap (empty: unguarded)
    table: SocketmapTable


def served_domains(config: Config) -> tuple[str, ...]:
    """Every identity's domains, in configuration order, each once."""
    return tuple(dict.fromkeys(d for i in config.identities for d in i.domains))


def socket_name(
    socket: SocketSettings,
    *,
    postfix_socket: PurePosixPath | None = None,
    queue_directory: PurePosixPath = DEFAULT_QUEUE_DIRECTORY,
) -> tuple[str, tuple[str, ...]]:
    """How main.cf names the server's socket, and notes for the operator.

    A unix socket inside the queue directory is named relative to it: every Postfix daemon
    runs with the queue directory as its working directory, and a chrooted one has it as its
    root, so the relative name reaches the socket from both. ``postfix_socket`` is the path as
    Postfix sees it when that differs from the server's (a sidecar's volume mounted
    elsewhere in the Postfix container).
    """
    if socket.type == "inet":
        if socket.port == 0:
            raise ValueError(
                "socket.port: 0 lets the kernel pick a port; Postfix needs a fixed one"
            )
        return socket.describe(), ()
    path = postfix_socket or PurePosixPath(socket.path)
    _check_path(path, "socket.path")
    _check_path(queue_directory, "the queue directory")
    relative = _relative_to(path, queue_directory)
    if relative is not None:
        return f"unix:{relative}", ()
    note = (
        f"the socket {path} is outside the queue directory {queue_directory}: chrooted Postfix "
        "daemons (Debian chroots smtpd and cleanup) cannot reach it; put the socket inside "
        f"{queue_directory}, or turn chroot off for smtpd and cleanup in master.cf"
    )
    return f"unix:{path}", (note,)


def guard_table(domains: tuple[str, ...]) -> str:
    """The regexp table that passes keys of ``domains`` unchanged (as the daemons read it)."""
    if not domains:
        raise ValueError("no domains to guard")
    alternatives = "|".join(_ERE_SPECIALS.sub(r"\\\1", domain) for domain in domains)
    domain_part = alternatives if len(domains) == 1 else f"({alternatives})"
    return f"regexp:{{{{/^([^@]+@{domain_part})$/ ${{1}}}}}}"


def lookup_table(domains: tuple[str, ...], target: str, map_name: str) -> str:
    """The guarded tempmail lookup, as the daemons read it (after main.cf's $ expansion)."""
    return f"pipemap:{{{guard_table(domains)}, socketmap:{target}:{map_name}}}"


def main_cf_value(expanded: str) -> str:
    """``expanded`` written so that main.cf's $name expansion gives it back."""
    return expanded.replace("$", "$$")


def settings(
    config: Config,
    *,
    postfix_socket: PurePosixPath | None = None,
    queue_directory: PurePosixPath = DEFAULT_QUEUE_DIRECTORY,
) -> Rendered:
    """The main.cf settings that connect Postfix to the server of ``config``.

    ``virtual_alias_domains`` makes the temporary domains Postfix's own decision: a domain
    only in tempmail's configuration is neither accepted nor passed by the guard.
    ``recipient_delimiter`` is set when tempmail strips extensions, so that both agree on
    what an extension is (tempmail check reports a difference).
    """
    domains = served_domains(config)
    target, notes = socket_name(
        config.socket, postfix_socket=postfix_socket, queue_directory=queue_directory
    )
    found = [
        Setting("virtual_alias_domains", " ".join(domains)),
        Setting(
            "virtual_alias_maps",
            main_cf_value(lookup_table(domains, target, config.server.map_name)),
        ),
    ]
    if config.server.recipient_delimiter:
        found.append(
            Setting("recipient_delimiter", main_cf_value(config.server.recipient_delimiter))
        )
    return Rendered(tuple(found), notes)


def merge(rendered: Rendered, existing: dict[str, str], queue_directory: PurePosixPath) -> Rendered:
    """``rendered`` combined with the values main.cf already holds (as written there).

    virtual_alias_domains keeps its domains and gains the temporary ones. virtual_alias_maps
    keeps its tables, first (an operator's own aliases win), without any earlier tempmail
    lookup of the same socket (bare or guarded), and gains the guarded one last. Running it
    again changes nothing. recipient_delimiter is tempmail's; a note says when that changes
    Postfix's.
    """
    ours = {setting.name: setting.value for setting in rendered.settings}
    notes = list(rendered.notes)
    merged = []
    for setting in rendered.settings:
        value = setting.value
        current = existing.get(setting.name)
        if current is not None and setting.name == "virtual_alias_domains":
            items = split_list(current)
            known = {item.lower().removesuffix(".") for item in items}
            value = " ".join([*items, *(d for d in value.split() if d not in known)])
        elif current is not None and setting.name == "virtual_alias_maps":
            target = _own_target(ours["virtual_alias_maps"], queue_directory)
            kept = [
                item
                for item in split_list(current)
                if not any(
                    absolute_target(lookup.table.target, queue_directory) == target
                    for lookup in tempmail_lookups(item)
                )
            ]
            value = ", ".join([*kept, value])
        elif current is not None and set(current) != set(value):
            notes.append(
                f"recipient_delimiter changes from {current!r} to {value!r}: if addresses of "
                f"this Postfix use {current!r}, set [server] recipient_delimiter = {current!r} "
                "instead and run this again"
            )
        merged.append(Setting(setting.name, value))
    return Rendered(tuple(merged), tuple(notes))


def _own_target(lookup: str, queue_directory: PurePosixPath) -> str:
    """The absolute socket target of our own virtual_alias_maps value."""
    found = tempmail_lookups(lookup)
    return absolute_target(found[0].table.target, queue_directory)


# --- reading Postfix's configuration back -------------------------------------------------------


def split_list(value: str) -> list[str]:
    """The items of a Postfix list: separated by ',' or whitespace, ``{...}`` kept whole."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for char in value:
        if depth == 0 and char in _LIST_SEPARATORS:
            if current:
                items.append("".join(current))
                current = []
            continue
        if char == "{":
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
        current.append(char)
    if current:
        items.append("".join(current))
    return items


def parse_socketmap(item: str) -> SocketmapTable | None:
    """``socketmap:unix:PATH:NAME`` or ``socketmap:inet:HOST:PORT:NAME``, else None."""
    rest = item.removeprefix("socketmap:")
    if rest == item:
        return None
    target, _, map_name = rest.rpartition(":")
    kind = target.partition(":")[0]
    if kind not in ("unix", "inet") or not map_name or ":" not in target:
        return None
    return SocketmapTable(target, map_name)


def tempmail_lookups(virtual_alias_maps: str) -> list[TempmailLookup]:
    """Every socketmap table in an (expanded) virtual_alias_maps, bare or ending a pipemap."""
    found = []
    for item in split_list(virtual_alias_maps):
        table = parse_socketmap(item)
        if table is not None:
            found.append(TempmailLookup(item, (), table))
            continue
        if item.startswith("pipemap:{") and item.endswith("}"):
            stages = split_list(item.removeprefix("pipemap:{").removesuffix("}"))
            last = parse_socketmap(stages[-1]) if stages else None
            if last is not None:
                found.append(TempmailLookup(item, tuple(stages[:-1]), last))
    return found


def absolute_target(target: str, queue_directory: PurePosixPath) -> str:
    """``target`` with a relative unix path made absolute (relative to the queue directory)."""
    kind, _, path = target.partition(":")
    if kind != "unix" or path.startswith("/"):
        return target
    return f"unix:{_normalise(queue_directory / path)}"


def _relative_to(path: PurePosixPath, directory: PurePosixPath) -> PurePosixPath | None:
    normal, base = _normalise(path), _normalise(directory)
    if normal == base or not normal.is_relative_to(base):
        return None
    return normal.relative_to(base)


def _normalise(path: PurePosixPath) -> PurePosixPath:
    """Remove '.' and '..' without touching the filesystem (the path may not exist here)."""
    parts: list[str] = []
    for part in path.parts[1:]:
        if part == "..":
            if parts:
                parts.pop()
        elif part != ".":
            parts.append(part)
    return PurePosixPath("/", *parts)


def path_problem(path: PurePosixPath) -> str | None:
    """Why main.cf cannot name ``path`` (relative, or with main.cf syntax in it), or None."""
    if not path.is_absolute():
        return f"expected an absolute path, got {str(path)!r}"
    if _PATH_SPECIALS.search(str(path)):
        return (
            f"{str(path)!r} contains a space, ',', '$', '{{' or '}}', which main.cf would read "
            "as syntax"
        )
    return None


def _check_path(path: PurePosixPath, what: str) -> None:
    problem = path_problem(path)
    if problem:
        raise ValueError(f"{what}: {problem}")
