"""Reading TOML tables: typed getters that record every problem with its dotted key."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tempmail.config.model import (
    ACCOUNT,
    HOST,
    WEAK_SECRET_BYTES,
)
from tempmail.errors import ConfigError
from tempmail.secret import (
    Permissions,
    Secret,
    parse_secret_text,
    read_secret_file,
)

T = TypeVar("T")


#: The largest user or group id: uid_t is 32 bits and (uid_t)-1 means "unchanged" to chown.
MAX_ID: Final = 2**32 - 2


class Reader:
    """Collects problems and warnings for one file."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        # An unknown key is worded only at the end, when every table has said which keys it
        # reads: a key that belongs in another table is told where it belongs.
        self.problems: list[str | UnknownKey] = []
        self.warnings: list[str] = []
        self.files_read: list[Path] = []  # secret files, absolute, in the order read
        self.tables: dict[str, set[str]] = {}  # table label -> the keys it reads

    @property
    def failed(self) -> bool:
        """Whether any problem was recorded."""
        return bool(self.problems)

    def problem(self, key: str, message: str) -> None:
        """Record a problem at ``key`` (dotted; empty for the file as a whole)."""
        where = f"{self.source}: {key}" if key else self.source
        self.problems.append(f"{where}: {message}")

    def warn(self, key: str, message: str) -> None:
        """Record a warning at ``key``: logged, never fatal."""
        self.warnings.append(f"{self.source}: {key}: {message}")

    def raise_problems(self) -> None:
        """Raise one :class:`ConfigError` with every problem, if there is any."""
        if self.problems:
            raise ConfigError([self._worded(problem) for problem in self.problems])

    def _worded(self, problem: str | UnknownKey) -> str:
        if isinstance(problem, str):
            return problem
        homes = [
            label
            for label, keys in self.tables.items()
            if problem.name in keys and label != problem.table
        ]
        if homes:
            hint = f" (it belongs in {' or '.join(homes)})"
        elif problem.close_match:
            hint = f" (did you mean {problem.close_match!r}?)"
        else:
            hint = ""
        return f"{self.source}: {problem.key}: unknown key{hint}"


@dataclass(frozen=True, slots=True)
class UnknownKey:
    """A key nobody asked for: reported with a hint once every table is read."""

    key: str  # dotted, as reported
    name: str  # as written
    table: str  # the label of the table it was found in
    close_match: str | None  # a key of that table spelled alike


_TYPE_NAMES: Final = {str: "a string", int: "an integer", bool: "a boolean", float: "a number"}


