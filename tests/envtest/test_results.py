"""Runner results reach status: the test plays the kubelet (pod status), the Job controller and
the operator are real."""

from __future__ import annotations

from typing import Any

from safehold.api.common import ErrorInfo
from safehold.api.result import TaskResult
from tests.envtest.conftest import Cluster, eventually, finish_pod
from tests.unit.controller import samples


def _phase(cluster: Cluster, plural: str, name: str, phase: str) -> dict[str, Any]:
    return eventually(lambda: (s := cluster.status(plural, name)).get("phase") == phase and s,
                      f"{plural}/{name} {phase}")


def test_backup_result_fills_status(cluster: Cluster, operator: Any) -> None:
    with operator():
        cluster.create("backuptargets", samples.target())
        bk = cluster.create("backups", samples.backup())
        job = eventually(lambda: cluster.jobs(bk["metadata"]["uid"]), "Job")[0]
        bid = eventually(lambda: cluster.status("backups", "orders-20261202").get("backupId"),
                         "backup id")
        result = TaskResult(kind="backup", phase="Completed", backup_id=bid, type="full",
                            chain_id=bid, raw_bytes=1000, stored_bytes=250,
                            compression_ratio=4.0, objects=3, key_id="k1", seconds=2.5,
                            location="s3://backups/prod/orders/" + bid)
        finish_pod(cluster, job, exit_code=0, message=result.to_termination_message())
        status = _phase(cluster, "backups", "orders-20261202", "Completed")
    assert status["backupId"] == bid and status["storedBytes"] == 250
    assert status["size"] == "250 B" and status["keyId"] == "k1"
    cond = next(c for c in status["conditions"] if c["type"] == "Completed")
    assert cond["status"] == "True" and cond["observedGeneration"] == 1
    assert "Completed" in {e.reason for e in cluster.events("orders-20261202")}


def test_runner_error_class_and_oom_kill_are_reported(cluster: Cluster, operator: Any) -> None:
    spec = dict(samples.PG_TARGET_SPEC, runner={"backoffLimit": 0})
    with operator():
        cluster.create("backuptargets", samples.target(spec=spec))
        failing = cluster.create("backups", samples.backup("fails"))
        oom = cluster.create("backups", samples.backup("oom"))
        job = eventually(lambda: cluster.jobs(failing["metadata"]["uid"]), "Job")[0]
        result = TaskResult.failure("backup", ErrorInfo(
            error_class="DatabaseProblem", message="password authentication failed for backup",
            exit_code=6, hint="check passwordSecretRef"))
        finish_pod(cluster, job, exit_code=6, message=result.to_termination_message())
        job = eventually(lambda: cluster.jobs(oom["metadata"]["uid"]), "Job")[0]
        finish_pod(cluster, job, exit_code=137, reason="OOMKilled")
        failed = _phase(cluster, "backups", "fails", "Failed")
        oomed = _phase(cluster, "backups", "oom", "Failed")
    cond = next(c for c in failed["conditions"] if c["type"] == "Completed")
    assert cond["reason"] == "DatabaseProblem" and "password authentication" in cond["message"]
    assert failed["error"]["exitCode"] == 6
    cond = next(c for c in oomed["conditions"] if c["type"] == "Completed")
    assert cond["reason"] == "OOMKilled" and "memory limit" in cond["message"]


def test_check_job_sets_ready(cluster: Cluster, operator: Any) -> None:
    with operator():
        bt = cluster.create("backuptargets", samples.target())
        job = eventually(lambda: cluster.jobs(bt["metadata"]["uid"]), "check Job")[0]
        eventually(lambda: cluster.status("backuptargets", "orders").get("checkJob"), "checking")
        result = TaskResult(kind="check", phase="Completed", server_version="PostgreSQL 16.4")
        finish_pod(cluster, job, exit_code=0, message=result.to_termination_message())
        status = eventually(
            lambda: (s := cluster.status("backuptargets", "orders")).get("lastCheckTime") and s,
            "the check's verdict")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "CheckPassed")
    assert "PostgreSQL 16.4" in ready["message"] and "checkJob" not in status
    assert status["serverVersion"] == "PostgreSQL 16.4"
