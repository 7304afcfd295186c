"""The operator against a real control plane: what it creates and records (Pods never run)."""

from __future__ import annotations

from typing import Any

from safehold.api.task import parse_task
from tests.envtest.conftest import Cluster, events_include, eventually
from tests.unit.controller import samples


def _one_job(k8s: Cluster, uid: str, purpose: str | None = None) -> Any:
    return eventually(lambda: k8s.jobs(uid, purpose), f"the runner Job ({purpose or 'any'})")[0]


def test_backup_creates_one_restricted_job_with_secrets_by_reference(
    k8s: Cluster, operator: Any
) -> None:
    with operator():
        k8s.create("backuptargets", samples.target())
        bk = k8s.create("backups", samples.backup())
        uid = bk["metadata"]["uid"]
        job = _one_job(k8s, uid)
        status = eventually(
            lambda: (s := k8s.status("backups", "orders-20261202")).get("jobName") and s,
            "Backup status with the Job",
        )
        assert status["phase"] == "Running" and status["jobName"] == job.metadata.name
        # the Job controller made a Pod: the API server admitted it under `restricted`
        pods = eventually(
            lambda: k8s.core.list_namespaced_pod(
                k8s.ns, label_selector=f"batch.kubernetes.io/controller-uid={job.metadata.uid}"
            ).items,
            "the runner Pod admitted under the restricted Pod Security Standard",
        )
        assert len(k8s.jobs(uid)) == 1
        events_include(k8s, "orders-20261202", {"JobCreated"})

    pod = pods[0].spec
    assert pod.service_account_name == "safehold-runner" and not pod.automount_service_account_token
    sa = k8s.core.read_namespaced_service_account("safehold-runner", k8s.ns)
    assert sa.automount_service_account_token is False
    container = job.spec.template.spec.containers[0]
    literal = {e.name: e.value for e in container.env if e.value is not None}
    assert set(literal) == {"SAFEHOLD_TASK"}
    task = parse_task(literal["SAFEHOLD_TASK"])
    assert task.kind == "backup" and task.backup_id == status["backupId"]
    assert [f.secret_ref.name for f in container.env_from] == ["s3-creds"]
    secrets = {v.secret.secret_name for v in job.spec.template.spec.volumes if v.secret}
    assert secrets == {"orders-db", "orders-ca", "orders-key"}
    assert job.spec.backoff_limit == 2 and job.spec.ttl_seconds_after_finished == 86400
    owner = job.metadata.owner_references[0]
    assert (owner.kind, owner.uid, owner.controller) == ("Backup", uid, True)


def test_restarted_operator_does_not_create_a_second_job(k8s: Cluster, operator: Any) -> None:
    with operator():
        k8s.create("backuptargets", samples.target())
        bk = k8s.create("backups", samples.backup())
        uid = bk["metadata"]["uid"]
        first = _one_job(k8s, uid)
        first_status = eventually(lambda: k8s.status("backups", bk["metadata"]["name"])
                                  .get("backupId"), "backup id in status")
    # the worst crash: the status write was lost, and kopf's own bookkeeping with it
    k8s.patch_status("backups", "orders-20261202",
                         {"phase": None, "jobName": None, "backupId": None, "conditions": None})
    k8s.custom.patch_namespaced_custom_object(
        "safehold.dev", "v1alpha1", k8s.ns, "backups", "orders-20261202",
        {"metadata": {"annotations": {
            k: None for k in (k8s.get("backups", "orders-20261202") or {})
            ["metadata"].get("annotations", {}) if k.startswith("kopf.safehold.dev")}}},
    )
    assert not k8s.status("backups", "orders-20261202").get("jobName")
    with operator():
        again = eventually(lambda: k8s.status("backups", "orders-20261202").get("jobName"),
                           "the restarted operator recording the Job")
    jobs = k8s.jobs(uid)
    assert [j.metadata.name for j in jobs] == [first.metadata.name] == [again]
    assert [j.metadata.uid for j in jobs] == [first.metadata.uid]
    assert k8s.status("backups", "orders-20261202")["backupId"] == first_status


def test_deleting_a_backup_deletes_its_job(k8s: Cluster, operator: Any) -> None:
    with operator():
        k8s.create("backuptargets", samples.target())
        bk = k8s.create("backups", samples.backup())
        uid = bk["metadata"]["uid"]
        _one_job(k8s, uid)
        k8s.delete("backups", "orders-20261202")
        eventually(lambda: k8s.get("backups", "orders-20261202") is None, "Backup gone")
        eventually(lambda: not k8s.jobs(uid), "the Job garbage-collected with its Backup")


def _completed(k8s: Cluster, name: str, bid: str, parent: str | None = None,
               policy: str = "Retain") -> None:
    spec: dict[str, Any] = {"deletionPolicy": policy}
    if parent:
        spec["type"] = "incremental"
    k8s.create("backups", samples.backup(name, **spec))
    k8s.patch_status("backups", name, {
        "phase": "Completed", "backupId": bid, "parentId": parent,
        "chainId": None if parent is None else "20261201T000000.000001Z",
        "type": "incremental" if parent else "full", "completedAt": "2026-12-01T00:10:00Z"})


