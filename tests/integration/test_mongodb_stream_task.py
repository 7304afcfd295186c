"""MongoDB point in time as the operator runs it, against a real FerretDB: the streamer
Deployment's `safehold run-task` (kind stream) archives the oplog and serves its status
(position, archived segment, recoverable window), and the Restore's task restores to a time
between two writes from the full and that archive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safehold.api.task import (
    RestoreTask,
    StreamTask,
    TaskDatabase,
    TaskEncryption,
    TaskRecovery,
    TaskRepository,
    task_to_json,
)
from safehold.cli.errors import Exit
from tests.infra.ferretdb import FerretDB
from tests.infra.procs import free_port
from tests.integration.test_binlog_status import stop, wait_status
from tests.integration.test_mongodb_oplog import DB, backup, client, env, server, state, url

__all__ = ["client", "env", "server"]  # fixtures shared with test_mongodb_oplog


def _run_task(task: Any, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "safehold.cli", "run-task", "--result-file",
         str(tmp_path / f"{task.kind}.json")],
        env={**os.environ, "SAFEHOLD_TASK": task_to_json(task),
             "SAFEHOLD_CONFIG": env["SAFEHOLD_CONFIG"]},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_the_streamer_task_archives_the_oplog_and_a_restore_task_reaches_a_time(
        server: FerretDB, client: Any, tmp_path: Path, env: dict[str, str]) -> None:
    repo_dir = tmp_path / "repo"
    repo = repo_dir.as_uri()
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "k1").write_text(Path(env["SAFEHOLD_KEY_FILE"]).read_text())
    encryption = TaskEncryption(mode="keys", key_dir=str(keys))
    t = client[DB].t
    t.insert_many([{"_id": i, "batch": "w0"} for i in range(1, 11)])
    backup(server, repo, env, "full")
    port = free_port()
    stream = StreamTask(
        repository=TaskRepository(url=repo), target=DB,
        database=TaskDatabase(engine="mongodb", url=url(server, DB)), encryption=encryption,
        status_port=port, status_address="127.0.0.1", poll=0.1)
    proc = _run_task(stream, tmp_path, env)
    try:
        wait_status(port, "healthy", lambda s: s.health == "ok")
        t.insert_many([{"_id": i, "batch": "w1"} for i in range(11, 21)])
        time.sleep(1.2)  # oplog times are whole seconds: a clear second either side
        mark = datetime.now(UTC)
        expected = state(client, DB)
        time.sleep(1.2)
        t.insert_many([{"_id": i, "batch": "w2"} for i in range(21, 31)])
        s = wait_status(port, "w2 archived, the window past the mark",
                        lambda s: s.window.end is not None and s.window.end > mark)
        assert (s.engine, s.target) == ("mongodb", DB) and s.last_segment
        assert s.window.start is not None and s.window.start < mark
        assert s.position.get("set") == "rs0" and s.segments_archived >= 1
        out = stop(proc)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == int(Exit.TERMINATED), out

    into = "restored"
    restore = RestoreTask(
        repository=TaskRepository(url=repo), source=DB, encryption=encryption,
        database=TaskDatabase(engine="mongodb", url=url(server, into)),
        recovery=TaskRecovery(time=mark))
    proc = _run_task(restore, tmp_path, env)
    out = proc.communicate(timeout=300)[0].decode()
    result = json.loads((tmp_path / "restore.json").read_text())
    assert proc.returncode == 0 and result["phase"] == "Completed", (out, result)
    assert state(client, into) == expected  # w0 and w1, not w2
    assert len(expected["t"]) == 20
