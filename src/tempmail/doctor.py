"""``tempmail check``: whether Postfix reaches this server as ``tempmail postfix-config`` says.

Postfix's configuration is read with its own ``postconf`` (``-c DIR`` when a directory is
given or ``$MAIL_CONFIG`` is set, else postconf's default), and every lookup is made with its
own ``postmap``. Reachability is tested for real: a forked child becomes Postfix's
``mail_owner`` exactly as Postfix's daemons do and connects to the socket by the name main.cf
gives it (tempmail.mail_owner). Each check gives one :class:`Finding`; a problem names its
cause and fix.

No output ever contains a valid address: today's address is "today's address of identity X".
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final

from tempmail import generate, postfix
from tempmail.access import Account
from tempmail.errors import PostfixUnavailable
from tempmail.mail_owner import ProbeResult, probe

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from tempmail.config import Config, Identity

#: The local part of the keys the guard is tried with.
GUARD_PROBE: Final = "tempmail-check"
#: The Postfix programs that look up virtual_alias_maps: smtpd (reject_unlisted_recipient at
#: RCPT time) and cleanup (the rewriting itself).
LOOKUP_PROGRAMS: Final = ("smtpd", "cleanup")
#: Seconds for each postconf/postmap run.
TIMEOUT: Final = 30.0
_PARAMETERS: Final = (
    "mail_version",
    "config_directory",
    "queue_directory",
    "mail_owner",
    "virtual_alias_maps",
    "virtual_alias_domains",
    "mydestination",
    "recipient_delimiter",
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's outcome; a problem's ``text`` names the cause, then the fix."""

    passed: bool
    text: str


@dataclass(frozen=True, slots=True)
class Service:
    """A master.cf service that looks up virtual_alias_maps."""

    name: str  # service/type, as postconf -F names it
    chroot: bool


@dataclass(frozen=True, slots=True)
class Report:
    """What ``tempmail check`` found."""

    postfix_version: str
    config_directory: str
    findings: tuple[Finding, ...]

    @property
    def problems(self) -> int:
        """How many checks failed."""
        return sum(not finding.passed for finding in self.findings)


