"""Address schemes: the documented vectors, real PHP, and the documented one-liners."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import subprocess
import time
from pathlib import Path

import pytest

from helpers import require_tool
from tempmail import schemes

DOCS = Path(__file__).parent.parent / "docs" / "schemes.md"
#: The vectors' name for tempmail 1.x tagged codes (no day hint, no key id).
LEGACY = "hmac-1.x"


def documented_vectors() -> list[tuple[str, str, dt.date, int, str | None, str]]:
    text = DOCS.read_text()
    table = text.split("<!-- vectors -->", 1)[1]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] not in (*schemes.SCHEMES, LEGACY):
            continue
        scheme, secret, date, length, tag, local = cells
        rows.append(
            (
                scheme,
                json.loads(secret.strip("`")),
                dt.date.fromisoformat(date),
                int(length),
                tag or None,
                local.strip("`"),
            )
        )
    return rows


VECTORS = documented_vectors()


def compute(scheme: str, secret: str, day: dt.date, length: int, tag: str | None) -> str:
    if tag is None:
        return schemes.code(schemes.SCHEMES[scheme], day, secret.encode(), length)
    if scheme == LEGACY:
        return f"{tag}.{schemes.legacy_tagged_code(day, tag, secret.encode(), length)}"
    return f"{tag}.{schemes.tagged_code(day, tag, secret.encode(), length)}"


def test_the_documentation_has_vectors_for_every_case() -> None:
    assert len(VECTORS) >= 12
    assert {v[0] for v in VECTORS} == {"md5", "hmac", LEGACY}
    tagged = [v for v in VECTORS if v[0] == "hmac" and v[4]]
    assert {schemes.day_hint(v[2]) for v in tagged} >= {"000", "fff"}, "both ends of the hint"
    assert {v[3] for v in tagged} >= {1, 64}, "shortest and longest codes"


@pytest.mark.parametrize(("scheme", "secret", "day", "length", "tag", "local"), VECTORS)
def test_documented_vectors(
    scheme: str, secret: str, day: dt.date, length: int, tag: str | None, local: str
) -> None:
    """Every vector in docs/schemes.md is what tempmail computes."""
    assert compute(scheme, secret, day, length, tag) == local


def test_original_php_example() -> None:
    """The example of the original project: md5, length 8."""
    assert schemes.code(schemes.MD5, dt.date(2026, 11, 27), b"<Your secret>", 8) == "cad5b5f5"


@pytest.mark.parametrize("scheme", [schemes.MD5, schemes.HMAC])
def test_length_limits(scheme: schemes.Scheme) -> None:
    day = dt.date(2026, 1, 1)
    assert len(schemes.code(scheme, day, b"s", scheme.max_length)) == scheme.max_length
    for bad in (0, scheme.max_length + 1):
        with pytest.raises(ValueError, match=f"1 to {scheme.max_length} characters"):
            schemes.code(scheme, day, b"s", bad)


def test_tags_are_validated() -> None:
    with pytest.raises(ValueError, match="invalid tag"):
        schemes.tagged_code(dt.date(2026, 1, 1), "Shop", b"s", 8)
    for tag in ("a", "shop", "news-letter", "x_1", "a" * 32):
        assert schemes.TAG_PATTERN.fullmatch(tag)
    for tag in ("", "-a", "a-", "a.b", "a" * 33, "ü"):
        assert not schemes.TAG_PATTERN.fullmatch(tag)


def test_date_message_pads_like_php() -> None:
    assert schemes.date_message(dt.date(987, 3, 4)) == b"09870304"


def test_a_tagged_code_is_day_hint_key_id_and_mac() -> None:
    """HINT (3 hex digits) + KEYID (1) + LENGTH digits of HMAC over tag2/YYYYMMDD/TAG."""
    day, secret = dt.date(2026, 11, 27), b"<Your secret>"
    code = schemes.tagged_code(day, "shop", secret, 8)
    assert code == "130" + "6" + "6de1d62e"
    assert schemes.day_hint(day) == "130"  # day 20784 since 1970-01-01; 20784 % 4096 = 0x130
    assert schemes.key_id(secret) == "6"
    assert schemes.tag_mac(day, "shop", secret, 8) == "6de1d62e"
    assert len(schemes.tagged_code(day, "shop", secret, 64)) == 68


def test_day_hints_name_one_date_in_any_window() -> None:
    """4096 consecutive dates have 4096 different hints, so a 366-day window never repeats one."""
    start = dt.date(2026, 1, 1)
    hints = [schemes.day_hint(start + dt.timedelta(days=n)) for n in range(4096)]
    assert len(set(hints)) == 4096
    assert all(re.fullmatch("[0-9a-f]{3}", hint) for hint in hints)
    assert schemes.day_hint(start + dt.timedelta(days=4096)) == hints[0]


def test_key_ids_are_one_hex_digit_and_depend_on_the_secret() -> None:
    ids = {schemes.key_id(f"secret {n}".encode()) for n in range(200)}
    assert ids == set("0123456789abcdef")


def test_hmac_messages_never_coincide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Domain separation: untagged, 1.x tagged, key id and tagged messages are disjoint sets."""
    seen: dict[str, set[bytes]] = {}
    kind = ""
    original = schemes._hmac_digest

    def spy(message: bytes, secret: bytes) -> str:
        seen.setdefault(kind, set()).add(message)
        return original(message, secret)

    monkeypatch.setattr(schemes, "_hmac_digest", spy)
    monkeypatch.setitem(schemes.SCHEMES, "hmac", schemes.Scheme("hmac", 64, spy))
    for n in range(0, 4000, 7):
        day = dt.date(2000, 1, 1) + dt.timedelta(days=n)
        for tag in ("a", "shop", "20261127", "key-id", "tag2"):
            kind = "untagged"
            schemes.code(schemes.SCHEMES["hmac"], day, b"s", 8)
            kind = "legacy"
            schemes.legacy_tagged_code(day, tag, b"s", 8)
            kind = "key id"
            schemes.key_id(b"s")
            kind = "tagged"
            schemes.tag_mac(day, tag, b"s", 8)
    kinds = list(seen.values())
    assert len(kinds) == 4
    for i, one in enumerate(kinds):
        for other in kinds[i + 1 :]:
            assert not one & other
    assert all(m.startswith(b"tag2/") for m in seen["tagged"])


