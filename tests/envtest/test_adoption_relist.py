"""Adoption re-checks: once per check interval the operator lists the repository again after
the newest id it has seen, so a backup written since (by the standalone CLI, another cluster)
is adopted too. The test plays the kubelet (pod status); the Job controller and the operator
are real."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.api.result import ListedBackup, TaskResult
from safehold.api.task import parse_task
from safehold.controller.handlers import adoption
from tests.envtest.conftest import Cluster, eventually, finish_pod
from tests.unit.controller import samples


def _task(job: Any) -> Any:
    return parse_task(job.spec.template.spec.containers[0].env[0].value)


def test_a_recheck_adopts_backups_written_since(k8s: Cluster, operator: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    full, inc = "20261201T000000.000001Z", "20261201T060000.000001Z"
    monkeypatch.setenv("SAFEHOLD_CHECK_INTERVAL_SECONDS", "30")  # the smallest allowed
    with operator():
        bt = k8s.create("backuptargets", samples.target())
        uid = bt["metadata"]["uid"]
        first = eventually(lambda: k8s.jobs(uid, "adopt"), "adopt Job")[0]
        finish_pod(k8s, first, exit_code=0, message=TaskResult(
            kind="list", phase="Completed", target="orders",
            backups=[ListedBackup(id=full, type="full")]).to_termination_message())
        eventually(lambda: k8s.status("backups", "orders-20261201t000000-000001z").get(
            "phase") == "Completed", "the full adopted")
        # a standalone runner writes an incremental; the next re-check lists after the full
        again = eventually(lambda: [j for j in k8s.jobs(uid, "adopt")
                                    if j.metadata.name != first.metadata.name], "a re-check")[0]
        assert _task(again).after == full
        finish_pod(k8s, again, exit_code=0, message=TaskResult(
            kind="list", phase="Completed", target="orders",
            backups=[ListedBackup(id=inc, type="incremental", parent=full)]
        ).to_termination_message())
        adopted = eventually(lambda: (s := k8s.status(
            "backups", "orders-20261201t060000-000001z")).get("phase") == "Completed" and s,
            "the incremental adopted")
        through = eventually(lambda: k8s.status("backuptargets", "orders").get(
            "adoptedThrough") == inc, "adoptedThrough")
    assert through and adopted["imported"] is True
    assert adopted["parentId"] == full and adopted["chainId"] == full
    # any later re-check starts after the incremental: nothing is listed twice
    later = [j for j in k8s.jobs(uid, "adopt")
             if j.metadata.name not in (first.metadata.name, again.metadata.name)]
    assert all(_task(j).after == inc for j in later)


def test_adoption_converges_across_an_operator_restart(k8s: Cluster, operator: Any) -> None:
    """A list Job that finishes while no operator runs is read by the next one (the Job watch
    lists it), its next page is started once, and nothing is adopted twice."""
    full, inc = "20261201T000000.000001Z", "20261201T060000.000001Z"
    with operator():
        bt = k8s.create("backuptargets", samples.target())
        uid = bt["metadata"]["uid"]
        first = eventually(lambda: k8s.jobs(uid, "adopt"), "adopt Job")[0]
    # the operator is down: the first page (more to come) finishes unseen
    finish_pod(k8s, first, exit_code=0, message=TaskResult(
        kind="list", phase="Completed", target="orders", more=True,
        backups=[ListedBackup(id=full, type="full")]).to_termination_message())
    adoption._READ.clear()  # a real restart forgets what it read; the operator runs in-process
    with operator():
        second = eventually(lambda: [j for j in k8s.jobs(uid, "adopt")
                                     if _task(j).after == full], "the next page")[0]
    adoption._READ.clear()
    with operator():  # restarted again while the second page runs
        finish_pod(k8s, second, exit_code=0, message=TaskResult(
            kind="list", phase="Completed", target="orders",
            backups=[ListedBackup(id=inc, type="incremental", parent=full)]
        ).to_termination_message())
        eventually(lambda: k8s.status("backuptargets", "orders").get("adoptedThrough") == inc,
                   "adoptedThrough")
        items = k8s.custom.list_namespaced_custom_object(
            "safehold.dev", "v1alpha1", k8s.ns, "backups")["items"]
        backups = [b for b in items if b["spec"]["targetRef"]["name"] == "orders"]
    assert sorted(b["spec"]["backupId"] for b in backups) == [full, inc]
    assert [j.metadata.name for j in k8s.jobs(uid, "adopt") if _task(j).after == full] == [
        second.metadata.name]
