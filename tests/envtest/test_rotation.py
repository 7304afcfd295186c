"""Key rotation through the operator: a changed key Secret, or a new value of the annotation
safehold.dev/rewrap-keys, starts one re-wrap Job whose result lands in the target's status.
The test plays the kubelet (pod status); the Job controller and the operator are real."""

from __future__ import annotations

from typing import Any

from safehold.api.common import ErrorInfo
from safehold.api.result import TaskResult
from safehold.api.task import parse_task
from tests.envtest.conftest import Cluster, events_include, eventually, finish_pod
from tests.unit.controller import samples


def _secret(k8s: Cluster, data: dict[str, str]) -> None:
    k8s.core.create_namespaced_secret(k8s.ns, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "orders-key"},
        "stringData": data})


def _condition(k8s: Cluster) -> dict[str, Any] | None:
    return next((c for c in k8s.status("backuptargets", "orders").get("conditions", [])
                 if c["type"] == "KeysRotated"), None)


def test_a_key_secret_change_and_the_annotation_each_start_one_rewrap(
        k8s: Cluster, operator: Any) -> None:
    _secret(k8s, {"key-a": "A" * 44, "active": "key-a"})
    with operator():
        bt = k8s.create("backuptargets", samples.target())
        uid = bt["metadata"]["uid"]
        baseline = eventually(lambda: k8s.status("backuptargets", "orders").get(
            "keySecretVersion"), "the key Secret's version recorded")
        assert baseline.startswith("orders-key@") and k8s.jobs(uid, "rewrap") == []
        # 1. key B added and made active: one re-wrap Job, mounting the whole Secret
        k8s.core.patch_namespaced_secret("orders-key", k8s.ns, {"stringData": {
            "key-b": "B" * 44, "active": "key-b"}})
        job = eventually(lambda: k8s.jobs(uid, "rewrap"), "re-wrap Job")[0]
        task = parse_task(job.spec.template.spec.containers[0].env[0].value)
        assert task.kind == "rewrap" and task.encryption.key_dir
        volumes = {v.name: v for v in job.spec.template.spec.volumes}
        assert volumes["src-keys"].secret.secret_name == "orders-key"
        running = eventually(lambda: _condition(k8s), "KeysRotated")
        assert running["status"] == "Unknown" and running["reason"] == "Rewrapping"
        finish_pod(k8s, job, exit_code=0, message=TaskResult(
            kind="rewrap", phase="Completed", rewrapped=3, active_key_id="k-b",
            retired_key_ids=["k-a"]).to_termination_message())
        done = eventually(lambda: (c := _condition(k8s)) and c["status"] == "True" and c,
                          "KeysRotated True")
        status = k8s.status("backuptargets", "orders")
        # 2. the annotation asks again; this time a key some backup needs is missing
        k8s.custom.patch_namespaced_custom_object(
            "safehold.dev", "v1alpha1", k8s.ns, "backuptargets", "orders",
            {"metadata": {"annotations": {"safehold.dev/rewrap-keys": "1"}}})
        again = eventually(lambda: [j for j in k8s.jobs(uid, "rewrap")
                                    if j.metadata.name != job.metadata.name], "second Job")[0]
        finish_pod(k8s, again, exit_code=5, message=TaskResult.failure("rewrap", ErrorInfo(
            error_class="MissingKeyError", exit_code=5,
            message="backup 20261201T000000.000001Z is wrapped by key k-a, which is not in the"
            " key Secret")).to_termination_message())
        failed = eventually(lambda: (c := _condition(k8s)) and c["status"] == "False" and c,
                            "KeysRotated False")
        events_include(k8s, "orders", {"Rewrapping", "Rewrapped", "MissingKeyError"})
    assert "3 data key(s) re-wrapped" in done["message"] and "k-a" in done["message"]
    assert status["activeKeyId"] == "k-b" and status["retiredKeyIds"] == ["k-a"]
    assert status["keySecretVersion"] != baseline and not status.get("rewrapJob")
    assert failed["reason"] == "MissingKeyError" and "k-a" in failed["message"]
