"""`safehold run-task` rewrap as the operator runs it after a key Secret change: retiring a key
too early fails the re-wrap before anything is written (what docs/operator.md promises)."""

from __future__ import annotations

from pathlib import Path

from safehold.api.errors import Exit
from tests.integration.cli_helpers import make_db
from tests.integration.test_run_task import Runner, key_dir, key_id, local_backup


def test_a_rewrap_without_a_key_some_backup_needs_fails_and_changes_nothing(
        tmp_path: Path) -> None:
    runner = Runner(tmp_path, {})
    db, repo = tmp_path / "app.db", tmp_path / "repo"
    make_db(db, rows=100)
    keys = key_dir(tmp_path / "keys", "key-a")
    old = local_backup(runner, repo, db, "full", keys)
    record = repo / "app" / str(old.backup_id) / "keys.json"
    before = record.read_bytes()
    # key-a removed before any re-wrap: only key-b in the Secret
    (keys / "key-a").unlink()
    key_dir(keys, "key-b", active="key-b")
    task = {"kind": "rewrap", "repository": {"url": repo.as_uri()},
            "encryption": {"mode": "keys", "keyDir": str(keys)}}
    failed, _ = runner(task, code=Exit.KEY)
    assert failed.error is not None and failed.error.exit_code == Exit.KEY
    assert key_id(tmp_path / "keys" / "key-b") not in record.read_text()
    assert record.read_bytes() == before  # nothing written