def _type_name(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class Table:
    """One TOML table: typed getters that record problems and remember the keys they read."""

    def __init__(
        self, reader: Reader, data: Mapping[str, Any], prefix: str, label: str = "the top level"
    ) -> None:
        self.reader = reader
        self.data = data
        self.prefix = prefix
        self.label = label  # how a hint names this kind of table: "[server]", "[identities.NAME]"
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        """The dotted key of ``name`` in this table."""
        return f"{self.prefix}.{name}" if self.prefix and name else self.prefix or name

    def problem(self, name: str, message: str) -> None:
        """Record a problem at ``name`` of this table."""
        self.reader.problem(self.key(name), message)

    def warn(self, name: str, message: str) -> None:
        """Record a warning at ``name`` of this table."""
        self.reader.warn(self.key(name), message)

    def keys(self) -> list[str]:
        """Every key of this table (each counts as read)."""
        self.seen.update(self.data)
        return list(self.data)

    def table(self, name: str, label: str | None = None) -> Table:
        """The sub-table ``name``; ``label`` names its kind in hints (default ``[KEY]``)."""
        self.seen.add(name)
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            self.problem(name, f"expected a table, got {_type_name(value)}")
            value = {}
        return Table(self.reader, value, self.key(name), label or f"[{self.key(name)}]")

    def get(self, name: str, kind: type[T], default: T) -> T:
        """The value of type ``kind``, else ``default`` (a wrong type is a problem)."""
        value = self.optional(name, kind)
        return default if value is None else value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        """An integer between ``low`` and ``high``, else ``default``."""
        value = self.get(name, int, default)
        if not low <= value <= high:
            self.problem(name, f"must be between {low} and {high}, got {value}")
            return default
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        """An integer or float between ``low`` and ``high``, else ``default``."""
        self.seen.add(name)
        value = self.data.get(name, default)
        if type(value) not in (int, float):
            self.problem(name, f"expected a number, got {_type_name(value)}")
            return default
        if not low <= value <= high:
            self.problem(name, f"must be between {low:g} and {high:g}, got {value}")
            return default
        return float(value)

    def choice(self, name: str, allowed: list[str], default: str) -> str:
        """One of ``allowed``, else ``default``."""
        value = self.get(name, str, default)
        if value not in allowed:
            options = ", ".join(repr(a) for a in allowed)
            self.problem(name, f"must be one of {options}, got {value!r}")
            return default
        return value

    def list_of(self, name: str, kind: type[T], default: list[T]) -> list[T]:
        """An array of ``kind``, else ``default``."""
        found = self.optional_list(name, kind)
        return default if found is None else found

    def optional_list(self, name: str, kind: type[T]) -> list[T] | None:
        """An array of ``kind``, or None when absent or wrong."""
        self.seen.add(name)
        if name not in self.data:
            return None
        value = self.data[name]
        if not isinstance(value, list):
            self.problem(name, f"expected an array, got {_type_name(value)}")
            return None
        for index, item in enumerate(value):
            if type(item) is not kind:
                self.problem(
                    f"{name}[{index}]", f"expected {_TYPE_NAMES[kind]}, got {_type_name(item)}"
                )
                return None
        return value

    def optional(self, name: str, kind: type[T]) -> T | None:
        """The value, or None when absent or of the wrong type (a problem is recorded)."""
        self.seen.add(name)
        if name not in self.data:
            return None
        value = self.data[name]
        # TOML keeps booleans and integers apart; Python's bool is an int subclass, so check.
        if type(value) is not kind:
            self.problem(name, f"expected {_TYPE_NAMES[kind]}, got {_type_name(value)}")
            return None
        return value  # checked just above

    def path(self, name: str) -> Path | None:
        """A path relative to the config file's directory, or None when absent."""
        raw = self.optional(name, str)
        return None if raw is None else self.resolve(name, raw)

    def resolve(self, name: str, raw: str) -> Path | None:
        """``raw`` as an absolute path, relative to the config file's folder.

        Problems never quote ``raw``: a secret pasted where its file's path belongs must not be
        printed at start or logged at every reload.
        """
        if not raw:
            self.problem(name, "must not be empty")
            return None
        if "\0" in raw:
            self.problem(name, "must not contain a NUL character")
            return None
        try:
            return self.reader.base_dir / Path(raw).expanduser()
        except RuntimeError:  # "~name/..." for a user this system does not have
            self.problem(name, "starts with '~' and a user name this system does not know")
            return None

    def host(self, name: str, default: str) -> str:
        """A host name or address, else ``default``."""
        host = self.get(name, str, default)
        if not host:
            self.problem(name, "must not be empty")
            return default
        if not HOST.fullmatch(host):
            self.problem(name, f"expected a host name or IP address like ::1, got {host!r}")
            return default
        return host

    def user_or_id(self, name: str) -> str | int | None:
        """A user or group name, or a numeric id, or None when absent."""
        self.seen.add(name)
        value = self.data.get(name)
        if value is None:
            return None
        if type(value) is int and 0 <= value <= MAX_ID:
            return value
        if type(value) is int:
            self.problem(name, f"a numeric id must be between 0 and {MAX_ID}, got {value}")
            return None
        if type(value) is str and ACCOUNT.fullmatch(value):
            return value
        wrong = repr(value) if type(value) is str else _type_name(value)
        self.problem(name, f"expected a name or a numeric id, got {wrong}")
        return None

    def timezone(self, name: str, default: str) -> ZoneInfo:
        """An IANA time zone, else ``default``."""
        text = self.get(name, str, default)
        try:
            return ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe", a directory
            self.problem(name, f"unknown IANA time zone {text!r} (for example 'Europe/Berlin')")
            return ZoneInfo(default)

    def secret_text(self, name: str, text: str) -> Secret:
        """A secret given inline (a weak one is warned about)."""
        try:
            secret = parse_secret_text(text.encode(), self.key(name))
        except ValueError as exc:
            self.problem(name, str(exc).removeprefix(self.key(name) + " "))
            return Secret(b"-")
        self._warn_if_weak(name, secret)
        return secret

    def secret_file(self, name: str, path: Path, permissions: Permissions) -> Secret:
        """A secret read from ``path`` with the allowed ``permissions``."""
        self.reader.files_read.append(path.absolute())
        try:
            secret = read_secret_file(path, permissions)
        except ValueError as exc:
            self.problem(name, str(exc))
            return Secret(b"-")
        self._warn_if_weak(name, secret)
        return secret

    def _warn_if_weak(self, name: str, secret: Secret) -> None:
        if len(secret.reveal()) < WEAK_SECRET_BYTES:
            self.warn(
                name,
                f"the secret is shorter than {WEAK_SECRET_BYTES} bytes and can be guessed "
                "offline from one address; 'tempmail init' makes a strong one",
            )

    def done(self) -> None:
        """Report keys nobody asked for: where they belong, or a key spelled alike."""
        self.reader.tables.setdefault(self.label, set()).update(self.seen)
        for unknown in sorted(set(self.data) - self.seen):
            close = difflib.get_close_matches(unknown, sorted(self.seen), n=1)
            self.reader.problems.append(
                UnknownKey(self.key(unknown), unknown, self.label, close[0] if close else None)
            )
