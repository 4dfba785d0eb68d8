"""`tempmail serve` from the outside: one-line errors with their exit status, and warnings
about a socket that Postfix could not reach."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ServerProcess, write_config
from helpers import config_data, require_tool
from tempmail import listeners, service
from tempmail.errors import ConfigError, ServerError


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tempmail", "-c", str(config), "serve"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def test_a_metrics_port_in_use_is_one_line_and_exit_71(short_dir: Path) -> None:
    """It used to escape the task group as an ExceptionGroup traceback with exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = config_data()
        data["server"] = {"user": current_user()}
        data["socket"] = {"path": str(short_dir / "s.sock")}
        data["metrics"] = {"enabled": True, "port": port}
        result = serve(write_config(short_dir / "c.toml", data))
    assert result.returncode == 71
    assert result.stderr.splitlines()[-1] == (
        f"tempmail: metrics.port: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in result.stderr
    assert not (short_dir / "s.sock").exists()


def test_an_import_failure_after_the_switch_names_the_user() -> None:
    group = BaseExceptionGroup("unhandled", [ModuleNotFoundError("No module named 'x'", name="x")])
    error = service._one_error(group, "tempmail")
    assert isinstance(error, ConfigError)
    assert str(error) == (
        "server.user: after switching to 'tempmail' the server cannot import x (No module "
        "named 'x'); install tempmail where that user can read it, e.g. 'python3 -m venv "
        "/opt/tempmail'"
    )


def test_tempmail_errors_in_nested_groups_come_out_as_they_are() -> None:
    inner = ServerError("metrics.port: cannot listen on 127.0.0.1:1: Permission denied")
    group = BaseExceptionGroup("outer", [BaseExceptionGroup("inner", [inner])])
    assert service._one_error(group, None) is inner


def test_anything_else_is_an_internal_error_of_one_line() -> None:
    error = service._one_error(BaseExceptionGroup("g", [ZeroDivisionError("boom")]), None)
    assert isinstance(error, service.InternalError)
    assert error.exit_code == 70
    assert str(error) == (
        "the server stopped on an unexpected error: ZeroDivisionError: boom (a bug: please "
        "report it; --log-level debug shows where)"
    )


# --- can Postfix reach the socket? -----------------------------------------------------------


@pytest.fixture
def reachable_dir(service_user: pwd.struct_passwd) -> Iterator[Path]:
    """A socket directory under /tmp that the stand-in for Postfix may enter."""
    path = Path(tempfile.mkdtemp(prefix="tm-pf-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def bound(directory: Path, **socket_settings: object) -> listeners.Bound:
    from tempmail import config  # noqa: PLC0415

    return listeners.bind(
        config.SocketSettings(path=directory / "socket", **socket_settings)  # type: ignore[arg-type]
    )


def test_a_socket_of_another_group_is_reported_with_the_fix(
    service_user: pwd.struct_passwd, reachable_dir: Path
) -> None:
    name = service_user.pw_name
    socket_path = reachable_dir / "socket"
    with_root_group = bound(reachable_dir, mode=0o660)
    try:
        assert listeners.postfix_access_problem(socket_path, name) == (
            f"{name} may not write to {socket_path} (mode 0660, owner root:root); set "
            f'[socket] group = "{name}" and mode = "0660"'
        )
    finally:
        with_root_group.close()
    with_its_group = bound(reachable_dir, mode=0o660, group=name)
    try:
        assert listeners.postfix_access_problem(socket_path, name) is None
    finally:
        with_its_group.close()


def test_a_directory_postfix_cannot_enter_is_reported_with_the_fix(
    service_user: pwd.struct_passwd, reachable_dir: Path
) -> None:
    name = service_user.pw_name
    private = reachable_dir / "private"
    private.mkdir(mode=0o700)
    socket_ = bound(private, mode=0o666)
    try:
        assert listeners.postfix_access_problem(private / "socket", name) == (
            f"{name} may not enter {private} (mode 0700, owner root:root); e.g. 'chgrp {name} "
            f"{private} && chmod g+x {private}'"
        )
    finally:
        socket_.close()


def test_serve_warns_when_postfix_could_not_connect(short_dir: Path) -> None:
    """The README's `postmap -q` check passes as root while Postfix gets 451: warn at start."""
    require_tool("postmap", "postfix")  # Debian's package creates the user postfix
    short_dir.chmod(0o755)
    data = config_data()
    data["server"] = {"user": current_user()}
    data["socket"] = {"path": str(short_dir / "s.sock"), "mode": "0660"}
    config = write_config(short_dir / "c.toml", data)
    with ServerProcess(config) as server:
        warning = server.wait_for("Postfix cannot connect.*").string
    assert warning.split(" WARNING tempmail.service: ")[1] == (
        f"Postfix cannot connect to the socket: postfix may not write to {short_dir}/s.sock "
        f'(mode 0660, owner {current_user()}:root); set [socket] group = "postfix" and mode '
        '= "0660"\n'
    )


def test_a_publish_directory_that_does_not_exist_stops_the_start_in_one_line(
    short_dir: Path,
) -> None:
    """The website's file is part of the configuration: a wrong path is said at once."""
    data = config_data()
    data["server"] = {"user": current_user()}
    data["socket"] = {"path": str(short_dir / "s.sock")}
    data["publish"] = {"file": str(short_dir / "missing" / "address.txt")}
    result = serve(write_config(short_dir / "c.toml", data))
    assert result.returncode == 71
    assert result.stderr.splitlines()[-1] == (
        f"tempmail: publish.file: cannot open the directory {short_dir}/missing: No such file "
        "or directory; create it, writable by the server's user, or change publish.file"
    )
    assert not (short_dir / "s.sock").exists()


def test_no_second_timestamp_when_stderr_is_the_journal(short_dir: Path) -> None:
    """systemd stamps journal lines itself; $JOURNAL_STREAM (checked against stderr) says so."""
    data = config_data()
    data["server"] = {"user": current_user()}
    data["socket"] = {"path": str(short_dir / "s.sock")}
    config = write_config(short_dir / "c.toml", data)
    lines = {}
    for journal in (False, True):
        read, write = os.pipe()
        info = os.fstat(write)
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        if journal:
            env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
        process = subprocess.Popen(
            [sys.executable, "-m", "tempmail", "-c", str(config), "serve"], stderr=write, env=env
        )
        os.close(write)
        with os.fdopen(read) as stderr:
            while "listening on" not in (line := stderr.readline()):
                assert line, "the server exited before listening"
            lines[journal] = line
            process.terminate()
            assert process.wait(10) == 0
            stderr.read()
    assert lines[True] == f"INFO tempmail.server: listening on unix:{short_dir}/s.sock\n"
    assert lines[False].endswith(f"Z {lines[True]}")
