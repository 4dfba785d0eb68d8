"""What an operator does on the host around a sidecar: files, edits, commands and SMTP.

The compose, podman and README tests share these steps so that each one is done the way the
documentation tells an operator to do it: the config and the secret live in directories that
are mounted whole, a file is changed the way an editor or ``sed -i`` changes it (a new file
renamed over the old one, so the old inode is left behind), and mail is sent over SMTP.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from .sidecar import TEMPMAIL_UID

#: Where the example Postfix image sees the socket that the sidecar creates in the shared
#: volume: what every deployment tells ``tempmail postfix-config --postfix-socket``.
POSTFIX_SOCKET = "/var/spool/postfix/tempmail/socket"

#: Postfix's answer when the sidecar knows the address, and when it does not.
ACCEPTED = 250
UNKNOWN = 550

#: Sent with bash inside a container (Postfix's image has no Python): RCPT, then DATA when the
#: recipient is accepted and a subject is given. Prints the RCPT reply, then the DATA reply.
SMTP_SCRIPT = r"""
exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 99
reply() {
  local line
  while IFS= read -r -t 30 line <&3; do
    line=${line%$'\r'}
    [[ $line == [0-9][0-9][0-9]-* ]] || { printf '%s\n' "$line"; return; }
  done
  echo "000 connection closed"
}
reply >/dev/null
printf 'EHLO operator.test\r\n' >&3; reply >/dev/null
printf 'MAIL FROM:<sender@localhost>\r\n' >&3; reply >/dev/null
printf 'RCPT TO:<%s>\r\n' "$2" >&3; rcpt=$(reply); printf '%s\n' "$rcpt"
if [[ $rcpt == 250* && -n $3 ]]; then
  printf 'DATA\r\n' >&3; reply >/dev/null
  printf 'From: sender@localhost\r\nSubject: %s\r\n\r\nsent by an operator test\r\n.\r\n' "$3" >&3
  reply
fi
printf 'QUIT\r\n' >&3; reply >/dev/null
"""


def new_secret() -> str:
    """What the documentation generates: 32 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(32)


def replace_like_an_editor(path: Path, content: str, mode: int, owner: int | None = None) -> None:
    """Write ``content`` to a new file next to ``path`` and rename it over ``path``.

    The new file is private from its first byte (created with ``mode``, then given to
    ``owner``), as ``umask 077`` and ``install -m`` would make it: a secret is never readable
    by others on the host, not even for a moment.
    """
    temporary = path.with_name(f".{path.name}.new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "w") as file:
        file.write(content)
    if owner is not None:
        os.chown(temporary, owner, owner)
    temporary.replace(path)


def write_secret_directory(directory: Path, secret: str, name: str = "secret") -> Path:
    """The secret directory of the docs: ``name`` owned by the sidecar's uid, mode 0400."""
    directory.mkdir(mode=0o755, exist_ok=True)
    path = directory / name
    replace_like_an_editor(path, secret + "\n", 0o400, owner=TEMPMAIL_UID)
    return path


def postfix_config_for(config_toml: str, postfix_socket: str = POSTFIX_SOCKET) -> str:
    """What ``tempmail postfix-config --postfix-socket PATH`` prints for a shipped config file.

    Run on the host with this checkout's tempmail, on a private copy in which the secret files
    (which exist only where the config is deployed) are replaced by an inline secret: the
    printed lines depend on the domains, the socket and the map name, never on a secret.
    """
    data = tomllib.loads(config_toml)
    for table in data.get("identities", {}).values():
        for key in ("secret_file", "previous_secret_files", "previous_secrets"):
            table.pop(key, None)
        table["secret"] = new_secret()
    with tempfile.TemporaryDirectory(prefix="tempmail-it-print-") as directory:
        path = Path(directory) / "config.toml"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(tomli_w.dumps(data))
        command = [sys.executable, "-m", "tempmail", "--config", str(path), "postfix-config"]
        return run([*command, "--postfix-socket", postfix_socket])


def run(
    command: list[str], timeout: float = 120, cwd: Path | None = None, stdin: str | None = None
) -> str:
    """Run ``command``; its standard output, or an assertion naming the command and output."""
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        input=stdin,
    )
    assert result.returncode == 0, (
        f"{' '.join(command)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
    )
    return result.stdout


@dataclass(frozen=True)
class SmtpAnswer:
    """Postfix's replies to RCPT TO and (if a message was sent) to the end of DATA."""

    rcpt: int
    data: int | None
    text: str


def smtp_inside(
    execute: Callable[[list[str]], tuple[int, str]],
    port: int,
    address: str,
    subject: str = "",
) -> SmtpAnswer:
    """Speak SMTP to 127.0.0.1:``port`` from inside a container, through ``execute(argv)``."""
    code, output = execute(["bash", "-c", SMTP_SCRIPT, "smtp", str(port), address, subject])
    assert code == 0, f"SMTP inside the container: exit {code}: {output}"
    lines = output.splitlines()
    return SmtpAnswer(
        rcpt=int(lines[0][:3]),
        data=int(lines[1][:3]) if len(lines) > 1 else None,
        text=output,
    )


def today_address(execute: Callable[[list[str]], tuple[int, str]]) -> str:
    """The first line of ``tempmail address`` inside the sidecar: today's address."""
    code, output = execute(["tempmail", "address"])
    assert code == 0, f"tempmail address: exit {code}: {output}"
    return next(line for line in output.splitlines() if "@" in line and " " not in line)


#: The image's healthcheck command (container/Containerfile): asks the running server.
SELF_TEST = [
    "tempmail",
    "query",
    "--self-test",
    "--socket",
    "unix:/run/tempmail/socket",
    "--map",
    "tempmail",
]


def postfix_substitutions(port: int) -> list[tuple[str, str]]:
    """What a documented Postfix command needs here: host networking and a free port instead
    of ``-p 25:25`` (no bridge network on the test machine), loopback instead of every
    interface (a test must not listen on the network)."""
    return [
        (" -p 25:25 ", " --network host "),
        ("-e SMTP_PORT=25 ", f"-e SMTP_PORT={port} "),
        ("-e SMTP_INTERFACES=all ", "-e SMTP_INTERFACES=loopback-only "),
    ]


def substituted(text: str, substitutions: list[tuple[str, str]]) -> str:
    """``text`` with each substitution made; each must match exactly once."""
    for old, new in substitutions:
        assert text.count(old) == 1, f"the documented block no longer has {old!r} exactly once"
        text = text.replace(old, new)
    return text


def log_time(line: str) -> float:
    """The UTC timestamp that starts a tempmail log line, as seconds since the epoch."""
    stamp = line.split(" ", 1)[0]
    parsed = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def shutdown_seconds(log: str) -> float:
    """From the last "received SIGTERM" to the final "stopped" line of a sidecar's log."""
    lines = log.splitlines()
    assert lines, "no log"
    assert lines[-1].endswith("tempmail.server: stopped"), lines[-1]
    began = next(line for line in reversed(lines) if "received SIGTERM" in line)
    return log_time(lines[-1]) - log_time(began)
