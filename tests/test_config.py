"""Configuration: defaults, the documented example, and every error message verbatim."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest

from harness import write_config
from helpers import IDENTITY, SECRET, StartServer, config_data
from tempmail import cli, config, schemes
from tempmail.errors import ConfigError
from tempmail.secret import Permissions
from tempmail.socketmap import Status

EXAMPLE = Path(__file__).parent.parent / "config.toml.example"


def load_data(tmp_path: Path, data: dict[str, Any], **kwargs: Any) -> config.Config:
    return config.load(write_config(tmp_path / "c.toml", data), **kwargs)


def problems(
    tmp_path: Path, data: dict[str, Any], environ: dict[str, str] | None = None
) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_data(tmp_path, data, environ=environ or {})
    prefix = f"{tmp_path / 'c.toml'}: "
    return [p.removeprefix(prefix) for p in caught.value.problems]


def test_minimal_config_gets_the_defaults(tmp_path: Path) -> None:
    data = {
        "identities": {"me": {"domain": "Example.ORG.", "recipient": "a@b.net", "secret": SECRET}}
    }
    loaded = load_data(tmp_path, data, environ={})
    assert loaded.server == config.ServerSettings()
    assert loaded.socket == config.SocketSettings()
    assert loaded.metrics == config.MetricsSettings()
    (me,) = loaded.identities
    assert me.domains == ("example.org",)  # case and the root dot are normalised
    assert me.scheme is schemes.HMAC
    assert me.accept == (schemes.HMAC,)
    assert (me.length, me.window, str(me.timezone)) == (8, 2, "UTC")
    assert (me.tags, me.tag_window, me.tag_delimiter, me.revoked_tags) == (
        False,
        2,
        "+",
        frozenset(),
    )
    assert [s.reveal() for s in me.secrets] == [SECRET.encode()]


def test_defaults_match_the_spec() -> None:
    """map name tempmail, max query 512, TCP on 127.0.0.1, unix socket mode 0660."""
    assert config.ServerSettings().map_name == "tempmail"
    assert config.ServerSettings().max_query_length == 512
    assert config.SocketSettings().host == "127.0.0.1"
    assert config.SocketSettings().mode == 0o660
    assert config.ServerSettings().secret_permissions is Permissions.PRIVATE


# --- the documented example ------------------------------------------------------------------


def example_keys(text: str) -> set[str]:
    """Dotted keys in the example, including commented-out ones like '# user = ...'."""
    keys, section = set(), ""
    for line in text.splitlines():
        header = re.fullmatch(r"\[([\w.]+)\]", line.strip())
        if header:
            section = header.group(1).replace("identities.default", "identity")
            continue
        assignment = re.match(r"#? ?(\w+) = ", line)
        if assignment:
            keys.add(f"{section}.{assignment.group(1)}")
    return keys


def test_example_documents_every_key() -> None:
    """Every key the loader accepts is in config.toml.example, and nothing else."""
    accepted = {f"server.{f.name}" for f in dataclasses.fields(config.ServerSettings)}
    accepted |= {f"socket.{f.name}" for f in dataclasses.fields(config.SocketSettings)}
    accepted |= {f"metrics.{f.name}" for f in dataclasses.fields(config.MetricsSettings)}
    accepted |= {f"publish.{f.name}" for f in dataclasses.fields(config.PublishSettings)}
    identity_keys = {
        "domain",
        "domains",
        "recipient",
        "secret",
        "secret_file",
        "previous_secrets",
        "previous_secret_files",
        "scheme",
        "accept",
        "length",
        "window",
        "timezone",
        "tags",
        "tag_window",
        "tag_delimiter",
        "revoked_tags",
        "legacy_tags_until",
    }
    accepted |= {f"identity.{k}" for k in identity_keys}
    documented = example_keys(EXAMPLE.read_text()) | {"identity.domains"}  # mentioned inline
    assert documented == accepted
    assert "domains = [" in EXAMPLE.read_text()


def test_example_loads_with_its_defaults(tmp_path: Path) -> None:
    """The example, with its secret file present, loads and equals the built-in defaults."""
    secret = tmp_path / "secret"
    secret.write_text("an example secret that is long enough\n")
    secret.chmod(0o600)
    text = EXAMPLE.read_text().replace('"/etc/tempmail/secret"', f'"{secret}"')
    path = tmp_path / "config.toml"
    path.write_text(text)
    loaded = config.load(path, environ={})
    assert loaded.server == config.ServerSettings()
    assert loaded.socket == config.SocketSettings()
    assert loaded.metrics == config.MetricsSettings()
    assert loaded.warnings == ()
    (identity,) = loaded.identities
    assert identity.recipient == "owner@example.net"


# --- errors ------------------------------------------------------------------------------------


def test_every_problem_is_reported_at_once_with_file_and_key(tmp_path: Path) -> None:
    data = {
        "server": {
            "map_name": "bad name",
            "max_query_length": True,
            "idle_timeout": "10",
            "max_conections": 5,
            "secret_permissions": "maybe",
        },
        "socket": {"type": "tcp", "mode": "rw", "port": 70000},
        "identities": {
            "me": {
                "domain": "not a domain",
                "recipient": "nobody",
                "secret": "x",
                "scheme": "sha1",
                "accept": ["md5", 3],
                "window": 0,
                "timezone": "Mars/Olympus",
                "colour": "blue",
            }
        },
    }
    assert problems(tmp_path, data) == [
        "server.map_name: use letters, digits, '_', '.' or '-' (at most 64)",
        "server.secret_permissions: must be one of 'private', 'group', 'any', got 'maybe'",
        "server.max_query_length: expected an integer, got a boolean",
        "server.idle_timeout: expected a number, got a string",
        "server.max_conections: unknown key (did you mean 'max_connections'?)",
        "socket.type: must be one of 'unix', 'inet', got 'tcp'",
        "socket.mode: expected an octal mode like \"0660\", got 'rw'",
        "socket.port: must be between 0 and 65535, got 70000",
        "identities.me.domain: 'not a domain' is not a domain name (use the ASCII/punycode form)",
        "identities.me.recipient: 'nobody' is not an e-mail address like user@example.org",
        "identities.me.scheme: must be one of 'md5', 'hmac', got 'sha1'",
        "identities.me.accept[1]: expected a string, got an integer",
        "identities.me.window: must be between 1 and 366, got 0",
        "identities.me.timezone: unknown IANA time zone 'Mars/Olympus' (for example 'Europe/Berlin')",
        "identities.me.colour: unknown key",
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"length": True}, "identities.default.length: expected an integer, got a boolean"),
        ({"length": 8.0}, "identities.default.length: expected an integer, got a number"),
        ({"length": 33}, "identities.default.length: must be between 1 and 32, got 33"),
        (
            {"accept": ["hmac"], "length": 65},
            "identities.default.length: must be between 1 and 64, got 65",
        ),
        (
            {"accept": ["md5"]},
            "identities.default.accept: must include the generating scheme 'hmac'",
        ),
        (
            {"accept": ["hmac", "rot13"]},
            "identities.default.accept: unknown scheme 'rot13' (known: md5, hmac)",
        ),
        ({"accept": "hmac"}, "identities.default.accept: expected an array, got a string"),
        (
            {"domain": None},
            "identities.default.domain: missing: the domain of the temporary addresses",
        ),
        (
            {"domains": ["a.org"]},
            "identities.default.domains: give either 'domain' or 'domains', not both",
        ),
        (
            {"recipient": None},
            "identities.default.recipient: missing: the permanent address that receives the mail",
        ),
        (
            {"recipient": "a b@c.org"},
            (
                "identities.default.recipient: 'a b@c.org' is not one plain address: before the @ "
                "use letters, digits, dots between them and #$&'*+-/=?^_`{|}~ (no spaces, commas, "
                "quotes, brackets, control characters, '!' or '%', which Postfix reads as address "
                "syntax)"
            ),
        ),
        (
            {"secret": None},
            "identities.default.secret_file: missing: set secret_file (recommended), secret, or the TEMPMAIL_SECRET variable",
        ),
        ({"secret": ""}, "identities.default.secret: is empty"),
        (
            {"secret": "a\nb"},
            "identities.default.secret: holds more than one line; put one secret per file (older secrets go in previous_secret_files)",
        ),
        (
            {"tags": True, "scheme": "md5", "accept": ["md5"]},
            "identities.default.tags: tagged addresses need the hmac scheme in 'accept'",
        ),
        (
            {"tag_delimiter": "++"},
            (
                'identities.default.tag_delimiter: must be one of + - _ = . ~, or "" for none '
                "(others change how Postfix reads the reply), got '++'"
            ),
        ),
        (
            {"revoked_tags": ["Shop"]},
            "identities.default.revoked_tags: 'Shop' is not a tag (lowercase letters, digits, _ -)",
        ),
        ({"window": 367}, "identities.default.window: must be between 1 and 366, got 367"),
    ],
)
def test_identity_errors(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    assert problems(tmp_path, config_data(**change)) == [expected]


def test_domains_list(tmp_path: Path) -> None:
    loaded = load_data(
        tmp_path, config_data(domain=None, domains=["A.org", "b.org", "a.org"]), environ={}
    )
    assert loaded.identities[0].domains == ("a.org", "b.org")
    assert problems(tmp_path, config_data(domain=None, domains=[])) == [
        "identities.default.domains: must list at least one domain"
    ]


def test_no_identity(tmp_path: Path) -> None:
    assert problems(tmp_path, {"server": {}}) == [
        "identities: no identity configured: add an [identities.NAME] table (see config.toml.example)"
    ]


def test_wrong_table_types(tmp_path: Path) -> None:
    assert problems(tmp_path, {**config_data(), "server": 3, "bogus": {}}) == [
        "server: expected a table, got an integer",
        "bogus: unknown key",
    ]


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path / "nope.toml")
    assert str(caught.value) == (
        f"{tmp_path / 'nope.toml'}: cannot read the configuration: No such file or directory "
        "(create one with 'tempmail init')"
    )
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path / "nope.toml", environ={"container": "podman"})
    assert str(caught.value) == (  # in a container the file is a mount the operator forgot
        f"{tmp_path / 'nope.toml'}: cannot read the configuration: No such file or directory "
        f"(mount the directory that holds it at {tmp_path}, e.g. -v ./config:{tmp_path}:ro; "
        "see docs/containers.md)"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("a = [")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML: Invalid value"):
        config.load(bad)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"binary\.toml: not UTF-8 text"):
        config.load(binary)


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.resolve_path("/x.toml", {"TEMPMAIL_CONFIG": "/y.toml"}) == Path("/x.toml")
    assert config.resolve_path(None, {"TEMPMAIL_CONFIG": "/y.toml"}) == Path("/y.toml")
    assert config.resolve_path(None, {}) == Path("/etc/tempmail/config.toml")


# --- secrets -------------------------------------------------------------------------------


def secret_file(tmp_path: Path, content: bytes | str, mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("s3cret value\n", b"s3cret value"),
        ("s3cret value\r\n", b"s3cret value"),
        ("s3cret value", b"s3cret value"),
        ("  spaced  \n", b"  spaced  "),
        ("ü\n", "ü".encode()),
    ],
)
def test_secret_file_contents(tmp_path: Path, content: str, expected: bytes) -> None:
    """One trailing newline is ignored; everything else is the secret."""
    path = secret_file(tmp_path, content)
    loaded = load_data(tmp_path, config_data(secret=None, secret_file=str(path)), environ={})
    assert loaded.identities[0].secrets[0].reveal() == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the secret file is empty"),
        ("\n", "the secret file is empty"),
        (
            "one\ntwo\n",
            "the secret file holds more than one line; put one secret per file (older secrets go in previous_secret_files)",
        ),
        (b"\xff\xfe", "the secret file is not UTF-8 text"),
    ],
)
def test_bad_secret_files(tmp_path: Path, content: bytes | str, message: str) -> None:
    """Problems with a secret file name the key, never the path (it might be the secret)."""
    path = secret_file(tmp_path, content)
    assert problems(tmp_path, config_data(secret=None, secret_file=str(path))) == [
        "identities.default.secret_file: " + message
    ]


def test_secret_file_missing_or_not_a_file(tmp_path: Path) -> None:
    assert problems(tmp_path, config_data(secret=None, secret_file="missing")) == [
        "identities.default.secret_file: cannot read the secret file: No such file or directory"
    ]
    assert problems(tmp_path, config_data(secret=None, secret_file=str(tmp_path))) == [
        "identities.default.secret_file: the secret file is not a regular file"
    ]


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    secret_file(tmp_path, "relative secret value 123\n")
    data = {**config_data(secret=None, secret_file="secret"), "socket": {"path": "sock"}}
    loaded = load_data(tmp_path, data, environ={})
    assert loaded.socket.path == tmp_path / "sock"
    assert loaded.identities[0].secrets[0].reveal() == b"relative secret value 123"


@pytest.mark.parametrize(
    ("mode", "permissions", "problem"),
    [
        (0o600, "private", None),
        (0o400, "private", None),
        (
            0o640,
            "private",
            "the secret file is accessible by its group (mode 0640); run 'chmod 600' on it, or set server.secret_permissions = \"group\" if a group must read it",
        ),
        (
            0o604,
            "private",
            "the secret file is accessible by others (mode 0604); run 'chmod 600' on it",
        ),
        (0o640, "group", None),
        (0o440, "group", None),
        (
            0o644,
            "group",
            "the secret file is accessible by others (mode 0644); run 'chmod 640' on it",
        ),
        (0o644, "any", None),
    ],
)
def test_secret_file_permissions(
    tmp_path: Path, mode: int, permissions: str, problem: str | None
) -> None:
    """A secret file readable beyond what secret_permissions allows is refused with a fix."""
    path = secret_file(tmp_path, "a secret that is long enough\n", mode)
    data = {
        **config_data(secret=None, secret_file=str(path)),
        "server": {"secret_permissions": permissions},
    }
    if problem is None:
        assert load_data(tmp_path, data, environ={}).identities
    else:
        assert problems(tmp_path, data) == ["identities.default.secret_file: " + problem]


def test_inline_secret_needs_a_private_config_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", config_data(), mode=0o644)
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    assert caught.value.problems == [
        (
            f"{path}: the file holds an inline secret and {path} is accessible by others "
            f"(mode 0644); run 'chmod 600 {path}'"
        )
    ]
    # Without an inline secret the config file may be world-readable (a ConfigMap, /etc).
    secret = secret_file(tmp_path, "a secret that is long enough\n")
    write_config(path, config_data(secret=None, secret_file=str(secret)), mode=0o644)
    assert config.load(path, environ={}).identities


def test_secret_from_the_environment(tmp_path: Path) -> None:
    loaded = load_data(
        tmp_path, config_data(secret=None), environ={"TEMPMAIL_SECRET": "from the environment 42"}
    )
    assert loaded.identities[0].secrets[0].reveal() == b"from the environment 42"
    assert problems(tmp_path, config_data(), {"TEMPMAIL_SECRET": "x" * 20}) == [
        "identities.default.secret: also given in TEMPMAIL_SECRET; remove one of the two"
    ]
    two = {"identities": {"a": {**IDENTITY, "secret": None}, "b": dict(IDENTITY)}}
    two["identities"]["a"].pop("secret")
    assert problems(tmp_path, two, {"TEMPMAIL_SECRET": "x" * 20})[0] == (
        "identities: TEMPMAIL_SECRET is set, but it can only stand in for a single identity"
    )


def test_both_secret_and_secret_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "a secret that is long enough\n")
    assert problems(tmp_path, config_data(secret_file=str(path))) == [
        "identities.default.secret: give either 'secret' or 'secret_file', not both"
    ]


def test_previous_secrets_follow_the_current_one(tmp_path: Path) -> None:
    old = secret_file(tmp_path, "an old secret from last year\n")
    data = config_data(
        previous_secrets=["an even older secret value"], previous_secret_files=[str(old)]
    )
    secrets = load_data(tmp_path, data, environ={}).identities[0].secrets
    assert [s.reveal() for s in secrets] == [
        SECRET.encode(),
        b"an even older secret value",
        b"an old secret from last year",
    ]


def test_weak_settings_give_warnings(tmp_path: Path) -> None:
    loaded = load_data(tmp_path, config_data(secret="short", length=4), environ={})
    path = tmp_path / "c.toml"
    assert loaded.warnings == (
        (
            f"{path}: identities.default.secret: the secret is shorter than 16 bytes and can be "
            "guessed offline from one address; 'tempmail init' makes a strong one"
        ),
        f"{path}: identities.default.length: codes of 4 hex digits can be guessed by sending mail",
    )


def test_secrets_never_show_in_reprs(tmp_path: Path) -> None:
    loaded = load_data(tmp_path, config_data(), environ={})
    assert SECRET not in repr(loaded)
    assert SECRET not in str(loaded.identities[0])
    assert "<SECRET>" in repr(loaded.identities[0])


def test_identity_lookup_by_name(tmp_path: Path) -> None:
    data = {"identities": {"alice": dict(IDENTITY), "bob": {**IDENTITY, "domain": "bob.org"}}}
    loaded = load_data(tmp_path, data, environ={})
    assert loaded.identity(None).name == "alice"
    assert loaded.identity("bob").domain == "bob.org"
    with pytest.raises(ConfigError, match=r"no identity named 'carol' \(configured: alice, bob\)"):
        loaded.identity("carol")


def test_a_secret_file_that_is_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    """A FIFO would block open() and read(); it is refused as not a regular file."""
    fifo = tmp_path / "secret"
    os.mkfifo(fifo, 0o600)
    assert problems(tmp_path, config_data(secret=None, secret_file=str(fifo))) == [
        "identities.default.secret_file: the secret file is not a regular file"
    ]


def test_secret_variable_that_is_not_utf8(tmp_path: Path) -> None:
    undecodable = b"caf\xe9 secret value".decode(errors="surrogateescape")  # as os.environ has it
    assert problems(tmp_path, config_data(secret=None), {"TEMPMAIL_SECRET": undecodable}) == [
        "TEMPMAIL_SECRET is not UTF-8 text"
    ]


def test_recipient_delimiter_takes_only_safe_characters(tmp_path: Path) -> None:
    """Non-ASCII (and every other character Postfix gives a meaning) is refused."""
    data = {**config_data(), "server": {"recipient_delimiter": "+§"}}
    assert problems(tmp_path, data) == [
        (
            "server.recipient_delimiter: each character must be one of + - _ = . ~ (others change "
            "how Postfix reads addresses), got '+§'"
        )
    ]


def test_unix_socket_path_length_is_checked(tmp_path: Path) -> None:
    long_path = "/run/" + "x" * 103  # 108 bytes: one more than sun_path can hold with its NUL
    data = {**config_data(), "socket": {"path": long_path}}
    assert problems(tmp_path, data) == [
        (
            f"socket.path: {long_path} is 108 bytes long; unix socket paths are limited to 107 "
            "bytes (too long for the kernel)"
        )
    ]
    data["socket"]["path"] = long_path[:-1]
    assert load_data(tmp_path, data, environ={}).socket.path == Path(long_path[:-1])


def test_event_loop_choice(tmp_path: Path) -> None:
    for choice in ("auto", "asyncio", "uvloop"):  # uvloop is a development dependency
        data = {**config_data(), "server": {"event_loop": choice}}
        assert load_data(tmp_path, data, environ={}).server.event_loop == choice
    data = {**config_data(), "server": {"event_loop": "trio"}}
    assert problems(tmp_path, data) == [
        "server.event_loop: must be one of 'auto', 'asyncio', 'uvloop', got 'trio'"
    ]


# --- a key in the wrong table ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            # `user` appended at the end of a file whose last table is an identity.
            config_data(user="tempmail"),
            "identities.default.user: unknown key (it belongs in [server])",
        ),
        (
            {**config_data(), "server": {"domain": "example.org"}},
            "server.domain: unknown key (it belongs in [identities.NAME])",
        ),
        (
            {**config_data(), "server": {"port": 10000}},
            "server.port: unknown key (it belongs in [socket] or [metrics])",
        ),
        (
            {**config_data(), "metrics": {"group": "postfix"}},
            "metrics.group: unknown key (it belongs in [socket])",
        ),
        (
            {**config_data(), "user": "tempmail"},
            "user: unknown key (it belongs in [server])",
        ),
        (
            config_data(secrte="x"),
            "identities.default.secrte: unknown key (did you mean 'secret'?)",
        ),
        (
            {**config_data(), "socket": {"recipient_delimter": "+"}},
            "socket.recipient_delimter: unknown key",
        ),
    ],
)
def test_a_key_in_the_wrong_table_is_told_where_it_belongs(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    """The hint names the table a key belongs in; a misspelling gets 'did you mean'."""
    assert problems(tmp_path, data) == [expected]


def test_wrong_table_hints_keep_the_order_of_the_file(tmp_path: Path) -> None:
    """Problems stay in reading order although unknown keys are worded at the end."""
    data = {
        "server": {"domain": "a.org", "max_query_length": True},
        "socket": {"mode": "rw"},
        **config_data(window=0),
    }
    assert problems(tmp_path, data) == [
        "server.max_query_length: expected an integer, got a boolean",
        "server.domain: unknown key (it belongs in [identities.NAME])",
        "socket.mode: expected an octal mode like \"0660\", got 'rw'",
        "identities.default.window: must be between 1 and 366, got 0",
    ]


# --- values that reach Postfix: the reply, main.cf, getpwnam(3) ------------------------------

_PLAIN_ADDRESS_RULE = (
    " is not one plain address: before the @ use letters, digits, dots between them and "
    "#$&'*+-/=?^_`{|}~ (no spaces, commas, quotes, brackets, control characters, '!' or '%', "
    "which Postfix reads as address syntax)"
)


@pytest.mark.parametrize(
    "recipient",
    [
        "you,kk@example.net",  # Postfix: a list of two recipients, "you" and "kk@example.net"
        "you kk@example.net",  # the same with a space
        "you\u0000kk@example.net",  # the reply's C string ends at the NUL
        "a\u0000b@example.net",
        "you\u007f@example.net",  # DEL
        "you\t@example.net",
        "you\r\n@example.net",
        "you\u0085@example.net",  # C1 "next line"
        "you\u2028@example.net",  # Unicode line separator
        '"you"@example.net',  # a quoted string: RFC 822 syntax
        "you(comment)@example.net",
        "you;kk@example.net",
        "you:kk@example.net",
        "you\\kk@example.net",
        "you[kk]@example.net",
        "you%evil.example@example.net",  # allow_percent_hack: mail to evil.example
        "evil.example!you@example.net",  # swap_bangpath: mail to evil.example
        "you@kk@example.net",
        ".you@example.net",
        "you.@example.net",
        "you..kk@example.net",
    ],
)
def test_a_recipient_that_changes_how_postfix_reads_the_reply_is_refused(
    tmp_path: Path, recipient: str
) -> None:
    """Postfix reads 'OK recipient' as an RFC 822 address list; only one plain address passes."""
    assert problems(tmp_path, config_data(recipient=recipient)) == [
        f"identities.default.recipient: {recipient!r}{_PLAIN_ADDRESS_RULE}"
    ]


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        ("you@", "'you@' is not an e-mail address like user@example.org"),
        ("@example.net", f"'@example.net'{_PLAIN_ADDRESS_RULE}"),
        ("you@exa mple.net", "'you@exa mple.net' is not an e-mail address like user@example.org"),
        ("you@[192.0.2.1]", "'you@[192.0.2.1]' is not an e-mail address like user@example.org"),
        (
            "You <you@example.net>",
            "'You <you@example.net>' is not an e-mail address like user@example.org",
        ),
        ("y" * 243 + "@example.net", "longer than 254 characters (SMTP's limit)"),
    ],
)
def test_recipient_domain_and_length(tmp_path: Path, recipient: str, expected: str) -> None:
    assert problems(tmp_path, config_data(recipient=recipient)) == [
        f"identities.default.recipient: {expected}"
    ]


@pytest.mark.parametrize(
    "recipient",
    [
        "o'brien@example.net",
        "first.last+tag@example.net",
        "a#$&'*+-/=?^_`{|}~z@example.net",
        "jörg@example.de",  # SMTPUTF8
        "root@localhost",
        "UPPER@Example.NET",
    ],
)
def test_plain_recipients_are_accepted(tmp_path: Path, recipient: str) -> None:
    loaded = load_data(tmp_path, config_data(recipient=recipient), environ={})
    assert loaded.identities[0].recipient == recipient


@pytest.mark.parametrize(
    "delimiter", [",", " ", "\u0000", "\u007f", "@", "%", "!", "<", '"', "$", "a", "7", "§"]
)
def test_a_tag_delimiter_that_changes_the_reply_is_refused(tmp_path: Path, delimiter: str) -> None:
    """With ',' a tagged mail went to 'you' and to 'kk@example.net'; with NUL it was cut."""
    assert problems(tmp_path, config_data(tags=True, tag_delimiter=delimiter)) == [
        (
            'identities.default.tag_delimiter: must be one of + - _ = . ~, or "" for none (others '
            f"change how Postfix reads the reply), got {delimiter!r}"
        )
    ]


@pytest.mark.parametrize("delimiter", ["+", "-", "_", "=", ".", "~", ""])
def test_safe_tag_delimiters_are_accepted(tmp_path: Path, delimiter: str) -> None:
    loaded = load_data(tmp_path, config_data(tags=True, tag_delimiter=delimiter), environ={})
    assert loaded.identities[0].tag_delimiter == delimiter


@pytest.mark.parametrize("delimiter", [",", "+ ", "\u0000", "+\u007f", "$", "{", "a", "+@"])
def test_a_recipient_delimiter_postfix_reads_otherwise_is_refused(
    tmp_path: Path, delimiter: str
) -> None:
    data = {**config_data(), "server": {"recipient_delimiter": delimiter}}
    assert problems(tmp_path, data) == [
        (
            "server.recipient_delimiter: each character must be one of + - _ = . ~ (others change "
            f"how Postfix reads addresses), got {delimiter!r}"
        )
    ]


def test_several_recipient_delimiters_and_none(tmp_path: Path) -> None:
    for delimiter in ("+-", "", "+-_=.~"):
        data = {**config_data(), "server": {"recipient_delimiter": delimiter}}
        assert load_data(tmp_path, data, environ={}).server.recipient_delimiter == delimiter


@pytest.mark.parametrize(
    ("table", "key", "value", "expected"),
    [
        (
            "server",
            "user",
            "temp\u0000mail",
            "expected a user name or a numeric uid, got 'temp\\x00mail'",
        ),
        ("server", "user", "temp mail", "expected a user name or a numeric uid, got 'temp mail'"),
        ("server", "user", "-rf", "expected a user name or a numeric uid, got '-rf'"),
        ("socket", "owner", "post\u0000fix", "expected a name or a numeric id, got 'post\\x00fix'"),
        ("socket", "group", "post:fix", "expected a name or a numeric id, got 'post:fix'"),
        ("socket", "group", "", "expected a name or a numeric id, got ''"),
        ("socket", "group", -1, "a numeric id must be between 0 and 4294967294, got -1"),
        (
            "socket",
            "host",
            "127.0.0.1\u0000",
            "expected a host name or IP address like ::1, got '127.0.0.1\\x00'",
        ),
        (
            "metrics",
            "host",
            "local host",
            "expected a host name or IP address like ::1, got 'local host'",
        ),
        ("metrics", "host", "", "must not be empty"),
    ],
)
def test_names_and_hosts_are_refused_before_they_reach_the_system(
    tmp_path: Path, table: str, key: str, value: object, expected: str
) -> None:
    """A NUL would make getpwnam(3) or getaddrinfo(3) raise instead of a config error."""
    assert problems(tmp_path, {**config_data(), table: {key: value}}) == [
        f"{table}.{key}: {expected}"
    ]


def test_user_and_group_names_as_useradd_takes_them(tmp_path: Path) -> None:
    data = {
        **config_data(),
        "server": {"user": "_tempmail-2.x"},
        "socket": {"owner": 10001, "group": "postfix", "host": "::1"},
        "metrics": {"host": "fe80::1%eth0"},
    }
    loaded = load_data(tmp_path, data, environ={})
    assert (loaded.server.user, loaded.socket.owner, loaded.socket.group) == (
        "_tempmail-2.x",
        10001,
        "postfix",
    )


@pytest.mark.parametrize("path", ["/run/temp mail/socket", "/run/a,b", "/run/$queue/s", "/run/{x}"])
def test_a_socket_path_main_cf_cannot_name_is_refused(tmp_path: Path, path: str) -> None:
    assert problems(tmp_path, {**config_data(), "socket": {"path": path}}) == [
        (
            f"socket.path: {path!r} holds a space, ',', '$', '{{', '}}' or a control character, which "
            "mean something where main.cf names the socket: choose a path without them"
        )
    ]


def test_paths_with_a_nul_are_refused_without_being_shown(tmp_path: Path) -> None:
    data = config_data(
        secret=None, secret_file="/etc/s\u0000cret", previous_secret_files=["a", "b\u0000c"]
    )
    data["socket"] = {"path": "/run/\u0000"}
    assert problems(tmp_path, data) == [
        "socket.path: must not contain a NUL character",
        "identities.default.secret_file: must not contain a NUL character",
        (
            "identities.default.previous_secret_files[0]: cannot read the secret file: No such file "
            "or directory"
        ),
        "identities.default.previous_secret_files[1]: must not contain a NUL character",
    ]


def test_a_home_directory_of_an_unknown_user_is_a_config_error(tmp_path: Path) -> None:
    """Path.expanduser() raises RuntimeError for '~nosuchuser'; it is reported like the rest."""
    data = config_data(secret=None, secret_file="~tempmail-no-such-user/secret")
    assert problems(tmp_path, data) == [
        "identities.default.secret_file: starts with '~' and a user name this system does not know"
    ]


@pytest.mark.parametrize("table", ["socket", "metrics"])
def test_port_0_lets_the_kernel_choose(tmp_path: Path, table: str) -> None:
    data = {**config_data(), table: {"port": 0}}
    assert getattr(load_data(tmp_path, data, environ={}), table).port == 0
    data[table]["port"] = -1
    assert problems(tmp_path, data) == [f"{table}.port: must be between 0 and 65535, got -1"]


def test_a_server_on_port_0_reports_the_port_it_got(start_server: StartServer) -> None:
    """No test has to probe for a free port (and race for it): the kernel picks, we read it."""
    running = start_server({**config_data(), "socket": {"type": "inet", "port": 0}})
    host, _, port = running.target.removeprefix("inet:").rpartition(":")
    assert (host, int(port) > 0) == ("127.0.0.1", True)
    assert running.query("nobody@example.org").status is Status.NOTFOUND


# --- a secret typed where its path belongs is never shown ------------------------------------

#: What an operator might paste into secret_file by mistake.
PASTED_SECRET = "Zebra-Quokka-7731-Marmalade"


@pytest.mark.parametrize(
    "where",
    [
        {"secret": None, "secret_file": PASTED_SECRET},
        {"secret": None, "secret_file": f"/{PASTED_SECRET}"},
        {"previous_secret_files": [PASTED_SECRET]},
        {"previous_secrets": [PASTED_SECRET], "previous_secret_files": [PASTED_SECRET]},
    ],
)
def test_a_secret_given_as_a_secret_file_is_never_shown(
    tmp_path: Path, where: dict[str, Any]
) -> None:
    messages = problems(tmp_path, config_data(**where))
    assert messages
    assert not [m for m in messages if PASTED_SECRET in m or "Zebra" in m]


def test_a_secret_given_as_a_secret_file_is_not_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "c.toml", config_data(secret=None, secret_file=PASTED_SECRET))
    assert cli.main(["-c", str(path), "address"]) == cli.EX_CONFIG
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        (
            f"tempmail: {path}: identities.default.secret_file: cannot read the secret file: "
            "No such file or directory\n"
        ),
    )


def test_a_secret_given_as_a_secret_file_is_not_logged_at_reload(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    running = start_server()
    running.rewrite_config(config_data(secret=None, secret_file=PASTED_SECRET))
    with caplog.at_level(logging.INFO):
        assert running.reload() is False
    assert "identities.default.secret_file: cannot read the secret file" in caplog.text
    assert PASTED_SECRET not in caplog.text


def test_a_publish_path_through_a_symlink_loop_is_no_crash(tmp_path: Path) -> None:
    """Comparing publish paths with the config's own follows symlinks; a loop is no error."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    data = {**config_data(), "publish": {"file": str(tmp_path / "a")}}
    loaded = config.parse(data, path=tmp_path / "config.toml", environ={})
    assert loaded.publish.file == tmp_path / "a"


