"""deletionPolicy: Retain keeps data (no finalizer); Delete runs a delete Job, refuses while a
kept backup depends on it, and never hangs a terminating namespace."""

from __future__ import annotations

import uuid
from typing import Any

from kubernetes import client

from safehold.api.result import TaskResult
from safehold.api.task import parse_task
from tests.envtest.conftest import Cluster, events_include, eventually, finish_pod
from tests.infra.kube import ControlPlane
from tests.infra.procs import wait_until
from tests.unit.controller import samples

FULL, INC = "20261201T000000.000001Z", "20261201T060000.000001Z"
FINALIZER = "safehold.dev/delete-data"


def _completed(k8s: Cluster, name: str, bid: str, parent: str | None = None,
               policy: str = "Retain") -> dict[str, Any]:
    spec: dict[str, Any] = {"deletionPolicy": policy}
    if parent:
        spec["type"] = "incremental"
    body = k8s.create("backups", samples.backup(name, **spec))
    k8s.patch_status("backups", name, {
        "phase": "Completed", "backupId": bid, "parentId": parent,
        "chainId": FULL, "type": "incremental" if parent else "full"})
    return body


def _finalized(k8s: Cluster, name: str) -> bool:
    return FINALIZER in ((k8s.get("backups", name) or {}).get("metadata", {})
                         .get("finalizers") or [])


def test_retain_has_no_finalizer_and_delete_is_refused_while_a_kept_backup_depends(
    k8s: Cluster, operator: Any
) -> None:
    k8s.create("backuptargets", samples.target())
    _completed(k8s, "full", FULL, policy="Delete")
    inc = _completed(k8s, "inc", INC, parent=FULL)
    with operator():
        eventually(lambda: _finalized(k8s, "full"), "the finalizer on the Delete backup")
        k8s.delete("backups", "full")
        cond = eventually(lambda: next((c for c in k8s.status("backups", "full")
                                        .get("conditions", []) if c["type"] == "Deleting"), None),
                          "the Deleting condition")
        assert cond["reason"] == "DependentBackups" and "inc" in cond["message"]
        assert k8s.get("backups", "full") is not None  # refused: still there
        assert not _finalized(k8s, "inc")  # Retain: never held
        # the way out the condition names: keep the data and let the object go
        k8s.custom.patch_namespaced_custom_object(
            "safehold.dev", "v1alpha1", k8s.ns, "backups", "full",
            {"spec": {"deletionPolicy": "Retain"}})
        eventually(lambda: k8s.get("backups", "full") is None, "the released Backup")
    assert not [j for j in k8s.jobs() if j.metadata.labels["safehold.dev/purpose"]
                == "delete"]
    assert k8s.get("backups", "inc")["metadata"]["uid"] == inc["metadata"]["uid"]


def test_delete_runs_a_delete_job_then_releases(k8s: Cluster, operator: Any) -> None:
    k8s.create("backuptargets", samples.target())
    bk = _completed(k8s, "full", FULL, policy="Delete")
    with operator():
        eventually(lambda: _finalized(k8s, "full"), "the finalizer")
        k8s.delete("backups", "full")
        job = eventually(lambda: [j for j in k8s.jobs(bk["metadata"]["uid"])
                                  if j.metadata.labels["safehold.dev/purpose"] == "delete"],
                         "the delete Job")[0]
        task = parse_task(job.spec.template.spec.containers[0].env[0].value)
        assert task.kind == "delete" and task.backup_ids == [FULL]
        assert k8s.get("backups", "full") is not None  # held until the data is gone
        done = TaskResult(kind="delete", phase="Completed", deleted=[FULL])
        finish_pod(k8s, job, exit_code=0, message=done.to_termination_message())
        eventually(lambda: k8s.get("backups", "full") is None, "the deleted Backup")
        events_include(k8s, "full", {"Deleted"})


def test_terminating_namespace_never_hangs(kube: ControlPlane, crds: list[str],
                                           operator: Any) -> None:
    ns = f"t-{uuid.uuid4().hex[:10]}"
    with kube.api_client() as api:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    k8s = Cluster(kube, ns)
    # the serviceaccount controller makes `default` a moment after the namespace: until then
    # the read is a 404, which wait_until retries (eventually would raise it at once)
    wait_until(lambda: k8s.core.read_namespaced_service_account("default", ns) is not None,
               what=f"ServiceAccount default in namespace {ns}", timeout=30)
    k8s.create("backuptargets", samples.target())
    _completed(k8s, "full", FULL, policy="Delete")
    _completed(k8s, "inc", INC, parent=FULL, policy="Delete")
    with operator():
        eventually(lambda: _finalized(k8s, "full") and _finalized(k8s, "inc"),
                   "the finalizers")
        k8s.core.delete_namespace(ns)
        # no Job can be created in a terminating namespace: the data is retained, objects go
        eventually(lambda: not k8s.custom.list_namespaced_custom_object(
            "safehold.dev", "v1alpha1", ns, "backups")["items"], "the Backups released",
            timeout=120)
        eventually(lambda: ns not in [n.metadata.name for n in k8s.core.list_namespace()
                                      .items], "the namespace gone", timeout=120)
    k8s.api.close()
