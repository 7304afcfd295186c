"""safehold.api.task and .result: the Job's task JSON and the 4 KiB termination message."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from safehold.api.common import ErrorInfo
from safehold.api.result import TERMINATION_MESSAGE_LIMIT, TaskResult
from safehold.api.task import BackupTask, CheckTask, RestoreTask, parse_task, task_to_json

DB = {"engine": "postgresql", "url": "postgresql://backup@orders-db.shop.svc:5432/orders",
      "passwordFrom": {"env": "SAFEHOLD_PASSWORD"},
      "tls": {"mode": "verify-full", "caFile": "/var/run/safehold/tls/ca.crt"}}
REPO = {"url": "s3://backups/prod?endpoint=http://minio:9000"}
KEYS = {"mode": "keys", "keyDir": "/var/run/safehold/keys"}


def task(**body: Any) -> str:
    return json.dumps(body)


def test_every_kind_parses_by_its_discriminator() -> None:
    backup = parse_task(task(kind="backup", target="shop.orders", database=DB, repository=REPO,
                             encryption=KEYS, type="full", backupId="20261202T120000.123456Z"))
    assert isinstance(backup, BackupTask) and backup.database.password_from is not None
    assert backup.chunk_size == 4 * 2**20 and backup.compression == "zstd:3"
    restore = parse_task(task(kind="restore", source="shop.orders", database=DB,
                              repository=REPO, encryption={"mode": "none"}, include=["t"]))
    assert isinstance(restore, RestoreTask) and restore.backup_id == "latest"
    assert restore.conflict_policy == "fail"
    check = parse_task(task(kind="check", database=DB))
    assert isinstance(check, CheckTask) and check.repository is None
    for kind, extra in [("delete", {"target": "t", "backupIds": ["20261202T120000.000000Z"]}),
                        ("rewrap", {"encryption": KEYS}),
                        ("verify", {"encryption": KEYS, "target": "t"})]:
        assert parse_task(task(kind=kind, repository=REPO, **extra)).kind == kind


def test_task_round_trips_through_json() -> None:
    original = parse_task(task(kind="backup", target="shop.orders", database=DB,
                               repository=REPO, encryption=KEYS, type="incremental"))
    text = task_to_json(original)
    assert '"passwordFrom"' in text and "password_from" not in text
    assert parse_task(text) == original


@pytest.mark.parametrize(("body", "words"), [
    ({"kind": "backup", "target": "t", "repository": REPO, "encryption": KEYS,
      "database": {**DB, "url": "postgresql://backup:hunter2@db/orders"}},
     ["never hold secrets"]),
    ({"kind": "backup", "target": "t", "database": DB, "encryption": KEYS,
      "repository": {"url": "s3://AKIA:secret@bucket/p"}}, ["never hold secrets"]),
    ({"kind": "backup", "target": "t", "repository": REPO, "encryption": KEYS,
      "database": {**DB, "passwordFrom": {"env": "A", "file": "/p"}}}, ["exactly one of env"]),
    ({"kind": "backup", "target": "t", "repository": REPO, "encryption": KEYS,
      "database": {"engine": "postgresql"}}, ["exactly one of url or urlFrom"]),
    ({"kind": "backup", "target": "t", "repository": REPO, "database": DB,
      "encryption": {"mode": "keys"}}, ["needs keyDir"]),
    ({"kind": "backup", "target": "t", "repository": REPO, "database": DB,
      "encryption": KEYS, "type": "incremental", "include": ["a"]}, ["only valid for full"]),
    ({"kind": "backup", "target": "t", "repository": REPO, "database": DB,
      "encryption": KEYS, "backupId": "latest"}, ["not 'latest'"]),
    ({"kind": "delete", "target": "t", "repository": REPO, "backupIds": []}, ["backupIds"]),
    ({"kind": "rewrap", "repository": REPO, "encryption": {"mode": "none"}}, ["mode keys"]),
    ({"kind": "format-disk", "repository": REPO}, ["kind"]),
    ({"kind": "backup", "target": "../etc", "repository": REPO, "database": DB,
      "encryption": KEYS}, ["target"]),
])
def test_bad_tasks_are_refused_with_the_reason(body: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValidationError) as err:
        parse_task(json.dumps(body))
    for word in words:
        assert word in str(err.value)


# --------------------------------------------------------------------------- result


def size(text: str) -> int:
    return len(text.encode())


def test_a_normal_result_is_kept_whole() -> None:
    r = TaskResult(kind="backup", phase="Completed", backup_id="20261202T120000Z",
                   chain=["20261201T120000Z", "20261202T120000Z"], raw_bytes=10, stored_bytes=3,
                   stage_seconds={"backup": 1.5}, end_position={"lsn": "0/1"})
    text = r.to_termination_message()
    assert not r.truncated and "truncated" not in text
    assert TaskResult.from_termination_message(text) == r
    assert json.loads(text)["backupId"] == "20261202T120000Z"


@pytest.mark.parametrize("scale", [1, 10, 100])
def test_termination_message_always_fits_4k(scale: int) -> None:
    huge = "ü€" * 700 * scale  # multi-byte characters: the limit is bytes, not characters
    r = TaskResult.failure(
        "check",
        ErrorInfo(error_class="DatabaseProblem", message=huge, exit_code=6, hint=huge),
        problems=[huge] * 50, notes=[huge] * 20, failures=[huge] * 30,
        chain=[f"2026120{i % 10}T1200{i % 60:02d}Z" for i in range(40 * scale)],
        start_position={f"k{i}": huge for i in range(20)}, location=huge, server_version=huge,
        stage_seconds={f"stage-{i}": 1.0 for i in range(100 * scale)},
    )
    text = r.to_termination_message()
    assert size(text) <= TERMINATION_MESSAGE_LIMIT
    back = TaskResult.from_termination_message(text)
    assert back.truncated and back.phase == "Failed" and back.exit_code == 6
    assert back.error is not None and back.error.error_class == "DatabaseProblem"
    assert back.error.message.startswith("ü€ü€") and back.error.message.endswith("…")


def test_pathological_result_falls_back_to_the_minimum() -> None:
    # so many distinct keys that even clipped lists do not fit: only the essentials remain
    r = TaskResult.failure("backup", ErrorInfo(error_class="E" * 10_000, message="m" * 10_000,
                                               exit_code=7),
                           backup_id="20261202T120000Z",
                           stage_seconds={f"{i:0>60}": float(i) for i in range(10_000)})
    text = r.to_termination_message(limit=600)
    assert size(text) <= 600
    back = TaskResult.from_termination_message(text)
    assert back.truncated and back.backup_id == "20261202T120000Z" and back.exit_code == 7


def test_from_termination_message_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        TaskResult.from_termination_message("Error: container killed (OOMKilled)")
    with pytest.raises(ValueError):
        TaskResult.from_termination_message('{"kind": "backup"}')