@pytest.mark.parametrize("zone", ["Europe", "America/", "", "../../etc/passwd"])
def test_a_time_zone_that_names_a_directory_or_nothing_is_a_config_error(zone: str) -> None:
    """ZoneInfo("Europe") raises IsADirectoryError, not ZoneInfoNotFoundError."""
    data = config_data(timezone=zone)
    with pytest.raises(ConfigError) as caught:
        config.parse(data, environ={})
    expected = f"unknown IANA time zone {zone!r} (for example 'Europe/Berlin')"
    assert caught.value.problems == [f"<config>: identities.default.timezone: {expected}"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (2**32 - 1, "a numeric id must be between 0 and 4294967294, got 4294967295"),
        (99999999999, "a numeric id must be between 0 and 4294967294, got 99999999999"),
        (-1, "a numeric id must be between 0 and 4294967294, got -1"),
    ],
)
def test_numeric_socket_owners_and_groups_fit_an_id(value: int, problem: str) -> None:
    data = {**config_data(), "socket": {"owner": value, "group": value}}
    with pytest.raises(ConfigError) as caught:
        config.parse(data, environ={})
    assert caught.value.problems == [
        f"<config>: socket.owner: {problem}",
        f"<config>: socket.group: {problem}",
    ]


def test_a_secret_of_the_wrong_type_is_one_problem_not_also_a_missing_one() -> None:
    data = config_data()
    identity = data["identities"]["default"]
    identity.pop("secret", None)
    identity.pop("secret_file", None)
    identity["secret"] = 123
    with pytest.raises(ConfigError) as caught:
        config.parse(data, environ={})
    assert caught.value.problems == [
        "<config>: identities.default.secret: expected a string, got an integer"
    ]
