"""safehold.api: the custom-resource models, their cross-field rules and status transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from safehold.api.backup import Backup, BackupSpec, BackupStatus, human_bytes
from safehold.api.common import ErrorInfo, RunnerOverrides, find_condition, set_condition
from safehold.api.restore import Restore, RestoreSpec, RestoreStatus
from safehold.api.result import TaskResult
from safehold.api.schedule import BackupScheduleSpec
from safehold.api.target import BackupTarget, BackupTargetSpec, BackupTargetStatus
from safehold.api.units import human_seconds

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
T2 = T0 + timedelta(minutes=10)


def target_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "engine": "postgresql",
        "connection": {"host": "orders-db.shop.svc", "port": 5432, "database": "orders",
                       "username": "backup",
                       "passwordSecretRef": {"name": "orders-db", "key": "password"},
                       "tls": {"mode": "verify-full",
                               "caSecretRef": {"name": "orders-ca", "key": "ca.crt"}}},
        "storage": {"url": "s3://backups/prod", "credentialsSecretRef": {"name": "s3-creds"}},
        "encryption": {"keySecretRef": {"name": "orders-key"}},
        "compression": "zstd:3",
    }
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not None}


def refused(model: Any, data: dict[str, Any], *words: str) -> str:
    with pytest.raises(ValidationError) as err:
        model.model_validate(data)
    text = str(err.value)
    for word in words:
        assert word in text, text
    return text


# --------------------------------------------------------------------------- BackupTarget


def test_target_spec_from_the_issue_parses_and_round_trips() -> None:
    spec = BackupTargetSpec.model_validate(target_spec())
    assert spec.connection is not None and spec.connection.password_secret_ref is not None
    assert spec.connection.password_secret_ref.key == "password"
    assert spec.connection.tls is not None and spec.connection.tls.mode == "verify-full"
    body = spec.to_kube()
    assert body["connection"]["passwordSecretRef"] == {"name": "orders-db", "key": "password"}
    assert BackupTargetSpec.model_validate(body) == spec
    # snake_case also parses (populate_by_name), for Python callers
    assert BackupTargetSpec(engine="sqlite", sqlite={"claim_name": "app-data",  # type: ignore[arg-type]
                                                     "path": "/data/app.db"},
                            storage={"url": "s3://b/p"},  # type: ignore[arg-type]
                            encryption={"none": True}).sqlite is not None  # type: ignore[arg-type]


def test_target_needs_exactly_one_way_to_connect() -> None:
    refused(BackupTargetSpec, target_spec(connection=None), "exactly one of connection")
    refused(BackupTargetSpec, target_spec(uriSecretRef={"name": "u", "key": "url"}),
            "exactly one of connection")
    ok = BackupTargetSpec.model_validate(
        target_spec(connection=None, uriSecretRef={"name": "u", "key": "url"}))
    assert ok.uri_secret_ref is not None


def test_sqlite_engine_and_source_go_together() -> None:
    sqlite = {"claimName": "app-data", "path": "/data/app.db"}
    refused(BackupTargetSpec, target_spec(connection=None, sqlite=sqlite), "engine sqlite")
    refused(BackupTargetSpec, target_spec(engine="sqlite"), "engine sqlite")
    ok = BackupTargetSpec.model_validate(target_spec(engine="sqlite", connection=None,
                                                     sqlite=sqlite))
    assert ok.sqlite is not None and ok.sqlite.mount_path == "/data"
    refused(BackupTargetSpec, target_spec(engine="sqlite", connection=None,
                                          sqlite={"claimName": "a", "path": "/other/app.db"}),
            "under mountPath")


def test_storage_file_url_needs_a_volume_and_only_it_takes_one() -> None:
    refused(BackupTargetSpec, target_spec(storage={"url": "file:///repo"}), "volume")
    refused(BackupTargetSpec, target_spec(storage={"url": "s3://b/p",
                                                   "volume": {"claimName": "r"}}),
            "only for file://")
    refused(BackupTargetSpec, target_spec(storage={"url": "ftp://b/p"}), "url")
    ok = BackupTargetSpec.model_validate(
        target_spec(storage={"url": "file:///repo", "volume": {"claimName": "repo"}}))
    assert ok.storage.volume is not None


@pytest.mark.parametrize("encryption", [
    {}, {"none": False}, {"generateKey": True, "none": True},
    {"keySecretRef": {"name": "k"}, "generateKey": True},
])
def test_encryption_is_exactly_one_explicit_choice(encryption: dict[str, Any]) -> None:
    refused(BackupTargetSpec, target_spec(encryption=encryption), "exactly one of keySecretRef")


def test_target_spec_refuses_unknown_fields_and_bad_values() -> None:
    refused(BackupTargetSpec, target_spec(engine="oracle"), "engine")
    refused(BackupTargetSpec, target_spec(compression="zstd:three"), "compression")
    refused(BackupTargetSpec, target_spec(conection={"host": "x"}), "conection")
    spec = target_spec()
    spec["connection"]["passwordSecretRef"] = {"name": "Bad_Name", "key": "password"}
    refused(BackupTargetSpec, spec, "name")


def test_runner_overrides_take_kubernetes_shapes() -> None:
    runner = RunnerOverrides.model_validate({
        "image": "registry.example/safehold-runner:1",
        "resources": {"limits": {"memory": "1Gi", "cpu": 2}, "requests": {"cpu": "500m"}},
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db",
                         "effect": "NoSchedule"}],
        "serviceAccountName": "safehold-runner",
        "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": True},
        "activeDeadlineSeconds": 3600,
    })
    assert runner.to_kube()["resources"]["limits"] == {"memory": "1Gi", "cpu": 2}
    assert runner.to_kube()["securityContext"]["runAsUser"] == 1000


def test_target_status_check_transitions() -> None:
    status = BackupTargetStatus().checking("orders-check-1", 3, now=T0)
    ready = find_condition(status.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("Unknown", "Checking")
    ok = status.checked(TaskResult(kind="check", phase="Completed", server_version="15.8"), 3,
                        now=T1)
    assert ok.ready and ok.server_version == "15.8" and ok.check_job is None
    assert ok.observed_generation == 3 and ok.last_check_time == T1
    bad = ok.checked(TaskResult.failure("check", ErrorInfo(
        error_class="AuthenticationFailed", message="password authentication failed for user"
        " backup", exit_code=6, hint="check passwordSecretRef")), 4, now=T2)
    cond = find_condition(bad.conditions, "Ready")
    assert cond is not None and not bad.ready
    assert (cond.status, cond.reason, cond.observed_generation) == ("False",
                                                                    "AuthenticationFailed", 4)
    assert "password authentication failed" in cond.message and "passwordSecretRef" in cond.message
    assert cond.last_transition_time == T2
    # the input statuses are untouched (transitions are pure)
    assert BackupTargetStatus().conditions == [] and ok.ready
    problems = ok.checked(TaskResult(kind="check", phase="Failed", exit_code=6,
                                     problems=["missing SELECT on public.t"]), 5, now=T2)
    cond = find_condition(problems.conditions, "Ready")
    assert cond is not None and cond.reason == "CheckFailed" and "SELECT" in cond.message


def test_set_condition_keeps_transition_time_while_status_holds() -> None:
    conds = set_condition((), "Ready", "True", "CheckPassed", "ok", generation=1, now=T0)
    again = set_condition(conds, "Ready", "True", "CheckPassed", "still ok", generation=2, now=T1)
    assert again[0].last_transition_time == T0 and again[0].observed_generation == 2
    flipped = set_condition(again, "Ready", "False", "CheckFailed", "down", now=T2)
    assert flipped[0].last_transition_time == T2 and len(flipped) == 1
    body = flipped[0].to_kube()
    assert set(body) == {"type", "status", "lastTransitionTime", "reason", "message"}


def test_target_object_from_a_kubernetes_body() -> None:
    body = {"apiVersion": "safehold.dev/v1alpha1", "kind": "BackupTarget",
            "metadata": {"name": "orders", "namespace": "shop", "generation": 2,
                         "uid": "u", "managedFields": [{"manager": "kubectl"}]},
            "spec": target_spec(),
            "status": {"observedGeneration": 1, "someFutureField": 1}}
    target = BackupTarget.from_body(body)
    assert target.metadata.name == "orders" and target.metadata.generation == 2
    assert target.status.observed_generation == 1
    assert target.repository_name == "orders"
    renamed = BackupTarget.from_body({**body, "spec": target_spec(repositoryName="prod.orders")})
    assert renamed.repository_name == "prod.orders"
    long = BackupTarget.from_body({**body, "metadata": {"name": "x" * 253, "namespace": "shop"}})
    other = BackupTarget.from_body({**body, "metadata": {"name": "x" * 252 + "y",
                                                         "namespace": "shop"}})
    assert len(long.repository_name) <= 128 and long.repository_name != other.repository_name
    from safehold.repository.layout import check_target_name

    check_target_name(long.repository_name)


# --------------------------------------------------------------------------- Backup


def test_backup_spec_defaults_and_include_only_for_full() -> None:
    spec = BackupSpec.model_validate({"targetRef": {"name": "orders"}})
    assert (spec.type, spec.include, spec.deletion_policy, spec.pinned) == ("full", [],
                                                                           "Retain", False)
    refused(BackupSpec, {"targetRef": {"name": "o"}, "type": "incremental",
                         "include": ["public.t"]}, "include is only valid for type full")
    refused(BackupSpec, {"targetRef": {"name": "o"}, "deletionPolicy": "Destroy"},
            "deletionPolicy")
    refused(BackupSpec, {"targetRef": {"name": "o"}, "backupId": "latest"}, "backupId")


def result(**changes: Any) -> TaskResult:
    facts: dict[str, Any] = dict(
        kind="backup", phase="Completed", backup_id="20261202T120000Z", type="incremental",
        parent_id="20261201T120000Z", chain_id="20261130T120000Z",
        chain=["20261130T120000Z", "20261201T120000Z", "20261202T120000Z"],
        end_position={"lsn": "0/3000060"}, raw_bytes=10 * 2**20, stored_bytes=3 * 2**20,
        compression_ratio=3.33, throughput_bytes_per_second=5e6, seconds=2.0, objects=4,
        location="s3://backups/prod/shop.orders/20261202T120000Z", key_id="k1",
        started_at=T0, finished_at=T1, stage_seconds={"check": 0.1, "backup": 1.9})
    facts.update(changes)
    return TaskResult(**facts)


def test_backup_status_lifecycle() -> None:
    pending = BackupStatus().pending(1, now=T0)
    running = pending.running("bk-orders-abc", "20261202T120000Z", 1, now=T0)
    assert (running.phase, running.job_name, running.backup_id) == ("Running", "bk-orders-abc",
                                                                    "20261202T120000Z")
    done = running.completed(result(), 1, now=T2)
    assert done.phase == "Completed" and done.finished
    assert (done.parent_id, done.chain_id, done.type) == ("20261201T120000Z",
                                                          "20261130T120000Z", "incremental")
    assert done.size == "3.0 MiB" and done.stored_bytes == 3 * 2**20
    assert done.end_position == {"lsn": "0/3000060"} and done.key_id == "k1"
    assert done.completed_at == T1 and done.started_at == T0
    cond = find_condition(done.conditions, "Completed")
    assert cond is not None and (cond.status, cond.reason) == ("True", "Completed")
    assert cond.last_transition_time == T2 and "3.0 MiB" in cond.message
    assert running.phase == "Running"  # pure


def test_backup_status_failure_names_the_runner_error() -> None:
    running = BackupStatus().running("job", "20261202T120000Z", 1, now=T0)
    failed = running.failed(ErrorInfo(error_class="StorageProblem", message="bucket missing",
                                      exit_code=7, hint="create the bucket"), 1, now=T1)
    cond = find_condition(failed.conditions, "Completed")
    assert failed.phase == "Failed" and failed.error is not None
    assert cond is not None and cond.reason == "StorageProblem"
    assert cond.message == "bucket missing (hint: create the bucket)"
    odd = running.failed(ErrorInfo(error_class="pod OOMKilled!", message="x"), 1, now=T1)
    odd_cond = find_condition(odd.conditions, "Completed")
    assert odd_cond is not None and odd_cond.reason == "Failed"
    # a retry after a failure runs again and clears the error
    again = failed.running("job", "20261202T120000Z", 1, now=T2)
    assert again.error is None and again.phase == "Running"


def test_backup_imported_and_status_round_trip() -> None:
    imported = BackupStatus().completed(result(), 1, now=T1, imported=True)
    cond = find_condition(imported.conditions, "Completed")
    assert imported.imported and cond is not None and cond.reason == "Imported"
    body = imported.to_kube()
    assert body["stageSeconds"] == {"check": 0.1, "backup": 1.9}
    assert "throughputBytesPerSecond" in body and "backup_id" not in body
    assert BackupStatus.model_validate(body) == imported
    backup = Backup.from_body({"metadata": {"name": "b"}, "spec": {"targetRef": {"name": "o"}},
                               "status": body})
    assert backup.status.backup_id == "20261202T120000Z"


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 2**30)] == [
        "0 B", "1023 B", "1.5 KiB", "5.0 GiB"]


def test_human_seconds() -> None:
    # a tiny run reads in milliseconds, never "0.0s"; the rounding never prints "100ms"
    assert [human_seconds(s) for s in (0.0, 0.0042, 0.0994, 0.0996, 2.25, 75.5, 7384)] == [
        "0ms", "4ms", "99ms", "0.1s", "2.2s", "1m 16s", "2h 3m"]


# --------------------------------------------------------------------------- Restore


def restore_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"source": {"backupRef": {"name": "orders-20261202"}},
                            "destination": {"targetRef": {"name": "orders-copy"}},
                            "include": ["public.customers"], "conflictPolicy": "fail",
                            "dryRun": False}
    spec.update(changes)
    return spec


def test_restore_spec_source_and_destination() -> None:
    spec = RestoreSpec.model_validate(restore_spec())
    assert spec.source.backup_ref is not None and spec.conflict_policy == "fail"
    RestoreSpec.model_validate(restore_spec(source={"targetRef": {"name": "orders"},
                                                    "backupId": "latest"},
                                            destination={"database": "orders_copy"}))
    refused(RestoreSpec, restore_spec(source={}), "exactly one source")
    refused(RestoreSpec, restore_spec(source={"backupRef": {"name": "a"},
                                              "targetRef": {"name": "b"}}), "exactly one source")
    refused(RestoreSpec, restore_spec(source={"backupRef": {"name": "a"},
                                              "backupId": "latest"}), "backupId goes with")
    refused(RestoreSpec, restore_spec(destination={}), "exactly one destination")
    refused(RestoreSpec, {"source": {"backupRef": {"name": "a"}}}, "destination")
    refused(RestoreSpec, restore_spec(destination={"database": "x; DROP"}), "database")


def test_restore_status_plan_then_run() -> None:
    plan = result(kind="restore", plan_only=True, target="shop.orders",
                  restored_to=T0)
    planning = RestoreStatus().planning("rst-plan", 1, now=T0)
    planned = planning.planned(plan, dry_run=False, generation=1, now=T1)
    assert planned.phase == "Planned" and planned.plan is not None
    assert [b.backup_id for b in planned.plan.backups] == plan.chain
    assert planned.plan.restored_to == T0
    running = planned.running("rst-run", 1, now=T1)
    done = running.completed(result(kind="restore", restored_to=T0), 1, now=T2)
    cond = find_condition(done.conditions, "Completed")
    assert done.phase == "Completed" and done.restored_to == T0
    assert cond is not None and cond.status == "True" and "3 backup(s)" in cond.message
    dry = planning.planned(plan, dry_run=True, generation=1, now=T1)
    dry_cond = find_condition(dry.conditions, "Completed")
    assert dry.phase == "Completed" and dry_cond is not None and dry_cond.reason == "DryRun"
    failed = running.failed(ErrorInfo(error_class="NotFoundError", message="no backup x"), 1)
    assert failed.phase == "Failed" and failed.finished
    restore = Restore.from_body({"metadata": {"name": "r"}, "spec": restore_spec(),
                                 "status": done.to_kube()})
    assert restore.status.phase == "Completed"


# --------------------------------------------------------------------------- BackupSchedule


def test_schedule_spec_from_issue_12() -> None:
    spec = BackupScheduleSpec.model_validate({
        "targetRef": {"name": "orders"}, "full": "0 2 * * 0", "differential": "0 2 * * 1-6",
        "incremental": "0 */4 * * *", "timeZone": "Europe/Berlin", "suspend": False,
        "startingDeadlineSeconds": 600, "concurrencyPolicy": "Forbid", "verify": "0 5 * * *",
        "retention": {"keepLast": 3, "keepDaily": 7, "keepWeekly": 4, "keepMonthly": 12,
                      "keepYearly": 2, "maxAge": "400d", "minRecoveryWindow": "7d"},
        "notifications": {"slack": {"webhookSecretRef": {"name": "slack", "key": "url"},
                                    "on": ["failure", "success", "retention", "keyProblem"]}},
    })
    assert spec.retention is not None and spec.retention.min_recovery_window == timedelta(days=7)
    assert spec.to_kube()["retention"]["maxAge"] == "400d"
    minimal = BackupScheduleSpec.model_validate({"targetRef": {"name": "o"}, "full": "@daily",
                                                 "notifications": {"slack": {
                                                     "webhookSecretRef": {"name": "s",
                                                                          "key": "url"}}}})
    assert minimal.notifications is not None and minimal.notifications.slack is not None
    assert minimal.notifications.slack.on == ["failure"]
    refused(BackupScheduleSpec, {"targetRef": {"name": "o"}}, "at least one of full")
    refused(BackupScheduleSpec, {"targetRef": {"name": "o"}, "full": "every day"}, "full")
    refused(BackupScheduleSpec, {"targetRef": {"name": "o"}, "full": "0 0 2 * * *"}, "full",
            "a cron needs 5 fields (minute hour day month weekday) or a macro like @daily")
    refused(BackupScheduleSpec, {"targetRef": {"name": "o"}, "verify": "0 2 * *"}, "verify",
            "a cron needs 5 fields")
    refused(BackupScheduleSpec, {"targetRef": {"name": "o"}, "full": "@daily",
                                 "retention": {}}, "at least one of keep_last")


def test_target_method_is_logical_by_default_and_physical_only_for_postgresql() -> None:
    assert BackupTargetSpec.model_validate(target_spec()).method == "logical"
    physical = BackupTargetSpec.model_validate(target_spec(method="physical"))
    assert physical.to_kube()["method"] == "physical"
    refused(BackupTargetSpec, target_spec(engine="mysql", method="physical"),
            "only available for engine postgresql")
    refused(BackupTargetSpec, target_spec(method="snapshot"), "method")


def test_point_in_time_is_refused_where_no_streamer_exists_naming_the_fix() -> None:
    from safehold.api.pointintime import STREAMER_ENGINES
    from safehold.cli.streamers import STREAMERS

    assert set(STREAMER_ENGINES) == set(STREAMERS)  # the model and the runner agree
    base = {"connection": {"host": "db", "database": "d"}, "storage": {"url": "s3://b/p"},
            "encryption": {"none": True}}
    assert BackupTargetSpec.model_validate(
        {**base, "engine": "mysql", "pointInTime": {"enabled": True}}).streams
    assert not BackupTargetSpec.model_validate(
        {**base, "engine": "postgresql", "pointInTime": {"enabled": False}}).streams
    assert BackupTargetSpec.model_validate(
        {**base, "engine": "mongodb", "pointInTime": {"enabled": True}}).streams
    with pytest.raises(ValidationError, match=r"set pointInTime\.enabled to false"):
        BackupTargetSpec.model_validate(
            {"engine": "sqlite", "sqlite": {"claimName": "app-data", "path": "/data/app.db"},
             "storage": {"url": "s3://b/p"}, "encryption": {"none": True},
             "pointInTime": {"enabled": True}})
    with pytest.raises(ValidationError, match="one BackupTarget per database"):
        BackupTargetSpec.model_validate({**base, "engine": "mysql", "databases": {"all": True},
                                         "pointInTime": {"enabled": True}})


def test_a_restore_to_a_point_names_a_target_and_exactly_one_point() -> None:
    ok = RestoreSpec.model_validate({
        "source": {"targetRef": {"name": "shop"}, "pointInTime": {"time": "2026-12-02T18:30:05Z"}},
        "destination": {"database": "copy"}})
    assert ok.source.point_in_time is not None and ok.source.point_in_time.time is not None
    bad = [
        ({"backupRef": {"name": "b"}, "pointInTime": {"gtid": "0-1-42"}}, "set targetRef"),
        ({"targetRef": {"name": "t"}, "backupId": "latest", "pointInTime": {"gtid": "0-1-4"}},
         "no backupRef, backupId"),
        ({"targetRef": {"name": "t"}, "pointInTime": {}}, "exactly one of time, gtid"),
        ({"targetRef": {"name": "t"}, "pointInTime": {"position": "binlog.000007"}},
         "pattern"),
    ]
    for source, words in bad:
        with pytest.raises(ValidationError, match=words):
            RestoreSpec.model_validate({"source": source, "destination": {"database": "c"}})
    with pytest.raises(ValidationError, match="leave include out"):
        RestoreSpec.model_validate({
            "source": {"targetRef": {"name": "t"}, "pointInTime": {"gtid": "0-1-42"}},
            "destination": {"database": "c"}, "include": ["t1"]})


def test_a_volume_destination_takes_a_whole_backup_into_one_claim() -> None:
    from safehold.api.restore import RestoreSpec

    ok = RestoreSpec.model_validate({
        "source": {"targetRef": {"name": "t"}, "pointInTime": {"time": "2026-12-02T18:00:00Z"}},
        "destination": {"volume": {"claimName": "pg"}}})
    assert ok.destination.volume is not None and ok.destination.volume.sub_path == "pgdata"
    assert ok.destination.volume.run_as_user == 999
    bad = [
        ({"volume": {"claimName": "pg"}, "database": "c"}, {}, "exactly one destination"),
        ({"volume": {}}, {}, "exactly one of claimName"),
        ({"volume": {"claimName": "pg", "subPath": "../up"}}, {}, "pattern"),
        ({"volume": {"claimName": "pg", "subPath": ".."}}, {}, "not . or .."),
        ({"volume": {"claimName": "pg"}}, {"include": ["t"]}, "whole physical PostgreSQL"),
    ]
    for destination, extra, words in bad:
        with pytest.raises(ValidationError, match=words):
            RestoreSpec.model_validate({"source": {"targetRef": {"name": "t"}},
                                        "destination": destination, **extra})