class Postfix:
    """Postfix's own tools, pointed at one configuration directory."""

    def __init__(self, config_directory: str | None, postconf: str, postmap: str) -> None:
        self.config_directory = config_directory
        self.postconf = postconf
        self.postmap = postmap

    @classmethod
    def locate(cls, postfix_dir: str | None, environ: Mapping[str, str] = os.environ) -> Postfix:
        """``--postfix-dir``, else ``$MAIL_CONFIG``, else postconf's default directory."""
        tools = [_tool(name) for name in ("postconf", "postmap")]
        directory = postfix_dir or environ.get("MAIL_CONFIG") or None
        # Absolute: postmap also runs in the queue directory, as the daemons do.
        return cls(str(Path(directory).absolute()) if directory else None, tools[0], tools[1])

    def _config_args(self) -> list[str]:
        return ["-c", self.config_directory] if self.config_directory else []

    def _postconf(self, *args: str) -> list[str]:
        try:
            done = subprocess.run(
                [self.postconf, *self._config_args(), *args],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostfixUnavailable(
                f"cannot run {self.postconf}: {exc}; fix: run 'postconf -n' to see what is wrong"
            ) from None
        if done.returncode != 0:
            said = [line.split(": ", 1)[-1] for line in done.stderr.strip().splitlines()]
            reason = "; ".join(dict.fromkeys(said)) or f"exit status {done.returncode}"
            if "main.cf: No such file or directory" in reason:
                fix = "give the directory of main.cf with --postfix-dir or $MAIL_CONFIG"
            elif "macro processing error" in reason:
                fix = "a '$' that starts no parameter name must be written '$$' in main.cf"
            else:
                fix = "correct the setting postconf names"
            raise PostfixUnavailable(
                f"postconf cannot read Postfix's configuration: {reason}; fix: {fix}"
            )
        return done.stdout.splitlines()

    def parameters(self, names: Iterable[str]) -> dict[str, str]:
        """The named main.cf parameters, expanded as the daemons see them (postconf -x)."""
        found: dict[str, str] = {}
        for line in self._postconf("-x", *names):
            name, _, value = line.partition(" =")
            found[name] = value.removeprefix(" ")
        return found

    def explicit(self, names: Iterable[str]) -> dict[str, str]:
        """The named parameters that main.cf sets, as written there (postconf -n)."""
        found: dict[str, str] = {}
        for line in self._postconf("-n", *names):
            name, _, value = line.partition(" =")
            found[name] = value.removeprefix(" ")
        return found

    def lookup_services(self) -> list[Service]:
        """The master.cf services that run smtpd or cleanup, chrooted or not (postconf -F)."""
        fields: dict[str, dict[str, str]] = {}
        for line in self._postconf("-F", "*/*/command", "*/*/chroot"):
            key, _, value = line.partition(" = ")
            service, _, field = key.rpartition("/")
            fields.setdefault(service, {})[field] = value.strip()
        return [
            # master(5): "-" means the default, n since Postfix 3.0.
            Service(name, values.get("chroot") == "y")
            for name, values in fields.items()
            if _program(values.get("command", "")) in LOOKUP_PROGRAMS
        ]

    def query(
        self, keys: list[str], table: str, *, account: Account | None, cwd: str
    ) -> tuple[dict[str, str], str | None]:
        """Look ``keys`` up in ``table`` with postmap; (found key -> value, error or None).

        With ``account``, postmap runs as that user (we are root) in ``cwd``, as a daemon
        would; a relative socket path then resolves inside the queue directory.
        """
        switch = account if account is not None and os.geteuid() == 0 else None
        try:
            done = subprocess.run(
                [self.postmap, *self._config_args(), "-q", "-", table],
                input="".join(key + "\n" for key in keys),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=TIMEOUT,
                check=False,
                cwd=cwd,
                user=switch.uid if switch else None,
                group=switch.gid if switch else None,
                extra_groups=switch.groups if switch else None,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {}, f"cannot run postmap: {exc}"
        found = {}
        for line in done.stdout.splitlines():
            key, tab, value = line.partition("\t")
            if tab:
                found[key] = value
        # The first complaint is the cause ("connect to tempmail/socket: Permission denied");
        # the lines after it repeat it for each enclosing table.
        problems = [
            line.split(": ", 1)[-1]
            for line in done.stderr.splitlines()
            if ": fatal: " in line or ": warning: " in line
        ]
        return found, problems[0] if problems else None


def check(config: Config, tools: Postfix, *, now: float | None = None) -> Report:
    """Every check of ``tempmail check``, in the order they are printed."""
    params = tools.parameters(_PARAMETERS)
    context = _Context(config, tools, params, time.time() if now is None else now)
    findings = [
        *context.check_maps(),
        *context.check_domains(),
        context.check_delimiter(),
        *context.check_reachable(),
        *context.check_resolves(),
    ]
    return Report(params["mail_version"], params["config_directory"], tuple(findings))


class _Context:
    """What the checks share: the two configurations and the lookup that joins them."""

    def __init__(self, config: Config, tools: Postfix, params: dict[str, str], now: float) -> None:
        self.config = config
        self.tools = tools
        self.params = params
        self.now = now
        self.queue = PurePosixPath(params["queue_directory"])
        self.domains = postfix.served_domains(config)
        self.map_name = config.server.map_name
        self.expected, _ = postfix.socket_name(config.socket, queue_directory=self.queue)
        ours = postfix.absolute_target(self.expected, self.queue)
        self.lookups = postfix.tempmail_lookups(params["virtual_alias_maps"])
        self.ours = [
            lookup
            for lookup in self.lookups
            if postfix.absolute_target(lookup.table.target, self.queue) == ours
        ]
        self.owner = Account.named(params["mail_owner"])
        # Where table lookups run, as the daemons do (a relative socket path needs it).
        self.workdir = str(self.queue) if Path(self.queue).is_dir() else "/"

    # --- virtual_alias_maps --------------------------------------------------------------------

    def check_maps(self) -> list[Finding]:
        fix = "use the virtual_alias_maps line of 'tempmail postfix-config'"
        if not self.ours:
            others = ", ".join(lookup.table.target for lookup in self.lookups) or "none"
            return [
                _problem(
                    f"virtual_alias_maps does not reach this server's socket {self.expected} "
                    f"(socketmap tables there: {others})",
                    fix,
                )
            ]
        lookup = self.ours[0]
        where = f"{lookup.table.target}, map '{lookup.table.map_name}'"
        if lookup.table.map_name != self.map_name:
            return [
                _problem(
                    f"virtual_alias_maps asks {lookup.table.target} for map "
                    f"'{lookup.table.map_name}', but this server answers '{self.map_name}'",
                    fix,
                )
            ]
        if not lookup.guard:
            return [
                _problem(
                    f"virtual_alias_maps asks this server ({where}) about every recipient (no "
                    "guard): while tempmail is down, all mail is deferred",
                    fix,
                )
            ]
        return [self._check_guard(lookup.guard, where, fix)]

    def _check_guard(self, guard: tuple[str, ...], where: str, fix: str) -> Finding:
        table = guard[0] if len(guard) == 1 else "pipemap:{" + ", ".join(guard) + "}"
        inside = [f"{GUARD_PROBE}@{d}" for d in self.domains]
        inside += [f"{GUARD_PROBE.upper()}+X@{d.upper()}" for d in self.domains]
        outside = [
            f"{GUARD_PROBE}@{domain}"
            for domain in (
                "example.invalid",
                *(f"sub.{d}" for d in self.domains),
                *(f"{d}.invalid" for d in self.domains),
                *(d for d in self._plain_items("mydestination")),
            )
            if domain.lower() not in self.domains
        ]
        found, error = self.tools.query(inside + outside, table, account=None, cwd=self.workdir)
        if error:
            return _problem(f"the guard in virtual_alias_maps does not work: {error}", fix)
        missed = sorted({key.partition("@")[2].lower() for key in inside if found.get(key) != key})
        if missed:
            return _problem(
                "the guard in virtual_alias_maps does not pass addresses of "
                f"{', '.join(missed)}: Postfix never asks tempmail about them",
                fix,
            )
        passed = [key for key in outside if key in found]
        if passed:
            return _problem(
                f"the guard in virtual_alias_maps passes {', '.join(passed)}, outside the "
                "temporary domains: a tempmail outage defers their mail too",
                fix,
            )
        return Finding(
            passed=True,
            text=f"virtual_alias_maps asks this server ({where}) only about "
            f"{', '.join(self.domains)} (the guard passes nothing else)",
        )

    # --- domains and delimiter -------------------------------------------------------------------

    def check_domains(self) -> list[Finding]:
        missing = [d for d in self.domains if not self._lists("virtual_alias_domains", d)]
        local = [d for d in self.domains if self._lists("mydestination", d)]
        findings = []
        if missing:
            findings.append(
                _problem(
                    f"virtual_alias_domains does not list {', '.join(missing)}: Postfix does "
                    "not accept mail for it as a virtual alias domain",
                    "use the virtual_alias_domains line of 'tempmail postfix-config'",
                )
            )
        else:
            findings.append(_ok(f"virtual_alias_domains lists {', '.join(self.domains)}"))
        if local:
            findings.append(
                _problem(
                    f"mydestination also lists {', '.join(local)}: Postfix treats it as a local "
                    "domain, not as a virtual alias domain",
                    "remove it from mydestination",
                )
            )
        else:
            findings.append(_ok("mydestination lists no temporary domain"))
        return findings

    def _lists(self, parameter: str, domain: str) -> bool:
        """Whether a domain list parameter matches ``domain`` (names, files and tables)."""
        for item in postfix.split_list(self.params[parameter]):
            if item.startswith("/"):
                if domain in _domains_in_file(item):
                    return True
            elif ":" in item:
                found, _ = self.tools.query([domain], item, account=None, cwd=self.workdir)
                if domain in found:
                    return True
            elif item.lower().removesuffix(".") == domain:
                return True
        return False

    def _plain_items(self, parameter: str) -> list[str]:
        return [
            item.lower()
            for item in postfix.split_list(self.params[parameter])
            if ":" not in item and not item.startswith("/")
        ]

    def check_delimiter(self) -> Finding:
        ours = self.config.server.recipient_delimiter
        theirs = self.params["recipient_delimiter"]
        if set(ours) == set(theirs):
            return _ok(f"recipient_delimiter {theirs!r} is tempmail's")
        return _problem(
            f"recipient_delimiter is {theirs!r} in Postfix but {ours!r} in tempmail: an address "
            "extension one of them knows is part of the code for the other",
            "set both to the same characters (the recipient_delimiter line of 'tempmail "
            "postfix-config', or [server] recipient_delimiter)",
        )

    # --- reachability and resolution -------------------------------------------------------------

    def _target(self) -> tuple[str, str]:
        """The socket and map name as main.cf names them (or as it should)."""
        if self.ours:
            return self.ours[0].table.target, self.ours[0].table.map_name
        return self.expected, self.map_name

    def check_reachable(self) -> list[Finding]:
        target, map_name = self._target()
        owner = self.params["mail_owner"]
        if self.owner is None:
            return [_problem(f"mail_owner {owner!r} is not a user here", "fix mail_owner")]
        services = self.tools.lookup_services()
        groups: list[tuple[bool, list[str]]] = [
            (True, [s.name for s in services if s.chroot]),
            (False, [s.name for s in services if not s.chroot]),
        ]
        if target.startswith("inet:") or not services:
            # TCP is the same inside and outside a chroot; without smtpd or cleanup in
            # master.cf, test what any daemon would see.
            groups = [(False, [s.name for s in services] or ["any daemon"])]
        findings = []
        for chrooted, names in groups:
            if not names:
                continue
            how = (
                f"chrooted to {self.queue} as {', '.join(names)}"
                if chrooted
                else f"not chrooted as {', '.join(names)}"
            )
            if os.geteuid() != 0 and (chrooted or os.geteuid() != self.owner.uid):
                findings.append(
                    _problem(
                        f"cannot connect to {target} as {owner} {how}",
                        "run tempmail check as root",
                    )
                )
                continue
            result = probe(self.owner, target, map_name, self.queue, chroot=chrooted)
            if result.error is None:
                findings.append(_ok(f"{owner} connects to {target} {how}, and tempmail answers"))
            else:
                findings.append(
                    _problem(
                        f"{owner} cannot connect to {target} {how}: {result.error}",
                        self._connect_fix(result, target, chroot=chrooted),
                    )
                )
        return findings

    def _connect_fix(self, result: ProbeResult, target: str, *, chroot: bool) -> str:
        path = target.removeprefix("unix:")
        if result.errno == errno.EACCES:
            return (
                f"let {self.params['mail_owner']} in: [socket] group = a group of it (mode "
                "0660), and a socket directory it may search"
            )
        if result.errno == errno.ENOENT and chroot and path.startswith("/"):
            return (
                f"chrooted daemons resolve {path} inside {self.queue}: put the socket inside "
                f"{self.queue} and name it relative to it (as 'tempmail postfix-config' does)"
            )
        if result.errno in (errno.ENOENT, errno.ECONNREFUSED):
            return "start tempmail serve (is [socket] path the socket Postfix names?)"
        return "check that tempmail serve runs and listens there"

    def check_resolves(self) -> list[Finding]:
        if not self.ours or self.ours[0].table.map_name != self.map_name:
            return []  # reported by check_maps: nothing here would add to it
        element = self.ours[0].element
        as_owner = self.owner is not None and (os.geteuid() == 0 or os.geteuid() == self.owner.uid)
        who = f"as {self.owner.name}" if as_owner and self.owner else "as this user"
        return [
            self._resolves(identity, element, who, as_owner) for identity in self.config.identities
        ]

    def _resolves(self, identity: Identity, element: str, who: str, as_owner: bool) -> Finding:
        address = str(generate.current_addresses(identity, self.now)[0])
        subject = f"today's address of identity '{identity.name}'"
        found, error = self.tools.query(
            [address],
            element,
            account=self.owner if as_owner else None,
            cwd=self.workdir,
        )
        result = found.get(address)
        if error:
            reason = error.replace(address, "<today's address>")
            return _problem(
                f"{subject} cannot be looked up through virtual_alias_maps (postmap -q {who}): "
                f"{reason}",
                f"{self.params['mail_owner']} must reach the server (see the checks above)",
            )
        if result == identity.recipient:
            return _ok(
                f"{subject} resolves to {identity.recipient} through virtual_alias_maps "
                f"(postmap -q {who})"
            )
        if result is None:
            return _problem(
                f"{subject} is not found through virtual_alias_maps (postmap -q {who})",
                "does the server run with this configuration and its secrets?",
            )
        return _problem(
            f"{subject} resolves to {result}, not to {identity.recipient} (postmap -q {who})",
            "an earlier table of virtual_alias_maps, or another server, answers for it",
        )


# --- small helpers -------------------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise PostfixUnavailable(f"{name} not found: install Postfix (Debian: apt install postfix)")
    return found


def _program(command: str) -> str:
    """The program a master.cf command runs ("smtpd -o ..." or a path to it)."""
    words = command.split()
    return PurePosixPath(words[0]).name if words else ""


def _domains_in_file(path: str) -> set[str]:
    """The names in a file that a domain list names (Postfix reads it as a list of names)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    names: set[str] = set()
    for line in text.splitlines():
        names.update(item.lower() for item in postfix.split_list(line.partition("#")[0]))
    return names


def _ok(text: str) -> Finding:
    return Finding(passed=True, text=text)


def _problem(cause: str, fix: str) -> Finding:
    return Finding(passed=False, text=f"{cause}; fix: {fix}")
