"""Convert the original postfix-tempmail (bash + socat) config file into tempmail TOML.

The old file is a bash script of variable assignments. It is parsed as data, never executed:
quoting, escapes and ``$VAR``/``${VAR}`` references to earlier assignments follow bash's rules;
anything that would run a command (``$(...)``, backticks, a bare command) is refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tempmail.errors import ConfigError

#: Old variable -> (section, key) in the new file.
_MAPPING: Final = {
    "SOCKETMAP_NAME": ("server", "map_name"),
    "SOCKETMAP_MAX_NETSTRING_LENGTH": ("server", "max_query_length"),
    "PARSER_RUN_UID": ("server", "user"),
    "SOCKETMAP_SOCKET_TYPE": ("socket", "type"),
    "SOCKETMAP_UNIX_SOCKET_PATH": ("socket", "path"),
    "SOCKETMAP_UNIX_SOCKET_OWNER_UID": ("socket", "owner"),
    "SOCKETMAP_UNIX_SOCKET_OWNER_GID": ("socket", "group"),
    "SOCKETMAP_UNIX_SOCKET_MODE": ("socket", "mode"),
    "SOCKETMAP_INET_INTERFACE": ("socket", "host"),
    "SOCKETMAP_INET_PORT": ("socket", "port"),
    "DOMAIN": ("identity", "domain"),
    "MAILDROP": ("identity", "recipient"),
    "LENGTH": ("identity", "length"),
    "SHARED_SECRET": ("identity", "secret"),
}
_INTEGERS: Final = {"SOCKETMAP_MAX_NETSTRING_LENGTH", "SOCKETMAP_INET_PORT", "LENGTH"}
_EMPTY_MEANS_UNSET: Final = {
    "SOCKETMAP_UNIX_SOCKET_OWNER_UID",
    "SOCKETMAP_UNIX_SOCKET_OWNER_GID",
    "PARSER_RUN_UID",
}
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Strings that bash's builtin ``echo -n "$SHARED_SECRET"`` takes as options and never prints.
_ECHO_OPTION: Final = re.compile(r"-[neE]+")
IDENTITY_NAME: Final = "default"


@dataclass
class Migration:
    """The converted settings, ready for tomli-w, and notes for the operator."""

    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def parse_shell_assignments(
    text: str, source: str = "<old config>"
) -> tuple[dict[str, str], list[str]]:
    """Parse ``NAME=value`` lines as bash would assign them, without running anything.

    Returns the variables and notes (for example, references to unset variables).
    """
    parser = _ShellParser(text, source)
    parser.parse()
    return parser.variables, parser.notes


class _ShellParser:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 0
        self.line = 1
        self.variables: dict[str, str] = {}
        self.notes: list[str] = []
        self.last_assignment: tuple[str, int] | None = None  # (name, line where it ended)

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: line {self.line}: {message}")

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def advance(self, count: int = 1) -> str:
        chunk = self.text[self.pos : self.pos + count]
        self.line += chunk.count("\n")
        self.pos += count
        return chunk

    def parse(self) -> None:
        while self.pos < len(self.text):
            char = self.peek()
            if char in " \t;\n":
                self.advance()
            elif char == "#":
                while self.pos < len(self.text) and self.peek() != "\n":
                    self.advance()
            elif char == "\\" and self.peek(1) == "\n":
                self.advance(2)
            else:
                self.statement()

    def statement(self) -> None:
        match = _NAME.match(self.text, self.pos)
        if (
            match
            and match.group() in ("export", "readonly", "declare", "local")
            and self.text[match.end() : match.end() + 1] in (" ", "\t")
        ):
            self.advance(match.end() - self.pos)
            while self.peek() in (" ", "\t"):
                self.advance()
            match = _NAME.match(self.text, self.pos)
        if not match or self.text[match.end() : match.end() + 1] != "=":
            if self.last_assignment and self.last_assignment[1] == self.line:
                # Most likely an unquoted value with a space: never echo it, it may be secret.
                raise self.fail(
                    f"the value of {self.last_assignment[0]} contains an unquoted space; "
                    "put the value in quotes"
                )
            word = self.text[self.pos :].split(None, 1)[0][:40]
            raise self.fail(
                f"{word!r} is not a variable assignment; the file is read as data and never run"
            )
        name = match.group()
        self.advance(match.end() - self.pos + 1)
        self.variables[name] = self.word()
        self.last_assignment = (name, self.line)

    def word(self) -> str:
        """One shell word in assignment context: no word splitting, no globbing."""
        parts: list[str] = []
        while self.pos < len(self.text):
            char = self.peek()
            if char in " \t\n;":
                break
            if char == "'":
                parts.append(self.single_quoted())
            elif char == '"':
                parts.append(self.double_quoted())
            elif char == "\\":
                self.advance()
                escaped = self.advance()
                if escaped != "\n":  # backslash-newline is a line continuation
                    parts.append(escaped)
            elif char == "$":
                parts.append(self.dollar(quoted=False))
            elif char == "`":
                raise self.fail(
                    "command substitution (`...`) cannot be converted without running it"
                )
            elif char in "|&<>()":
                raise self.fail(
                    f"{char!r} makes this line a command; only assignments are converted"
                )
            else:
                parts.append(self.advance())
        return "".join(parts)

    def single_quoted(self) -> str:
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            raise self.fail("unterminated single quote")
        value = self.text[self.pos + 1 : end]
        self.advance(end + 1 - self.pos)
        return value

    def double_quoted(self) -> str:
        self.advance()
        parts: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unterminated double quote")
            char = self.peek()
            if char == '"':
                self.advance()
                return "".join(parts)
            if char == "\\":
                following = self.peek(1)
                if following in ('"', "\\", "$", "`"):
                    self.advance(2)
                    parts.append(following)
                elif following == "\n":
                    self.advance(2)
                else:  # inside double quotes other backslashes stay
                    parts.append(self.advance())
            elif char == "$":
                parts.append(self.dollar(quoted=True))
            elif char == "`":
                raise self.fail(
                    "command substitution (`...`) cannot be converted without running it"
                )
            else:
                parts.append(self.advance())

    def dollar(self, *, quoted: bool) -> str:
        following = self.peek(1)
        if following == "(":
            raise self.fail("command substitution $(...) cannot be converted without running it")
        if following == "'" and not quoted:
            return self.ansi_c_quoted()
        if following == "{":
            end = self.text.find("}", self.pos)
            if end < 0:
                raise self.fail("unterminated ${")
            name = self.text[self.pos + 2 : end]
            if not _NAME.fullmatch(name):
                raise self.fail(f"${{{name}}} uses a shell feature that is not converted")
            self.advance(end + 1 - self.pos)
            return self.expand(name)
        match = _NAME.match(self.text, self.pos + 1)
        if match:
            self.advance(match.end() - self.pos)
            return self.expand(match.group())
        if following and (following.isdigit() or following in "@*#?$!-"):
            raise self.fail(
                f"${following} is a shell parameter that only exists when the script runs"
            )
        return self.advance()  # a lone "$" is literal

    def ansi_c_quoted(self) -> str:
        self.advance(2)
        escapes = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"', "a": "\a", "r": "\r"}
        parts: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unterminated $'")
            char = self.advance()
            if char == "'":
                return "".join(parts)
            if char == "\\":
                escaped = self.advance()
                if escaped not in escapes:
                    raise self.fail(f"the escape \\{escaped} in $'...' is not converted")
                parts.append(escapes[escaped])
            else:
                parts.append(char)

    def expand(self, name: str) -> str:
        if name in self.variables:
            return self.variables[name]
        self.notes.append(
            f"{self.source}: line {self.line}: ${name} is not set in the file; bash expanded it "
            "from the service's environment (usually to nothing); it was taken as empty"
        )
        return ""


def detect_timezone(environ: dict[str, str] | None = None, root: Path = Path("/")) -> str | None:
    """The host's local time zone name, which the original's ``date`` used."""
    environ = dict(os.environ) if environ is None else environ
    tz = environ.get("TZ", "").removeprefix(":")
    if tz and "/" in tz and not tz.startswith("/"):
        return tz
    timezone_file = root / "etc/timezone"
    if timezone_file.is_file():
        name = timezone_file.read_text().strip()
        if name:
            return name
    localtime = root / "etc/localtime"
    if localtime.is_symlink():
        target = str(localtime.readlink())
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    return None


def _convert_value(name: str, raw: str, notes: list[str]) -> str | int | None:
    """One old value in its new type; None when an empty value means "not set"."""
    if name in _INTEGERS:
        if not raw.strip().isdigit():
            raise ConfigError(f"{name}={raw!r}: expected a whole number")
        number = int(raw)
        if name == "SOCKETMAP_MAX_NETSTRING_LENGTH" and number < 64:
            notes.append(f"{name}={number} is below tempmail's minimum; using 64")
            return 64
        return number
    if not raw and name in _EMPTY_MEANS_UNSET:
        return None
    if name in ("SOCKETMAP_UNIX_SOCKET_OWNER_UID", "SOCKETMAP_UNIX_SOCKET_OWNER_GID"):
        return int(raw) if raw.isdigit() else raw
    if name == "SOCKETMAP_UNIX_SOCKET_MODE":
        return raw.zfill(4)
    return raw


def convert(
    variables: dict[str, str],
    *,
    timezone: str | None,
    secret_file: Path | None = None,
) -> Migration:
    """Turn the old variables into the new configuration's data."""
    migration = Migration({"server": {}, "socket": {}, "identities": {IDENTITY_NAME: {}}})
    identity: dict[str, Any] = migration.data["identities"][IDENTITY_NAME]
    notes = migration.notes
    for name in sorted(set(variables) - set(_MAPPING)):
        notes.append(f"{name} is not a postfix-tempmail setting and was not converted")
    for name, (section, key) in _MAPPING.items():
        if name not in variables or (name == "SHARED_SECRET" and secret_file is not None):
            continue
        value = _convert_value(name, variables[name], notes)
        if value is not None:
            target = identity if section == "identity" else migration.data[section]
            target[key] = value
    secret = variables.get("SHARED_SECRET")
    if secret_file is not None:
        identity["secret_file"] = str(secret_file)
    if secret is not None and _ECHO_OPTION.fullmatch(secret):
        notes.append(
            f"SHARED_SECRET={secret!r} was swallowed by bash's 'echo -n' in the original, which "
            "therefore used no secret at all (anyone could compute its addresses); tempmail uses "
            "the secret as written, as PHP does, so the addresses change: choose a strong secret"
        )
    # The original produced md5 codes, valid today and yesterday.
    identity["scheme"] = "md5"
    identity["accept"] = ["md5"]
    identity["window"] = 2
    if timezone is None:
        notes.append(
            "the original used the host's local time zone, which could not be determined; "
            "timezone is UTC: set it to the old host's zone if that differs"
        )
        identity["timezone"] = "UTC"
    else:
        identity["timezone"] = timezone
        notes.append(f"timezone = {timezone!r}: the original used the host's local time")
    for section in ("server", "socket"):
        if not migration.data[section]:
            del migration.data[section]
    return migration
