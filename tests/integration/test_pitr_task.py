"""`safehold run-task` restore tasks with a recovery target (what the operator's Restore with
source.pointInTime runs) against a real MariaDB 10.11: the plan, the restore to a time between
two writes matching exactly, and a point outside the window refused with its class."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from safehold.api.task import (
    RestoreTask,
    SecretInput,
    TaskDatabase,
    TaskEncryption,
    TaskRecovery,
    TaskRepository,
    task_to_json,
)
from tests.infra import mariadb
from tests.infra.procs import serve, unavailable
from tests.integration.test_mysql_binlog import backup, mark, rows, url, write


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


def run_task(task: RestoreTask, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    result = tmp_path / f"result-{uuid.uuid4().hex[:6]}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "safehold.cli", "run-task", "--result-file", str(result)],
        env={**os.environ, "SAFEHOLD_TASK": task_to_json(task)}, capture_output=True, text=True,
        timeout=300, check=False)
    return proc.returncode, json.loads(result.read_text())


def test_restore_task_to_a_time_between_two_writes(
        server: mariadb.MariaDB, tmp_path: Path, env: dict[str, str]) -> None:
    db = f"pt_{uuid.uuid4().hex[:8]}"
    server.sql(f"CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY,"
               " batch VARCHAR(20), v INT)")
    repo_dir = tmp_path / "repo"
    repo = repo_dir.as_uri()
    write(server, db, "w0", range(1, 11))
    backup(server, db, repo, env, "full")
    marks: list[tuple[str, list[str]]] = []
    write(server, db, "w1", range(11, 21))
    mark(server, db, marks)  # between the two writes
    write(server, db, "w2", range(21, 31))
    backup(server, db, repo, env, "incremental")  # carries the log past the mark
    (tmp_path / "password").write_text(server.password)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "k1").write_text(Path(env["SAFEHOLD_KEY_FILE"]).read_text())
    into = f"pi_{uuid.uuid4().hex[:6]}"

    def task(when: str, plan_only: bool = False) -> RestoreTask:
        return RestoreTask(
            repository=TaskRepository(url=repo), source=db,
            database=TaskDatabase(engine="mysql", url=url(server, into),
                                  password_from=SecretInput(file=str(tmp_path / "password"))),
            encryption=TaskEncryption(mode="keys", key_dir=str(keys)), plan_only=plan_only,
            recovery=TaskRecovery(time=datetime.fromisoformat(when.replace("Z", "+00:00"))))

    try:
        code, plan = run_task(task(marks[0][0], plan_only=True), tmp_path)
        assert code == 0, plan
        # the full (the incremental ends after the mark: only its log is replayed)
        assert plan["planOnly"] and len(plan["chain"]) == 1, plan
        assert plan["notes"] == [f"1 log piece(s) replayed to time {marks[0][0][:19]}"
                                 f"{marks[0][0][19:26]}+00:00"], plan
        assert plan["restoredTo"].startswith(marks[0][0][:19])
        code, done = run_task(task(marks[0][0]), tmp_path)
        assert code == 0, done
        assert rows(server, into) == marks[0][1]  # w0 and w1, not w2
        assert any("replayed to time" in n for n in done.get("notes", [])), done

        code, refused = run_task(task("2020-01-01T00:00:00Z"), tmp_path)
        assert code == 2, refused
        assert refused["error"]["errorClass"] == "OutsideWindow"
        assert "recoverable window" in refused["error"]["message"]
    finally:
        server.sql(f"DROP DATABASE IF EXISTS {db}; DROP DATABASE IF EXISTS {into}")