def test_tagged_and_legacy_codes_validate_their_input() -> None:
    day = dt.date(2026, 1, 1)
    for function in (schemes.tagged_code, schemes.legacy_tagged_code, schemes.tag_mac):
        with pytest.raises(ValueError, match=r"invalid tag 'a\.b'"):
            function(day, "a.b", b"s", 8)
        with pytest.raises(ValueError, match="hmac codes are 1 to 64 characters long"):
            function(day, "a", b"s", 65)


# --- real PHP -------------------------------------------------------------------------------

PHP_PROGRAM = r"""
$cases = json_decode(stream_get_contents(STDIN), true);
$out = [];
foreach ($cases as [$scheme, $secret, $ymd, $length, $tag]) {
    if ($scheme === "md5") { $out[] = substr(md5($ymd . $secret), 0, $length); }
    elseif ($tag === null) { $out[] = substr(hash_hmac('sha256', $ymd, $secret), 0, $length); }
    elseif ($scheme === "hmac-1.x") {
        $out[] = $tag . "." . substr(hash_hmac('sha256', $ymd . "/" . $tag, $secret), 0, $length);
    } else {
        $out[] = $tag . "." . sprintf("%03x", intdiv(strtotime("$ymd UTC"), 86400) % 4096)
            . hash_hmac('sha256', 'key-id', $secret)[0]
            . substr(hash_hmac('sha256', "tag2/$ymd/$tag", $secret), 0, $length);
    }
}
echo json_encode($out);
"""


def random_secret(rng: random.Random) -> str:
    alphabet = "abcXYZ019 $-\\'\"`!#%&*()[]{}<>|;:,.?/~^=+_\tüéß€漢字🙂"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))


@pytest.mark.php
def test_random_cases_match_real_php() -> None:
    """500 random secrets (non-ASCII, $x, -n, spaces...), dates, lengths, tags: PHP agrees."""
    php = require_tool("php", "php-cli")
    rng = random.Random(20261127)
    cases = []
    for secret in [
        "-n",
        "-e",
        "$x",
        " lead and trail ",
        "ü",
        *(random_secret(rng) for _ in range(495)),
    ]:
        scheme = rng.choice(["md5", "hmac"])
        day = dt.date(2000, 1, 1) + dt.timedelta(days=rng.randint(0, 20000))
        length = rng.randint(1, schemes.SCHEMES[scheme].max_length)
        tag = rng.choice([None, None, "shop", "a-b_c"]) if scheme == "hmac" else None
        if tag is not None and rng.random() < 0.3:
            scheme = LEGACY
        cases.append((scheme, secret, day, length, tag))
    payload = json.dumps([(s, sec, d.strftime("%Y%m%d"), n, t) for s, sec, d, n, t in cases])
    result = subprocess.run(
        [php, "-r", PHP_PROGRAM], input=payload, capture_output=True, text=True, check=True
    )
    expected = json.loads(result.stdout)
    assert [compute(*case) for case in cases] == expected


@pytest.mark.php
@pytest.mark.parametrize(("scheme", "secret", "day", "length", "tag", "local"), VECTORS)
def test_documented_vectors_match_real_php(
    scheme: str, secret: str, day: dt.date, length: int, tag: str | None, local: str
) -> None:
    php = require_tool("php", "php-cli")
    payload = json.dumps([(scheme, secret, day.strftime("%Y%m%d"), length, tag)])
    result = subprocess.run(
        [php, "-r", PHP_PROGRAM], input=payload, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == [local]


# --- the one-liners in docs/schemes.md ------------------------------------------------------


def documented_oneliners() -> dict[str, str]:
    blocks = re.findall(
        r"<!-- oneliner: (\w+ \w+) -->\n```sh\n(.*?)\n```", DOCS.read_text(), flags=re.DOTALL
    )
    return dict(blocks)


ONELINERS = documented_oneliners()


def test_every_language_has_a_oneliner_for_every_scheme() -> None:
    assert set(ONELINERS) == {
        f"{lang} {kind}" for lang in ("php", "python", "shell") for kind in ("md5", "hmac", "tag")
    }


@pytest.mark.parametrize("name", sorted(ONELINERS))
def test_oneliner_prints_todays_code(name: str) -> None:
    """Each documented one-liner, run as written, prints tempmail's code for today (UTC)."""
    language, kind = name.split()
    if language == "php":
        require_tool("php", "php-cli")
    if language == "shell":
        require_tool("openssl", "openssl")
    secret = "d0cs $ecret ü"
    command = ONELINERS[name].replace("SECRET='your secret'", f"SECRET='{secret}'")
    for _ in range(2):  # run again if the UTC date changed while the command ran
        day = dt.datetime.now(dt.UTC).date()
        output = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        ).stdout.strip()
        if dt.datetime.now(dt.UTC).date() == day:
            break
        time.sleep(0.1)
    tag = "shop" if kind == "tag" else None
    scheme = "hmac" if kind == "tag" else kind
    assert output == compute(scheme, secret, day, 8, tag)
