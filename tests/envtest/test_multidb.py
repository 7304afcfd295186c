"""A target of several databases under the operator: the Job's task names them, a runner that
backed up only some ends the Backup PartiallyFailed (status per database, condition, event), a
Restore picks one database's backup, and the API server refuses a contradictory selection."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import ApiException

from safehold.api.common import ErrorInfo
from safehold.api.errors import Exit
from safehold.api.result import DatabaseResult, TaskResult
from safehold.api.task import parse_task
from tests.envtest.conftest import Cluster, events_include, eventually, finish_pod
from tests.unit.controller import samples

SPEC = dict(samples.PG_TARGET_SPEC, runner={"backoffLimit": 0},
            databases={"names": ["shop", "users", "audit"]})


def _task(job: Any) -> Any:
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env
           if e.value is not None}
    return parse_task(env["SAFEHOLD_TASK"])


def test_partial_failure_is_its_own_phase_and_a_restore_picks_one_database(
        k8s: Cluster, operator: Any) -> None:
    with operator():
        k8s.create("backuptargets", samples.target(spec=SPEC))
        bk = k8s.create("backups", samples.backup())
        job = eventually(lambda: k8s.jobs(bk["metadata"]["uid"]), "Job")[0]
        task = _task(job)
        assert task.databases == ["shop", "users", "audit"] and not task.globals
        bid = eventually(lambda: k8s.status("backups", "orders-20261202").get("backupId"),
                         "backup id")
        error = ErrorInfo(error_class="PartialFailure", exit_code=int(Exit.PARTIAL),
                          message="1 of 3 failed, first: database users does not exist")
        result = TaskResult(kind="backup", phase="PartiallyFailed", exit_code=12, error=error,
                            backup_id=bid, type="full", seconds=3.0, databases=[
                                DatabaseResult(database="shop", target="orders@shop",
                                               phase="Completed", backup_id=bid,
                                               stored_bytes=100, raw_bytes=400),
                                DatabaseResult(database="users", target="orders@users",
                                               phase="Failed", error_class="DatabaseMissing",
                                               message="database users does not exist"),
                                DatabaseResult(database="audit", target="orders@audit",
                                               phase="Completed", backup_id=bid,
                                               stored_bytes=50, raw_bytes=100)])
        finish_pod(k8s, job, exit_code=12, message=result.to_termination_message())
        status = eventually(lambda: (s := k8s.status("backups", "orders-20261202"))
                            .get("phase") == "PartiallyFailed" and s, "PartiallyFailed")
        events_include(k8s, "orders-20261202", {"PartiallyFailed"})

        rs = k8s.create("restores", samples.restore(
            source={"backupRef": {"name": "orders-20261202"}, "database": "shop"}))
        plan = eventually(lambda: k8s.jobs(rs["metadata"]["uid"]), "the restore's plan Job")[0]
        restore_task = _task(plan)
    cond = next(c for c in status["conditions"] if c["type"] == "Completed")
    assert (cond["status"], cond["reason"]) == ("False", "PartiallyFailed")
    assert "2 of 3 backed up" in cond["message"] and "users" in cond["message"]
    assert [(d["database"], d["phase"]) for d in status["databases"]] == [
        ("shop", "Completed"), ("users", "Failed"), ("audit", "Completed")]
    assert status["storedBytes"] == 150 and status["error"]["exitCode"] == 12
    assert restore_task.kind == "restore" and restore_task.source == "orders@shop"
    assert restore_task.backup_id == bid and restore_task.plan_only


def test_the_api_server_refuses_a_contradictory_selection(k8s: Cluster, crds: Any) -> None:
    both = dict(samples.PG_TARGET_SPEC, databases={"names": ["a"], "all": True})
    with pytest.raises(ApiException) as refused:
        k8s.create("backuptargets", samples.target("both", spec=both))
    assert refused.value.status == 422 and "exactly one of names" in str(refused.value.body)
    mongo = dict(samples.PG_TARGET_SPEC, engine="mongodb",
                 databases={"all": True, "globals": True})
    with pytest.raises(ApiException) as refused:
        k8s.create("backuptargets", samples.target("mongo", spec=mongo))
    assert refused.value.status == 422 and "MongoDB users" in str(refused.value.body)


def test_a_globals_restore_reads_the_server_wide_objects(k8s: Cluster, operator: Any) -> None:
    spec = dict(SPEC, databases={"all": True})
    with operator():
        k8s.create("backuptargets", samples.target(spec=spec))
        k8s.create("backuptargets", samples.target("new-server"))
        rs = k8s.create("restores", samples.restore(
            "roles-back", source={"targetRef": {"name": "orders"}, "globals": True},
            destination={"targetRef": {"name": "new-server"}}))
        plan = eventually(lambda: k8s.jobs(rs["metadata"]["uid"]), "the restore's plan Job")[0]
        task = _task(plan)
    assert task.source == "orders@~globals" and task.globals and task.backup_id == "latest"
    with pytest.raises(ApiException) as refused:
        k8s.create("restores", samples.restore(
            "roles-bad", source={"targetRef": {"name": "orders"}, "globals": True},
            destination={"database": "x"}))
    assert refused.value.status == 422 and "destination targetRef" in str(refused.value.body)
