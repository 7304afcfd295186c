"""Runner results reach status: the test plays the kubelet (pod status), the Job controller and
the operator are real."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from safehold.api.common import ErrorInfo
from safehold.api.result import TaskResult
from tests.envtest.conftest import Cluster, events_include, eventually, finish_pod
from tests.unit.controller import samples


def _phase(k8s: Cluster, plural: str, name: str, phase: str) -> dict[str, Any]:
    return eventually(lambda: (s := k8s.status(plural, name)).get("phase") == phase and s,
                      f"{plural}/{name} {phase}")


def test_backup_result_fills_status(k8s: Cluster, operator: Any) -> None:
    with operator():
        k8s.create("backuptargets", samples.target())
        bk = k8s.create("backups", samples.backup())
        job = eventually(lambda: k8s.jobs(bk["metadata"]["uid"]), "Job")[0]
        bid = eventually(lambda: k8s.status("backups", "orders-20261202").get("backupId"),
                         "backup id")
        result = TaskResult(kind="backup", phase="Completed", backup_id=bid, type="full",
                            chain_id=bid, raw_bytes=1000, stored_bytes=250,
                            compression_ratio=4.0, objects=3, key_id="k1", seconds=2.5,
                            location="s3://backups/prod/orders/" + bid)
        finish_pod(k8s, job, exit_code=0, message=result.to_termination_message())
        status = _phase(k8s, "backups", "orders-20261202", "Completed")
        events_include(k8s, "orders-20261202", {"Completed"})
    assert status["backupId"] == bid and status["storedBytes"] == 250
    assert status["size"] == "250 B" and status["keyId"] == "k1"
    cond = next(c for c in status["conditions"] if c["type"] == "Completed")
    assert cond["status"] == "True" and cond["observedGeneration"] == 1


def test_runner_error_class_and_oom_kill_are_reported(k8s: Cluster, operator: Any) -> None:
    spec = dict(samples.PG_TARGET_SPEC, runner={"backoffLimit": 0})
    with operator():
        k8s.create("backuptargets", samples.target(spec=spec))
        failing = k8s.create("backups", samples.backup("fails"))
        oom = k8s.create("backups", samples.backup("oom"))
        job = eventually(lambda: k8s.jobs(failing["metadata"]["uid"]), "Job")[0]
        result = TaskResult.failure("backup", ErrorInfo(
            error_class="DatabaseProblem", message="password authentication failed for backup",
            exit_code=6, hint="check passwordSecretRef"))
        finish_pod(k8s, job, exit_code=6, message=result.to_termination_message())
        job = eventually(lambda: k8s.jobs(oom["metadata"]["uid"]), "Job")[0]
        finish_pod(k8s, job, exit_code=137, reason="OOMKilled")
        failed = _phase(k8s, "backups", "fails", "Failed")
        oomed = _phase(k8s, "backups", "oom", "Failed")
    cond = next(c for c in failed["conditions"] if c["type"] == "Completed")
    assert cond["reason"] == "DatabaseProblem" and "password authentication" in cond["message"]
    assert failed["error"]["exitCode"] == 6
    cond = next(c for c in oomed["conditions"] if c["type"] == "Completed")
    assert cond["reason"] == "OOMKilled" and "memory limit" in cond["message"]


def test_check_job_sets_ready(k8s: Cluster, operator: Any) -> None:
    with operator():
        bt = k8s.create("backuptargets", samples.target())
        job = eventually(lambda: k8s.jobs(bt["metadata"]["uid"], "check"), "check Job")[0]
        eventually(lambda: k8s.status("backuptargets", "orders").get("checkJob"), "checking")
        result = TaskResult(kind="check", phase="Completed", server_version="PostgreSQL 16.4")
        finish_pod(k8s, job, exit_code=0, message=result.to_termination_message())
        status = eventually(
            lambda: (s := k8s.status("backuptargets", "orders")).get("lastCheckTime") and s,
            "the check's verdict")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "CheckPassed")
    assert "PostgreSQL 16.4" in ready["message"] and "checkJob" not in status
    assert status["serverVersion"] == "PostgreSQL 16.4"


def _fail_status_patches(monkeypatch: pytest.MonkeyPatch, plural: str,
                         exc: Callable[[], BaseException], times: int) -> list[str]:
    """The operator's first ``times`` status patches of ``plural`` fail with ``exc()``
    (the fault); returns the list the failed calls are appended to."""
    from safehold.controller.kube import Kube

    real, failed = Kube.patch_status, []

    def patch_status(self: Kube, p: str, ns: str, name: str, status: dict[str, Any],
                     resource_version: str | None = None) -> None:
        if p == plural and "lastCheckTime" in status and len(failed) < times:
            failed.append(name)
            raise exc()
        real(self, p, ns, name, status, resource_version)

    monkeypatch.setattr(Kube, "patch_status", patch_status)
    return failed


def _check_passes(k8s: Cluster) -> dict[str, Any]:
    bt = k8s.create("backuptargets", samples.target())
    job = eventually(lambda: k8s.jobs(bt["metadata"]["uid"], "check"), "check Job")[0]
    eventually(lambda: k8s.status("backuptargets", "orders").get("checkJob"), "checking")
    result = TaskResult(kind="check", phase="Completed", server_version="PostgreSQL 16.4")
    finish_pod(k8s, job, exit_code=0, message=result.to_termination_message())
    return bt


def test_a_verdict_survives_an_api_server_hiccup(k8s: Cluster, operator: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The status patch that records the check's verdict fails twice with 503: the Job's event
    (the only one a finished Job sends) is handled again until it sticks."""
    from kubernetes.client import ApiException

    failed = _fail_status_patches(monkeypatch, "backuptargets",
                                  lambda: ApiException(status=503, reason="Service Unavailable"), 2)
    with operator():
        _check_passes(k8s)
        status = eventually(
            lambda: (s := k8s.status("backuptargets", "orders")).get("lastCheckTime") and s,
            "the check's verdict")
    assert failed == ["orders", "orders"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "CheckPassed")


