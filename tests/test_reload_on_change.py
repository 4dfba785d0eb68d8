"""The server reloads by itself when its config or a secret file changes: no signal needed.

Each kind of change an operator's tools make is tested against a real server: an edit in place
(same inode), a replacement by rename (editors, ``sed -i``), and the kubelet's swap of a
``..data`` symlink in ConfigMap and Secret volumes.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from harness import RunningServer, write_config
from helpers import RECIPIENT, SECRET, StartServer, config_data
from tempmail import schemes, status
from tempmail.client import Client
from tempmail.server import NEEDS_RESTART
from tempmail.socketmap import Status

#: The issue's promise: a change is served within 5 s (the watcher polls every second and
#: waits for one more poll to see the file settled).
WITHIN: float = 5.0
OLD_SECRET = "the old secret, long enough to be strong"
NEW_SECRET = "the new secret, long enough to be strong"


def address(secret: str, days_ago: int = 0) -> str:
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days_ago)
    return f"{schemes.code(schemes.HMAC, day, secret.encode(), 8)}@example.org"


def generation(running: RunningServer) -> int:
    report = status.parse(running.query("x", map_name=status.STATUS_MAP))
    return int(report["config"]["generation"])


def wait_for(check: Callable[[], bool], what: str, timeout: float = WITHIN) -> float:
    """Seconds until ``check`` holds; fails after ``timeout``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def resolves(running: RunningServer, key: str) -> bool:
    return running.query(key).status is Status.OK


def secret_config(secret_file: Path, **server: Any) -> dict[str, Any]:
    data = config_data(secret=None, secret_file=str(secret_file))
    if server:
        data["server"] = server
    return data


def start_with_secret_file(
    start_server: StartServer, directory: Path, **server: Any
) -> tuple[RunningServer, Path]:
    secret = directory / "secret"
    secret.write_text(OLD_SECRET + "\n")
    secret.chmod(0o600)
    return start_server(secret_config(secret, **server)), secret


def test_a_secret_edited_in_place_is_served_within_5_s(
    start_server: StartServer, short_dir: Path
) -> None:
    running, secret = start_with_secret_file(start_server, short_dir)
    inode = secret.stat().st_ino
    with secret.open("r+") as file:  # same inode: what `>` or an in-place editor does
        file.write(NEW_SECRET + "\n")
        file.truncate()
    assert secret.stat().st_ino == inode
    took = wait_for(lambda: resolves(running, address(NEW_SECRET)), "the new secret")
    assert not resolves(running, address(OLD_SECRET))
    assert generation(running) == 2
    print(f"edited in place: served after {took:.2f} s")


def test_a_config_replaced_by_rename_is_served_within_5_s(
    start_server: StartServer, short_dir: Path
) -> None:
    """Editors and `sed -i` write a new file and rename it over the old one."""
    running = start_server(config_data(secret=OLD_SECRET))
    data = config_data(secret=NEW_SECRET)
    data["socket"] = {"path": running.target.removeprefix("unix:")}
    replacement = write_config(running.config_path.with_suffix(".new"), data)
    replacement.replace(running.config_path)
    took = wait_for(lambda: resolves(running, address(NEW_SECRET)), "the new config")
    assert generation(running) == 2
    print(f"replaced by rename: served after {took:.2f} s")


class KubeletVolume:
    """A ConfigMap/Secret volume as the kubelet writes it.

    ``NAME -> ..data/NAME``, ``..data -> ..<timestamp>``; an update writes a new timestamped
    directory, points ``..data_tmp`` at it and renames ``..data_tmp`` over ``..data``.
    """

    def __init__(self, root: Path, files: dict[str, str], mode: int = 0o440) -> None:
        self.root = root
        self.mode = mode
        self.version = 0
        root.mkdir()
        self.update(files)
        for name in files:
            (root / name).symlink_to(Path("..data") / name)

    def update(self, files: dict[str, str]) -> None:
        self.version += 1
        payload = self.root / f"..2026_11_29_{self.version:02d}"
        payload.mkdir()
        for name, text in files.items():
            (payload / name).write_text(text)
            (payload / name).chmod(self.mode)
        link = self.root / "..data_tmp"
        link.symlink_to(payload.name)
        link.replace(self.root / "..data")


def test_the_kubelet_swapping_data_is_served_within_5_s(
    start_server: StartServer, short_dir: Path
) -> None:
    """A ConfigMap edit reaches the pod as a `..data` swap; nobody sends a signal there."""
    volume = KubeletVolume(short_dir / "config", {"config.toml": ""}, mode=0o600)
    socket_path = short_dir / "s.sock"

    def config_text(secret: str) -> str:
        data = config_data(secret=secret)
        data["socket"] = {"path": str(socket_path)}
        return tomli_w.dumps(data)

    volume.update({"config.toml": config_text(OLD_SECRET)})
    running = start_server(config_path=volume.root / "config.toml")
    assert resolves(running, address(OLD_SECRET))
    volume.update({"config.toml": config_text(NEW_SECRET)})
    took = wait_for(lambda: resolves(running, address(NEW_SECRET)), "the swapped config")
    assert generation(running) == 2
    print(f"kubelet ..data swap: served after {took:.2f} s")