def test_restore_dry_run_records_the_plan_and_creates_no_job(
    k8s: Cluster, operator: Any
) -> None:
    k8s.create("backuptargets", samples.target())
    _completed(k8s, "full", "20261201T000000.000001Z")
    _completed(k8s, "inc", "20261201T060000.000001Z", parent="20261201T000000.000001Z")
    with operator():
        rs = k8s.create("restores", samples.restore(
            "dry", source={"backupRef": {"name": "inc"}}, dryRun=True))
        status = eventually(lambda: (s := k8s.status("restores", "dry")).get("phase")
                            == "Completed" and s, "the dry run's plan")
        missing = k8s.create("restores", samples.restore(
            "missing", source={"backupRef": {"name": "nope"}}))
        failed = eventually(lambda: (s := k8s.status("restores", "missing")).get("phase")
                            == "Failed" and s, "the Restore of a missing backup failing")
    assert [b["backupId"] for b in status["plan"]["backups"]] == [
        "20261201T000000.000001Z", "20261201T060000.000001Z"]
    cond = next(c for c in status["conditions"] if c["type"] == "Completed")
    assert cond["reason"] == "DryRun" and cond["observedGeneration"] == 1
    assert k8s.jobs(rs["metadata"]["uid"]) == []
    assert k8s.jobs(missing["metadata"]["uid"]) == []
    cond = next(c for c in failed["conditions"] if c["type"] == "Completed")
    assert cond["reason"] == "BackupNotFound" and "'nope'" in cond["message"]


def test_target_creates_a_check_job_and_a_generated_key_not_owned(
    k8s: Cluster, operator: Any
) -> None:
    with operator():
        bt = k8s.create("backuptargets", samples.target("app", samples.SQLITE_TARGET_SPEC))
        job = _one_job(k8s, bt["metadata"]["uid"], "check")
        status = eventually(lambda: (s := k8s.status("backuptargets", "app")).get("checkJob")
                            and s, "the target's status naming its check Job")
    assert job.metadata.labels["safehold.dev/purpose"] == "check"
    task = parse_task(job.spec.template.spec.containers[0].env[0].value)
    assert task.kind == "check" and task.database.url == "sqlite:///data/app.db"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "Checking")
    assert status["generatedKeySecret"] == "app-key"
    secret = k8s.core.read_namespaced_secret("app-key", k8s.ns)
    assert not secret.metadata.owner_references  # deleting the target never deletes the key
    keys = set(secret.data)
    assert "active" in keys and len([k for k in keys if k.startswith("key-")]) == 1


def test_restore_plans_then_runs_one_job_into_a_new_database(
    k8s: Cluster, operator: Any
) -> None:
    k8s.create("backuptargets", samples.target())
    _completed(k8s, "full", "20261201T000000.000001Z")
    with operator():
        rs = k8s.create("restores", samples.restore(
            "back", source={"targetRef": {"name": "orders"}, "backupId": "latest"}))
        job = _one_job(k8s, rs["metadata"]["uid"])
        status = eventually(lambda: (s := k8s.status("restores", "back")).get("phase")
                            == "Running" and s, "the Restore running")
    assert status["plan"]["backups"] == [{"backupId": "20261201T000000.000001Z"}]
    task = parse_task(job.spec.template.spec.containers[0].env[0].value)
    assert task.kind == "restore" and task.backup_id == "20261201T000000.000001Z"
    assert task.database.url == "postgresql://backup@orders-db.shop.svc:5432/orders_copy"
    assert task.conflict_policy == "fail" and not task.plan_only


def test_target_spec_change_runs_a_new_check(k8s: Cluster, operator: Any) -> None:
    with operator():
        bt = k8s.create("backuptargets", samples.target())
        first = _one_job(k8s, bt["metadata"]["uid"], "check")
        # once kopf has finished the creation (a change during it is folded into it and caught
        # by the re-check timer instead)
        eventually(lambda: "kopf.safehold.dev/last-handled-configuration" in (
            k8s.get("backuptargets", "orders") or {})["metadata"].get("annotations", {}),
            "the creation handled")
        k8s.custom.patch_namespaced_custom_object(
            "safehold.dev", "v1alpha1", k8s.ns, "backuptargets", "orders",
            {"spec": {"compression": "zstd:9"}})
        jobs = eventually(lambda: len(j := k8s.jobs(bt["metadata"]["uid"], "check")) == 2 and j,
                          "a second check Job for generation 2")
        status = eventually(lambda: (s := k8s.status("backuptargets", "orders"))
                            .get("checkJob") != first.metadata.name and s, "the new check")
    assert status["checkJob"] in {j.metadata.name for j in jobs}
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["observedGeneration"] == 2 and ready["reason"] == "Checking"
