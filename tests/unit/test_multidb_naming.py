"""Several databases in one target: repository names, the manifest's database field (bound by
the MAC, absent when unset), selection rules and the PartiallyFailed status transition."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from safehold.api import databases as dbnames
from safehold.api.backup import Backup, BackupStatus
from safehold.api.common import ErrorInfo
from safehold.api.errors import UsageError
from safehold.api.manifest import Manifest
from safehold.api.restore import Restore
from safehold.api.result import DatabaseResult, TaskResult
from safehold.api.target import BackupTarget, BackupTargetSpec
from safehold.api.task import BackupTask, RestoreTask, parse_task
from safehold.cli import multidb
from safehold.codecs import crypto
from safehold.controller.builders import tasks
from safehold.controller.settings import Settings
from safehold.engines.servers import database_url
from safehold.repository import layout
from tests.unit.controller import samples


def test_database_keys_never_collide_with_plain_names_or_each_other() -> None:
    assert dbnames.database_key("prod", "orders") == "prod@orders"
    assert dbnames.globals_key("prod") == "prod@~globals"
    odd = dbnames.database_key("prod", "my db/ü")
    assert odd.startswith("prod@my_db__~") and layout.is_target_name(odd)
    assert odd != dbnames.database_key("prod", "my db/u")  # same sanitized form, other hash
    assert dbnames.database_key("prod", "-x").startswith("prod@-x~")  # not a plain name
    for name in ("prod@orders", "prod@~globals", odd):
        assert layout.is_target_name(name) and dbnames.split_key(name)[0] == "prod"
    for bad in ("prod@", "@orders", "prod@a@b", "prod@a/b", "prod@~other"):
        assert not layout.is_target_name(bad), bad
    assert dbnames.run_status(3, 0) == "success"
    assert dbnames.run_status(2, 1) == "partial"
    assert dbnames.run_status(0, 2) == "failure"


def _manifest(**kw: object) -> Manifest:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    return Manifest(backup_id="20261202T000000.000000Z", target="prod@orders", engine="mysql",
                    type="full", chain_id="20261202T000000.000000Z", started_at=now,
                    finished_at=now, compression="zstd:3", chunk_size=4096, **kw)


def test_the_database_field_is_bound_by_the_mac_and_absent_when_unset() -> None:
    plain = _manifest()
    assert b'"database"' not in plain.to_json() and b'"database"' not in plain.signing_bytes()
    named = _manifest(database="orders")
    key = b"k" * 32
    mac = crypto.manifest_mac(key, named.signing_bytes())
    relabelled = named.model_copy(update={"database": "users"})
    assert crypto.manifest_mac(key, relabelled.signing_bytes()) != mac
    assert Manifest.from_json(named.to_json()).database == "orders"


def test_database_url_keeps_login_and_options() -> None:
    assert database_url("postgresql://u@h:5432/postgres?sslmode=require&dbname=x", "a/b") \
        == "postgresql://u@h:5432/?sslmode=require&dbname=a%2Fb"
    assert database_url("mariadb://u@h:3306/mysql", "shop") == "mariadb://u@h:3306/shop"
    # a MongoDB user keeps logging in where the URL said
    assert database_url("mongodb://u@h/admin?tls=true", "app") == \
        "mongodb://u@h/app?tls=true&authSource=admin"
    assert database_url("mongodb://h/?directConnection=true", "app") == \
        "mongodb://h/app?directConnection=true"


def test_selection_refuses_what_makes_no_sense() -> None:
    url = "postgresql://u@h/postgres"
    assert multidb.selection(None, False, None, None, None, url) is None
    assert multidb.selection("a, b", False, None, None, None, url) == \
        multidb.Selection(("a", "b"), False)
    assert multidb.selection(None, True, None, None, None, url) == multidb.Selection(None, True)
    assert multidb.selection(None, True, None, None, None, "mongodb://h/a") == \
        multidb.Selection(None, False)
    for args, words in [(("a", True, None), "exclude each other"), ((",", False, None),
                        "names no database"), ((None, False, True), "--globals needs"),
                        (("a,a", False, None), "twice")]:
        with pytest.raises(UsageError, match=words):
            multidb.selection(*args, None, None, url)
    with pytest.raises(Exception, match="one database"):
        multidb.selection("a", False, None, None, None, "sqlite:///x.db")
    with pytest.raises(UsageError, match="MongoDB users"):
        multidb.selection(None, True, True, None, None, "mongodb://h/a")


def test_api_models_validate_the_selection() -> None:
    spec = dict(samples.PG_TARGET_SPEC, databases={"names": ["a"], "all": True})
    with pytest.raises(ValidationError, match="exactly one of names"):
        BackupTargetSpec.model_validate(spec)
    with pytest.raises(ValidationError, match="include names tables"):
        BackupTask.model_validate({
            "target": "t", "repository": {"url": "file:///r"}, "encryption": {"mode": "none"},
            "database": {"engine": "mysql", "url": "mysql://u@h/db"}, "databases": ["a"],
            "include": ["x"]})
    restore = {"source": "t@a", "backupId": "latest", "repository": {"url": "file:///r"},
               "encryption": {"mode": "none"},
               "database": {"engine": "mysql", "url": "mysql://u@h/db"}}
    assert RestoreTask.model_validate(restore).source == "t@a"
    with pytest.raises(ValidationError):
        RestoreTask.model_validate({**restore, "source": "t@a/b"})


def test_partially_failed_status_names_each_failure() -> None:
    result = TaskResult(
        kind="backup", phase="PartiallyFailed", exit_code=12, backup_id="b1",
        error=ErrorInfo(error_class="PartialFailure", message="1 of 2 failed", exit_code=12),
        databases=[DatabaseResult(database="a", target="t@a", phase="Completed",
                                  stored_bytes=2048, raw_bytes=4096),
                   DatabaseResult(database="b", target="t@b", phase="Failed",
                                  error_class="DatabaseMissing", message="gone")])
    status = BackupStatus().partially_failed(result, 1)
    assert status.phase == "PartiallyFailed" and status.finished
    assert status.size == "2.0 KiB" and status.databases == result.databases
    cond = status.conditions[0]
    assert (cond.status, cond.reason) == ("False", "PartiallyFailed")
    assert cond.message == "1 of 2 backed up; failed: b (gone)"
    assert len(result.to_termination_message(600)) <= 600


def _task_of(job: dict[str, Any]) -> Any:
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return parse_task(next(e["value"] for e in env if e["name"] == "SAFEHOLD_TASK"))


def test_builders_carry_the_databases_to_backup_restore_and_delete_jobs() -> None:
    settings = Settings(runner_image="safehold/runner:test")
    spec = dict(samples.PG_TARGET_SPEC, databases={"all": True})
    target = BackupTarget.model_validate(samples.target(spec=spec))
    body = samples.backup()
    body["status"] = {"phase": "PartiallyFailed", "backupId": "20261202T000000.000000Z",
                      "databases": [{"database": "a", "target": "orders@a", "phase": "Completed"},
                                    {"target": "orders@~globals", "phase": "Failed"}]}
    bk = Backup.model_validate(body)
    backup = _task_of(tasks.backup_job(bk, target, "20261202T000000.000000Z", "j", settings))
    assert backup.all_databases and backup.globals and backup.databases is None
    delete = _task_of(tasks.delete_job(bk, target, "20261202T000000.000000Z", "d", settings))
    assert delete.databases == ["orders@a", "orders@~globals"]
    rs = Restore.model_validate(samples.restore(
        source={"backupRef": {"name": "orders-20261202"}, "database": "a"}))
    restore = _task_of(tasks.restore_job(rs, target, None, "20261202T000000.000000Z", "r",
                                         settings))
    assert restore.source == "orders@a"
    mongo = BackupTarget.model_validate(samples.target(spec=dict(
        samples.PG_TARGET_SPEC, engine="mongodb", databases={"all": True})))
    assert not _task_of(tasks.backup_job(bk, mongo, "20261202T000000.000000Z", "j",
                                         settings)).globals


def test_a_partially_failed_backup_is_finished_for_schedules_and_deletable() -> None:
    from safehold.controller.logic import deletion, schedules

    body = samples.backup()
    body["spec"]["deletionPolicy"] = "Delete"
    body["status"] = {"phase": "PartiallyFailed", "backupId": "20261202T000000.000000Z"}
    assert schedules.finished(body)
    decision = deletion.decide(body, [], namespace_terminating=False)
    assert decision.action is not deletion.Action.RELEASE, decision


def test_hundreds_of_databases_fit_the_termination_message() -> None:
    many = [DatabaseResult(database=f"database_number_{i:04d}", target=f"orders@db_{i:04d}",
                           phase="Failed" if i % 7 == 0 else "Completed",
                           backup_id="20261202T000000.000000Z", stored_bytes=10**9,
                           raw_bytes=4 * 10**9, error_class="DatabaseMissing",
                           message="x" * 300 if i % 7 == 0 else None) for i in range(400)]
    result = TaskResult(kind="backup", phase="PartiallyFailed", exit_code=12, databases=many,
                        error=ErrorInfo(error_class="PartialFailure", exit_code=12,
                                        message="58 of 400 failed, first: gone"))
    text = result.to_termination_message()
    assert len(text.encode()) <= 4096
    back = TaskResult.from_termination_message(text)
    assert back.phase == "PartiallyFailed" and back.exit_code == 12 and back.truncated
    status = BackupStatus().partially_failed(back, 1)
    assert status.phase == "PartiallyFailed"
    assert "failed" in status.conditions[0].message and "cut" in status.conditions[0].message


def test_a_globals_restore_goes_to_a_target_with_conflict_fail_only() -> None:
    from safehold.api.restore import RestoreSpec

    base = {"source": {"backupRef": {"name": "b"}, "globals": True},
            "destination": {"targetRef": {"name": "new-server"}}}
    assert RestoreSpec.model_validate(base).source.globals
    for change, words in [({"destination": {"database": "x"}}, "destination targetRef"),
                          ({"conflictPolicy": "replace"}, "conflictPolicy fail"),
                          ({"include": ["t"]}, "no include"),
                          ({"source": {"backupRef": {"name": "b"}, "globals": True,
                                       "database": "a"}}, "exclude each other")]:
        with pytest.raises(ValidationError, match=words):
            RestoreSpec.model_validate({**base, **change})
    settings = Settings(runner_image="safehold/runner:test")
    target = BackupTarget.model_validate(samples.target(spec=dict(
        samples.PG_TARGET_SPEC, databases={"all": True})))
    rs = Restore.model_validate(samples.restore(**base))
    task = _task_of(tasks.restore_job(rs, target, target, "20261202T000000.000000Z", "r",
                                      settings))
    assert task.source == "orders@~globals" and task.globals