def test_a_lost_check_verdict_is_read_by_the_recheck_timer(k8s: Cluster, operator: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Every try to record the verdict fails (not a transient error, so no retry): the target
    stays Checking with its finished Job; the re-check timer reads that Job's verdict instead of
    waiting on it forever."""
    from safehold.controller import runtime
    from safehold.controller.handlers import targets
    from safehold.controller.kube import Kube
    from safehold.controller.settings import Settings

    real = Kube.patch_status
    failed = _fail_status_patches(monkeypatch, "backuptargets",
                                  lambda: ValueError("injected"), 1_000)
    with operator():
        bt = _check_passes(k8s)
        eventually(lambda: failed, "the verdict's patch refused")
    job = k8s.jobs(bt["metadata"]["uid"], "check")[0]
    assert any(c.type == "Complete" for c in job.status.conditions or [])
    assert k8s.status("backuptargets", "orders").get("checkJob") == job.metadata.name
    monkeypatch.setattr(Kube, "patch_status", real)  # the API server accepts the patch again
    runtime.set_runtime(runtime.Runtime(Settings.from_env(), Kube(k8s.api)))
    targets.maybe_recheck(k8s.get("backuptargets", "orders") or {})
    status = k8s.status("backuptargets", "orders")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "CheckPassed")
    assert "checkJob" not in status and len(k8s.jobs(bt["metadata"]["uid"], "check")) == 1


def test_a_lost_result_is_recovered_from_the_repository(k8s: Cluster, operator: Any) -> None:
    with operator():
        k8s.create("backuptargets", samples.target())
        bk = k8s.create("backups", samples.backup())
        uid = bk["metadata"]["uid"]
        job = eventually(lambda: k8s.jobs(uid), "Job")[0]
        bid = eventually(lambda: k8s.status("backups", "orders-20261202").get("backupId"),
                         "backup id")
        # the Job (and its pod) vanish before anyone read a result
        k8s.batch.delete_namespaced_job(job.metadata.name, k8s.ns,
                                            propagation_policy="Background")
        recover = eventually(lambda: [j for j in k8s.jobs(uid) if j.metadata.labels[
            "safehold.dev/purpose"] == "recover"], "the recovery Job")[0]
        from safehold.api.task import parse_task

        task = parse_task(recover.spec.template.spec.containers[0].env[0].value)
        assert task.kind == "verify" and task.backup_id == bid and task.target == "orders"
        found = TaskResult(kind="verify", phase="Completed", checked=3)
        finish_pod(k8s, recover, exit_code=0, message=found.to_termination_message())
        status = _phase(k8s, "backups", "orders-20261202", "Completed")
        events_include(k8s, "orders-20261202", {"Recovering", "Completed"})
    assert status["backupId"] == bid


def test_transient_failure_retries_and_permanent_failure_stops_at_once(
    k8s: Cluster, operator: Any
) -> None:
    with operator():
        k8s.create("backuptargets", samples.target())
        retried = k8s.create("backups", samples.backup("retried"))
        keyless = k8s.create("backups", samples.backup("keyless"))
        # storage hiccup (exit 7, transient): the Job makes a new pod, the Backup stays Running
        job = eventually(lambda: k8s.jobs(retried["metadata"]["uid"]), "Job")[0]
        bid = eventually(lambda: k8s.status("backups", "retried").get("backupId"), "id")
        storage = TaskResult.failure("backup", ErrorInfo(
            error_class="StorageProblem", message="503 Slow Down", exit_code=7, transient=True))
        first = finish_pod(k8s, job, exit_code=7, message=storage.to_termination_message())
        eventually(lambda: "Retrying" in {e.reason for e in k8s.events("retried")},
                   "the Retrying event")
        assert k8s.status("backups", "retried")["phase"] == "Running"
        done = TaskResult(kind="backup", phase="Completed", backup_id=bid, stored_bytes=1)
        second = finish_pod(k8s, job, exit_code=0, message=done.to_termination_message())
        assert second != first and len(k8s.jobs(retried["metadata"]["uid"])) == 1
        status = _phase(k8s, "backups", "retried", "Completed")
        assert status["backupId"] == bid  # the retry resumed the same backup id
        # wrong key (exit 5): the pod failure policy fails the Job without retrying
        job = eventually(lambda: k8s.jobs(keyless["metadata"]["uid"]), "Job")[0]
        key = TaskResult.failure("backup", ErrorInfo(
            error_class="KeyProblem", message="the key Secret holds no keys", exit_code=5))
        finish_pod(k8s, job, exit_code=5, message=key.to_termination_message())
        failed = _phase(k8s, "backups", "keyless", "Failed")
    cond = next(c for c in failed["conditions"] if c["type"] == "Completed")
    assert cond["reason"] == "KeyProblem"
    pods = k8s.core.list_namespaced_pod(
        k8s.ns, label_selector=f"batch.kubernetes.io/controller-uid={job.metadata.uid}").items
    assert len(pods) == 1  # no retry was attempted


def test_a_new_target_adopts_the_repositorys_backups(k8s: Cluster, operator: Any) -> None:
    """Every backup is adopted, page by page: the first list page says ``more``, and the next
    list Job starts after that page's newest id."""
    from safehold.api.result import ListedBackup
    from safehold.api.task import parse_task

    full, inc = "20261201T000000.000001Z", "20261201T060000.000001Z"
    with operator():
        bt = k8s.create("backuptargets", samples.target())
        job = eventually(lambda: k8s.jobs(bt["metadata"]["uid"], "adopt"), "adopt Job")[0]
        task = parse_task(job.spec.template.spec.containers[0].env[0].value)
        assert task.kind == "list" and task.after is None
        page1 = TaskResult(kind="list", phase="Completed", target="orders", more=True,
                           backups=[ListedBackup(id=full, type="full", size=500)])
        finish_pod(k8s, job, exit_code=0, message=page1.to_termination_message())
        job2 = eventually(lambda: [j for j in k8s.jobs(bt["metadata"]["uid"], "adopt")
                                   if j.metadata.name != job.metadata.name], "next page")[0]
        task2 = parse_task(job2.spec.template.spec.containers[0].env[0].value)
        assert task2.kind == "list" and task2.after == full
        page2 = TaskResult(kind="list", phase="Completed", target="orders", backups=[
            ListedBackup(id=inc, type="incremental", parent=full, size=123)])
        finish_pod(k8s, job2, exit_code=0, message=page2.to_termination_message())
        name = "orders-20261201t060000-000001z"
        adopted = _phase(k8s, "backups", name, "Completed")
        root = _phase(k8s, "backups", "orders-20261201t000000-000001z", "Completed")
        # a Restore can name what was adopted
        k8s.create("restores", samples.restore(
            "dr", source={"backupRef": {"name": name}}, dryRun=True))
        planned = _phase(k8s, "restores", "dr", "Completed")
        imported = [b for b in (k8s.get("backups", n) for n in (name, root and
                    "orders-20261201t000000-000001z")) if b]
        through = eventually(lambda: k8s.status("backuptargets", "orders").get(
            "adoptedThrough") == inc, "adoptedThrough")
        events_include(k8s, "orders", {"Adopted"})
    assert through
    assert adopted["imported"] is True and adopted["storedBytes"] == 123
    assert adopted["parentId"] == full and adopted["chainId"] == full
    assert root["backupId"] == full and root["type"] == "full"
    assert [b["backupId"] for b in planned["plan"]["backups"]] == [full, inc]
    for b in imported:  # found, never taken: no backup Job
        assert k8s.jobs(b["metadata"]["uid"]) == []
