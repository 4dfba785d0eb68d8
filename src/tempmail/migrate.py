"""Convert the original postfix-tempmail (bash + socat) config file into tempmail TOML.

The old file is a bash script of variable assignments. It is parsed as data, never executed:
quoting, escapes and ``$VAR``/``${VAR}`` references to earlier assignments follow bash's rules.
Every other expansion bash applies to an assignment's value (bash(1), "EXPANSION": tilde,
parameter forms other than a plain name, arithmetic, command and process substitution, locale
translation) is refused with its line number, as is anything that would run a command: a
value that bash would compute differently must never change the secret silently. Brace
expansion, word splitting and pathname expansion do not apply to assignments, and history
expansion is off in scripts, so ``{a,b}``, ``*`` and ``!`` are taken literally, as bash does.
No message quotes a value: the file holds the secret.
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
    "SOCKETMAP_UNIX_SOCKET_MODE",  # empty would be mode 0000: nobody could connect
}
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WHOLE_NUMBER: Final = re.compile(r"[0-9]{1,9}")  # ASCII digits; int() also takes '٢'
#: Variables that have a value when the original's script runs although the file does not set
#: them: what ``env -i bash -c 'compgen -v'`` lists (bash 5.2; a test compares), the rest of
#: bash(1)'s "Shell Variables" that bash sets by itself, and what a service's environment
#: usually holds. A reference to one is refused: its value is unknown here (and $RANDOM,
#: $SECONDS, ... change on every use).
SET_BY_BASH: Final = frozenset(
    {
        *("_", "BASH", "BASHOPTS", "BASHPID", "BASH_ALIASES", "BASH_ARGC", "BASH_ARGV"),
        *("BASH_ARGV0", "BASH_CMDS", "BASH_COMMAND", "BASH_COMPAT", "BASH_ENV"),
        *("BASH_EXECUTION_STRING", "BASH_LINENO", "BASH_LOADABLES_PATH", "BASH_MONOSECONDS"),
        *("BASH_REMATCH", "BASH_SOURCE", "BASH_SUBSHELL", "BASH_TRAPSIG", "BASH_VERSINFO"),
        *("BASH_VERSION", "BASH_XTRACEFD", "COMP_WORDBREAKS", "DIRSTACK", "EPOCHREALTIME"),
        *("EPOCHSECONDS", "EUID", "GROUPS", "HISTCMD", "HOSTNAME", "HOSTTYPE", "IFS"),
        *("LINENO", "MACHTYPE", "OPTERR", "OPTIND", "OSTYPE", "PATH", "PIPESTATUS", "PPID"),
        *("PS4", "PWD", "RANDOM", "SECONDS", "SHELL", "SHELLOPTS", "SHLVL", "SRANDOM"),
        *("TERM", "UID"),
        # The environment of a service or a login:
        *("HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "MAIL", "OLDPWD"),
        *("LC_ALL", "LC_ADDRESS", "LC_COLLATE", "LC_CTYPE", "LC_IDENTIFICATION"),
        *("LC_MEASUREMENT", "LC_MESSAGES", "LC_MONETARY", "LC_NAME", "LC_NUMERIC"),
        *("LC_PAPER", "LC_TELEPHONE", "LC_TIME", "INVOCATION_ID", "JOURNAL_STREAM"),
    }
)
#: Characters refused anywhere in the file, with the reason.
_REFUSED_CHARACTERS: Final = (
    ("\0", "a NUL character, which bash drops; remove it"),
    (
        "\r",
        (
            "a carriage return (Windows line ends?), which bash keeps in a value; convert the "
            "file first, for example with dos2unix"
        ),
    ),
)
#: What follows a '$' and is refused (the longest first), with the reason.
_REFUSED_AFTER_DOLLAR: Final = (
    ("((", "arithmetic expansion $((...)) is not converted; write the result"),
    ("(", "command substitution $(...) cannot be converted without running it"),
    ("[", "arithmetic expansion $[...] is not converted; write the result"),
)
#: The escapes of ``$'...'`` that are converted, with what bash makes of them. Numeric ones
#: (octal, \x, \u, \U) and \c are refused: they can make bytes that are not UTF-8 text.
_ANSI_C_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "e": "\x1b",
    "E": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}
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
        for char, reason in _REFUSED_CHARACTERS:
            if char in self.text:
                self.line = self.text.count("\n", 0, self.text.index(char)) + 1
                raise self.fail(reason)
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
            # Never quote the line: it may be part of a value, and values may be secret.
            if self.last_assignment and self.last_assignment[1] == self.line:
                raise self.fail(
                    f"the value of {self.last_assignment[0]} contains an unquoted space; "
                    "put the value in quotes"
                )
            if match and self.text.startswith("+=", match.end()):
                raise self.fail(
                    f"{match.group()}+= appends to a variable; write the whole value with '='"
                )
            raise self.fail(
                "not a variable assignment (NAME=value); the file is read as data and never run"
            )
        name = match.group()
        self.advance(match.end() - self.pos + 1)
        self.variables[name] = self.word()
        self.last_assignment = (name, self.line)

    def word(self) -> str:
        """One shell word in assignment context: no word splitting, no globbing."""
        parts: list[str] = []
        # bash expands an unquoted '~' at the start of an assignment's value and after each
        # unquoted ':' (bash(1), "Tilde Expansion"); a line continuation changes neither.
        tilde_expands = True
        while self.pos < len(self.text):
            char = self.peek()
            if char in " \t\n;":
                break
            if char == "~" and tilde_expands:
                raise self.fail(
                    "bash replaces an unquoted '~' at the start of a value or after ':' with a "
                    "home directory (tilde expansion); quote it ('~') or write the path out"
                )
            if char == "\\" and self.peek(1) == "\n":
                self.advance(2)
                continue
            tilde_expands = char == ":"
            if char == "'":
                parts.append(self.single_quoted())
            elif char == '"':
                parts.append(self.double_quoted())
            elif char == "\\":
                self.advance()
                parts.append(self.advance())
            elif char == "$":
                parts.append(self.dollar(quoted=False))
            elif char in "`|&<>()":
                raise self.command_syntax(char)
            else:
                parts.append(self.advance())
        return "".join(parts)

    def command_syntax(self, char: str) -> ConfigError:
        if char == "`":
            return self.fail("command substitution (`...`) cannot be converted without running it")
        # '<(' and '>(' are process substitution, the rest makes a pipeline or a redirection.
        return self.fail(f"{char!r} makes this line a command; only assignments are converted")

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
                raise self.command_syntax(char)
            else:
                parts.append(self.advance())

    def dollar(self, *, quoted: bool) -> str:
        following = self.peek(1)
        for start, reason in _REFUSED_AFTER_DOLLAR:
            if self.text.startswith(start, self.pos + 1):
                raise self.fail(reason)
        if following == "'" and not quoted:
            return self.ansi_c_quoted()
        if following == '"' and not quoted:
            raise self.fail(
                'bash translates $"..." into the locale\'s language; write "..." instead'
            )
        if following == "{":
            end = self.text.find("}", self.pos)
            if end < 0:
                raise self.fail("unterminated ${")
            name = self.text[self.pos + 2 : end]
            if not _NAME.fullmatch(name):
                # Never quote it: ${X:-default} holds a value.
                raise self.fail(
                    "a ${...} expansion other than ${NAME} (a default, a substring, a length, "
                    "an indirection, ...) is not converted; write the value instead"
                )
            self.advance(end + 1 - self.pos)
            return self.expand(name)
        match = _NAME.match(self.text, self.pos + 1)
        if match:
            self.advance(match.end() - self.pos)
            return self.expand(match.group())
        if following and (following.isdigit() or following in "@*#?$!-"):
            raise self.fail(
                "a special parameter ($0 to $9, $@, $*, $#, $?, $$, $!, $-) only exists when "
                "the script runs; write the value instead"
            )
        return self.advance()  # a lone "$" is literal

    def ansi_c_quoted(self) -> str:
        self.advance(2)
        parts: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unterminated $'")
            char = self.advance()
            if char == "'":
                return "".join(parts)
            if char == "\\":
                escaped = self.advance()
                if escaped not in _ANSI_C_ESCAPES:
                    known = " ".join("\\" + e for e in _ANSI_C_ESCAPES)
                    raise self.fail(f"$'...' is converted with the escapes {known} only")
                parts.append(_ANSI_C_ESCAPES[escaped])
            else:
                parts.append(char)

    def expand(self, name: str) -> str:
        # The messages never name the variable: a name after '$' is part of the value (an
        # intended "pa$word" is the variable $word to bash).
        if name in SET_BY_BASH:
            raise self.fail(
                "a variable that bash or the environment sets when the script runs (such as "
                "$HOME or $RANDOM) has no known value here; write the value instead"
            )
        if name in self.variables:
            return self.variables[name]
        self.notes.append(
            f"{self.source}: line {self.line}: a $variable that the file does not set; bash "
            "expanded it from the service's environment (usually to nothing), so it was taken "
            "as empty (write '\\$' for a literal '$')"
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


def _convert_value(name: str, raw: str, notes: list[str], source: str) -> str | int | None:
    """One old value in its new type; None when an empty value means "not set"."""
    if name in _INTEGERS:
        if not _WHOLE_NUMBER.fullmatch(raw):
            raise ConfigError(f"{source}: {name} is not a whole number (at most 9 digits)")
        number = int(raw)
        if name == "SOCKETMAP_MAX_NETSTRING_LENGTH" and number < 64:
            notes.append(f"{name}={number} is below tempmail's minimum; using 64")
            return 64
        return number
    if not raw and name in _EMPTY_MEANS_UNSET:
        return None
    if name in ("SOCKETMAP_UNIX_SOCKET_OWNER_UID", "SOCKETMAP_UNIX_SOCKET_OWNER_GID"):
        return int(raw) if _WHOLE_NUMBER.fullmatch(raw) else raw
    if name == "SOCKETMAP_UNIX_SOCKET_MODE":
        return raw.zfill(4)
    return raw


def convert(
    variables: dict[str, str],
    *,
    timezone: str | None,
    secret_file: Path | None = None,
    source: str = "<old config>",
) -> Migration:
    """Turn the old variables into the new configuration's data.

    With ``secret_file``, the identity names that file and holds no secret; otherwise
    SHARED_SECRET is the identity's inline ``secret``.
    """
    migration = Migration({"server": {}, "socket": {}, "identities": {IDENTITY_NAME: {}}})
    identity: dict[str, Any] = migration.data["identities"][IDENTITY_NAME]
    notes = migration.notes
    for name in sorted(set(variables) - set(_MAPPING)):
        notes.append(f"{name} is not a postfix-tempmail setting and was not converted")
    for name, (section, key) in _MAPPING.items():
        if name not in variables or (name == "SHARED_SECRET" and secret_file is not None):
            continue
        value = _convert_value(name, variables[name], notes, source)
        if value is not None:
            target = identity if section == "identity" else migration.data[section]
            target[key] = value
    secret = variables.get("SHARED_SECRET")
    if secret_file is not None:
        identity["secret_file"] = str(secret_file)
    if secret is not None and _ECHO_OPTION.fullmatch(secret):
        notes.append(
            "SHARED_SECRET is an option of bash's 'echo' (such as -n or -e), which the original's "
            "'echo -n' swallowed: it used no secret at all (anyone could compute its addresses); "
            "tempmail uses the secret as written, as PHP does, so the addresses change: choose "
            "a strong secret"
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