def test_a_secret_rotated_through_the_kubernetes_layout_loses_no_lookup(
    start_server: StartServer, short_dir: Path
) -> None:
    """New secret + previous secret via `..data`, while lookups run: 0 failed lookups.

    Addresses made with the old secret keep resolving through the swap (it becomes the
    previous secret), and the new secret's addresses resolve within 5 s.
    """
    secrets_volume = KubeletVolume(short_dir / "secret", {"secret": OLD_SECRET + "\n"})
    data = config_data(secret=None, secret_file=str(secrets_volume.root / "secret"))
    data["identities"]["default"]["previous_secret_files"] = [str(secrets_volume.root / "previous")]
    data["server"] = {"secret_permissions": "group"}
    # Before the rotation "previous" holds the old secret too (Kubernetes Secrets are
    # updated as a whole: both keys exist from the start).
    secrets_volume.update({"secret": OLD_SECRET + "\n", "previous": OLD_SECRET + "\n"})
    (secrets_volume.root / "previous").symlink_to(Path("..data") / "previous")
    running = start_server(data)
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def ask_old_addresses() -> None:
        with Client(running.target, timeout=5) as client:
            while not stop.is_set():
                for key in (address(OLD_SECRET), address(OLD_SECRET, days_ago=1)):
                    reply = client.query("tempmail", key)
                    ok = reply.status is Status.OK and reply.data == RECIPIENT
                    outcomes["ok" if ok else f"{reply.status.value} {reply.data}"] += 1

    workers = [threading.Thread(target=ask_old_addresses) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        secrets_volume.update({"secret": NEW_SECRET + "\n", "previous": OLD_SECRET + "\n"})
        took = wait_for(lambda: resolves(running, address(NEW_SECRET)), "the rotated secret")
        time.sleep(0.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
    assert set(outcomes) == {"ok"}, outcomes
    assert outcomes["ok"] > 100
    assert generation(running) == 2
    print(f"rotation: {outcomes['ok']} lookups, 0 failed; new secret served after {took:.2f} s")


def test_reload_on_change_false_leaves_reloads_to_sighup(
    start_server: StartServer, short_dir: Path
) -> None:
    running, secret = start_with_secret_file(start_server, short_dir, reload_on_change=False)
    secret.write_text(NEW_SECRET + "\n")
    time.sleep(3.5)  # three watcher periods: long enough for a change to be noticed
    assert generation(running) == 1
    assert resolves(running, address(OLD_SECRET))
    assert running.reload() is True
    assert resolves(running, address(NEW_SECRET))


def test_a_broken_file_is_tried_once_and_the_old_config_keeps_serving(
    start_server: StartServer, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken change is logged once (not every second); fixing it reloads."""
    running, secret = start_with_secret_file(start_server, short_dir)
    with caplog.at_level(logging.INFO, "tempmail"):
        secret.write_text("")  # an empty secret file is refused
        wait_for(lambda: "reload failed (file)" in caplog.text, "the failed reload")
        time.sleep(3.0)
        assert caplog.text.count("reload failed (file)") == 1
        assert resolves(running, address(OLD_SECRET))
        report = status.parse(running.query("x", map_name=status.STATUS_MAP))
        assert report["reloads"]["last_ok"] is False
        secret.write_text(NEW_SECRET + "\n")
        wait_for(lambda: resolves(running, address(NEW_SECRET)), "the fixed secret")
    assert "the configuration or a secret file changed: reloading" in caplog.text


def test_a_secret_file_that_appears_later_is_noticed(
    start_server: StartServer, short_dir: Path
) -> None:
    """A file that is missing after a failed reload is watched until it exists."""
    running, secret = start_with_secret_file(start_server, short_dir)
    secret.unlink()
    wait_for(
        lambda: (
            not status.parse(running.query("x", map_name=status.STATUS_MAP))["reloads"]["last_ok"]
        ),
        "the failed reload",
    )
    secret.write_text(NEW_SECRET + "\n")
    secret.chmod(0o600)
    wait_for(lambda: resolves(running, address(NEW_SECRET)), "the restored secret")


def test_log_level_applies_on_reload(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    running = start_server()
    logger = logging.getLogger("tempmail")
    before = logger.level
    try:
        data = config_data()
        data["socket"] = {"path": running.target.removeprefix("unix:")}
        data["server"] = {"log_level": "error"}
        running.rewrite_config(data)
        assert running.reload() is True
        assert logger.level == logging.ERROR
        data["server"] = {"log_level": "debug"}
        running.rewrite_config(data)
        assert running.reload() is True
        assert logger.level == logging.DEBUG
        # Lookups are logged from the first one after that reload.
        running.query("nobody@example.org")
        assert "lookup key=nobody@example.org result=NOTFOUND" in caplog.text
    finally:
        logger.setLevel(before)


def test_the_readme_lists_exactly_what_needs_a_restart() -> None:
    """The README's sentence and the server's NEEDS_RESTART name the same settings."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    sentence = next(line for line in readme.splitlines() if "need a restart:" in line)
    named = set(re.findall(r"`([^`]+)`", sentence.split("need a restart:")[1]))
    assert named == {f"[{key}]" if "." not in key else key for key in NEEDS_RESTART}


def test_an_unexpected_error_while_reloading_fails_the_reload_not_the_server(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in loading (not a ConfigError) is a failed reload: the old config serves on."""
    running = start_server()
    today = address(SECRET)

    def broken_loader() -> None:
        raise IsADirectoryError(21, "Is a directory")

    monkeypatch.setattr(running.server, "_loader", broken_loader)
    assert running.reload() is False
    assert running.server.stats.last_reload_error == (
        "unexpected error: IsADirectoryError (a bug; see the log)"
    )
    assert resolves(running, today)
    assert not running.task.done()
