"""`safehold run-task` list: a target's backups page by page, for adoption by the operator.

Run for real as a child process (task in SAFEHOLD_TASK, keys in a mounted-style directory);
paging is shown both through the runner (its 4 KiB termination message) and in-process with a
small page, so a long repository needs many pages and every backup is reported exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safehold.api import result as result_module
from safehold.api.errors import Exit
from safehold.api.task import parse_task
from safehold.pipeline import tasks
from tests.integration.cli_helpers import make_db
from tests.integration.test_run_task import Runner, key_dir, local_backup


def _list(repo: Path, keys: Path, after: str | None = None) -> dict[str, object]:
    task: dict[str, object] = {"kind": "list", "target": "app",
                               "repository": {"url": repo.as_uri()},
                               "encryption": {"mode": "keys", "keyDir": str(keys)}}
    if after:
        task["after"] = after
    return task


def test_list_reports_every_backup_with_type_and_parent_and_pages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = Runner(tmp_path, {})
    db, repo = tmp_path / "app.db", tmp_path / "repo"
    make_db(db, rows=200)
    keys = key_dir(tmp_path / "keys", "k1")
    made = [local_backup(runner, repo, db, t, keys)
            for t in ("full", "incremental", "differential", "full", "incremental")]
    listed, _ = runner(_list(repo, keys))
    assert not listed.more
    assert [(b.id, b.type, b.parent) for b in listed.backups] == [
        (m.backup_id, m.type, m.parent_id) for m in made]
    assert all(b.size and b.size > 0 for b in listed.backups)
    tail, _ = runner(_list(repo, keys, after=made[2].backup_id))
    assert [b.id for b in tail.backups] == [m.backup_id for m in made[3:]]

    # a page of ~2 entries: four pages, each backup exactly once, oldest first
    monkeypatch.setattr(result_module, "LIST_PAGE_BYTES", 200)
    monkeypatch.setattr(tasks, "LIST_PAGE_BYTES", 200)
    seen, after, pages = [], None, 0
    while True:
        page = tasks.execute(parse_task(json.dumps(_list(repo, keys, after))))
        pages += 1
        seen += [b.id for b in page.backups]
        assert len(page.to_termination_message()) <= result_module.TERMINATION_MESSAGE_LIMIT
        if not page.more:
            break
        after = page.backups[-1].id
    assert seen == [m.backup_id for m in made] and pages >= 3


def test_list_with_the_wrong_key_fails_naming_the_key(tmp_path: Path) -> None:
    runner = Runner(tmp_path, {})
    db, repo = tmp_path / "app.db", tmp_path / "repo"
    make_db(db, rows=50)
    local_backup(runner, repo, db, "full", key_dir(tmp_path / "keys", "k1"))
    failed, _ = runner(_list(repo, key_dir(tmp_path / "other", "k9")), code=Exit.KEY)
    assert failed.error is not None and failed.error.exit_code == Exit.KEY
    assert "key" in failed.error.message
    assert not failed.backups
    # a target with no backups here (a new BackupTarget's adoption): an empty list, not a
    # failed pod, the note naming the targets there are
    missing, _ = runner({**_list(repo, tmp_path / "keys"), "target": "nope"}, code=Exit.OK)
    assert missing.ok and missing.backups == [] and not missing.more
    assert "'nope' has no backups" in missing.notes[0] and "app" in missing.notes[0]
