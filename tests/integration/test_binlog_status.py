"""`safehold binlog stream --status-port`: the status endpoint of a real streamer archiving a
real MariaDB 10.11's binary log (position, lag, last segment, window, health)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from safehold.api.streamer import StreamerStatus
from safehold.cli.errors import Exit
from tests.infra import mariadb
from tests.infra.procs import free_port, serve, unavailable
from tests.integration.test_mysql_binlog import backup, segments, url, wait_for, write


@pytest.fixture(scope="module")
def server() -> Iterator[mariadb.MariaDB]:
    if mariadb.server_binary() is None:
        unavailable("MariaDB", "mariadbd not installed")
    yield from serve(mariadb.MariaDB(), "MariaDB")


@pytest.fixture
def env(tmp_path: Path, server: mariadb.MariaDB) -> dict[str, str]:
    cfg = tmp_path / "safehold.yaml"
    cfg.write_text("{}\n")
    key = tmp_path / "key"
    key.write_text("a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=\n")
    return {"SAFEHOLD_CONFIG": str(cfg), "SAFEHOLD_KEY_FILE": str(key), "SAFEHOLD_KEY": "",
            "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_PASSWORD": server.password, "MYSQL_PWD": ""}


@pytest.fixture
def db(server: mariadb.MariaDB) -> Iterator[str]:
    name = f"st_{os.urandom(4).hex()}"
    server.sql(f"CREATE DATABASE {name}; CREATE TABLE {name}.t (id INT PRIMARY KEY,"
               " batch VARCHAR(20), v INT)")
    yield name
    server.sql(f"DROP DATABASE IF EXISTS {name}")


def start(target_url: str, repo: str, db: str, env: dict[str, str], spool: Path, port: int,
          *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "safehold.cli", "binlog", "stream", "-t", target_url, "-r", repo,
         "--name", db, "--poll", "0.1", "--spool", str(spool), "--status-port", str(port),
         *extra], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def status(port: int) -> StreamerStatus | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
            return StreamerStatus.model_validate(json.loads(r.read()))
    except (urllib.error.URLError, ConnectionError):
        return None  # not listening yet


def wait_status(port: int, what: str, check: Any) -> StreamerStatus:
    seen: list[StreamerStatus] = []

    def look() -> bool:
        s = status(port)
        if s is not None and check(s):
            seen.append(s)
            return True
        return False

    wait_for(what, look)
    return seen[0]


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)[0].decode()
    finally:
        proc.kill()


def test_status_shows_position_lag_segment_and_window(
        server: mariadb.MariaDB, db: str, tmp_path: Path, env: dict[str, str]) -> None:
    repo_dir = tmp_path / "repo"
    repo, port = repo_dir.as_uri(), free_port()
    write(server, db, "w0", range(1, 51))
    full = backup(server, db, repo, env, "full")
    full_end = datetime.fromisoformat(full["end_position"]["time"])
    first = server.sql("SHOW MASTER STATUS").split()[0]
    proc = start(url(server, db), repo, db, env, tmp_path / "spool", port)
    try:
        s = wait_status(port, "the streamer healthy", lambda s: s.health == "ok")
        assert (s.engine, s.target, s.error) == ("mysql", db, None)
        assert s.window.start == full_end  # a window from the full alone
        write(server, db, "a", range(101, 111))
        server.sql("FLUSH BINARY LOGS")
        wait_for("the first file archived", lambda: first in segments(repo_dir, db))
        s = wait_status(port, "the archived file in the status",
                        lambda s: s.last_segment == first and s.lag_bytes is not None)
        assert s.archived_position["binlog_file"] == first
        assert s.segments_archived >= 1 and s.last_segment_time is not None
        assert s.window.start == full_end
        assert s.window.end is not None and s.window.end >= full_end
        current = server.sql("SHOW MASTER STATUS").split()
        assert s.position["binlog_file"] in {first, current[0]}
        # nothing committed since the flush: the archive is complete
        assert s.lag_seconds == 0.0
        assert 0 < s.lag_bytes <= int(current[1])  # type: ignore[operator]
        write(server, db, "b", range(201, 211))  # committed, not yet archived
        s = wait_status(port, "the lag to count the new rows",
                        lambda s: s.lag_bytes is not None and s.lag_bytes > int(current[1])
                        and s.archived_position.get("binlog_file") == first)
        assert s.lag_seconds is not None and s.lag_seconds >= 0  # the archive ends before them
        out = stop(proc)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == int(Exit.TERMINATED), out


def test_errors_are_reported_with_their_class_and_the_streamer_keeps_trying(
        server: mariadb.MariaDB, db: str, tmp_path: Path, env: dict[str, str]) -> None:
    repo, port = (tmp_path / "repo").as_uri(), free_port()
    bad = {**env, "SAFEHOLD_PASSWORD": "not-the-password"}
    proc = start(url(server, db), repo, db, bad, tmp_path / "spool", port, "--retry-after", "0.2")
    try:
        s = wait_status(port, "the error", lambda s: s.health == "error")
        assert s.error is not None and s.error.error_class == "AuthenticationFailed", s
        assert "password" in s.error.message, s.error.message
        assert server.password not in s.model_dump_json()
        with pytest.raises(urllib.error.HTTPError) as health:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.value.code == 503
        assert proc.poll() is None  # still running, still retrying
        out = stop(proc)
    finally:
        proc.kill()
        proc.wait()
    assert "retrying" in out, out


def test_a_port_in_use_ends_the_command_with_a_usage_error(
        server: mariadb.MariaDB, db: str, tmp_path: Path, env: dict[str, str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = start(url(server, db), (tmp_path / "repo").as_uri(), db, env, tmp_path / "spool",
                     taken.getsockname()[1])
        out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == int(Exit.USAGE), out
    assert "--status-port" in out


def test_run_task_streams_as_the_operators_deployment_does(
        server: mariadb.MariaDB, db: str, tmp_path: Path, env: dict[str, str]) -> None:
    """The Deployment's command: `safehold run-task` with a stream task naming mounted files."""
    from safehold.api.task import (
        SecretInput,
        StreamTask,
        TaskDatabase,
        TaskEncryption,
        TaskRepository,
        task_to_json,
    )

    repo_dir = tmp_path / "repo"
    write(server, db, "w0", range(1, 11))
    backup(server, db, repo_dir.as_uri(), env, "full")
    (tmp_path / "password").write_text(server.password + "\n")
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "k1").write_text(Path(env["SAFEHOLD_KEY_FILE"]).read_text())
    port = free_port()
    task = StreamTask(
        repository=TaskRepository(url=repo_dir.as_uri()), target=db,
        database=TaskDatabase(engine="mysql", url=url(server, db),
                              password_from=SecretInput(file=str(tmp_path / "password"))),
        encryption=TaskEncryption(mode="keys", key_dir=str(keys)), status_port=port,
        status_address="127.0.0.1", spool=str(tmp_path / "spool"), poll=0.1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "safehold.cli", "run-task", "--result-file",
         str(tmp_path / "result.json")],
        env={**os.environ, "SAFEHOLD_TASK": task_to_json(task), "SAFEHOLD_CONFIG":
             env["SAFEHOLD_CONFIG"]}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        first = server.sql("SHOW MASTER STATUS").split()[0]
        wait_status(port, "healthy", lambda s: s.health == "ok")
        write(server, db, "a", range(11, 21))
        server.sql("FLUSH BINARY LOGS")
        s = wait_status(port, "the file archived", lambda s: s.last_segment == first)
        assert (s.engine, s.target) == ("mysql", db)
        assert s.window.start is not None and s.window.end is not None
        assert first in segments(repo_dir, db)
        out = stop(proc)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == int(Exit.TERMINATED), out
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["kind"], result["error"]["errorClass"]) == ("stream", "Terminated"), result
