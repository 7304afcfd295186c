"""Restore plans and deletion decisions over Backup dicts."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.controller.logic import deletion, plan
from safehold.controller.logic.deletion import Action


def bk(name: str, bid: str | None, *, parent: str | None = None, typ: str = "full",
       phase: str = "Completed", target: str = "orders", deleting: bool = False,
       policy: str = "Retain", done: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    status = {"phase": phase, "backupId": bid, "parentId": parent, "type": typ}
    if done:
        status["completedAt"] = done
    return {"metadata": meta, "spec": {"targetRef": {"name": target}, "type": typ,
                                       "deletionPolicy": policy}, "status": status}


CHAIN = [
    bk("f", "20261201T000000.000001Z", done="2026-12-01T00:10:00Z"),
    bk("i1", "20261201T060000.000001Z", parent="20261201T000000.000001Z", typ="incremental",
       done="2026-12-01T06:10:00Z"),
    bk("i2", "20261201T120000.000001Z", parent="20261201T060000.000001Z", typ="incremental",
       done="2026-12-01T12:10:00Z"),
    bk("other", "20261202T000000.000001Z", target="crm", done="2026-12-02T00:10:00Z"),
    bk("running", "20261202T010000.000001Z", phase="Running"),
]


def test_plan_by_name_walks_the_chain_full_first() -> None:
    p = plan.chain(CHAIN, plan.choose(CHAIN, backup_name="i2"))
    assert [s.name for s in p.steps] == ["f", "i1", "i2"]
    assert p.backup_id == "20261201T120000.000001Z" and p.target == "orders"
    assert "(full)" in p.summary()


def test_plan_latest_and_by_id_and_point_in_time() -> None:
    assert plan.choose(CHAIN, target="orders", backup_id="latest")["metadata"]["name"] == "i2"
    got = plan.choose(CHAIN, target="orders", backup_id="20261201T060000.000001Z")
    assert got["metadata"]["name"] == "i1"
    got = plan.choose(CHAIN, target="orders", point_in_time="2026-12-01T07:00:00Z")
    assert got["metadata"]["name"] == "i1"


def test_parent_missing_from_the_cluster_is_left_to_the_runner() -> None:
    p = plan.chain(CHAIN[2:], plan.choose(CHAIN[2:], backup_name="i2"))
    assert [(s.backup_id, s.name) for s in p.steps] == [
        ("20261201T060000.000001Z", None), ("20261201T120000.000001Z", "i2")]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"backup_name": "nope"}, "BackupNotFound"),
        ({"backup_name": "running"}, "BackupNotRestorable"),
        ({"target": "orders", "backup_id": "20000101T000000.000000Z"}, "BackupNotFound"),
        ({"target": "orders", "point_in_time": "2026-11-01T00:00:00Z"}, "NoBackupBeforeTime"),
        ({"target": "empty"}, "NoBackups"),
        ({}, "InvalidSource"),
    ],
)
def test_plan_errors_say_why(kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(plan.PlanError) as err:
        plan.choose(CHAIN, **kwargs)
    assert err.value.reason == reason and err.value.message


def test_delete_blocked_by_a_kept_dependent() -> None:
    d = deletion.decide(CHAIN[0], CHAIN, namespace_terminating=False)
    assert d.action is Action.BLOCK and "i1" in d.message


def test_dependents_being_deleted_with_delete_do_not_block() -> None:
    chain = [CHAIN[0], bk("i1", "20261201T060000.000001Z", parent="20261201T000000.000001Z",
                          deleting=True, policy="Delete")]
    assert deletion.decide(chain[0], chain, namespace_terminating=False).action is Action.RUN_JOB


def test_terminating_namespace_never_blocks() -> None:
    d = deletion.decide(CHAIN[0], CHAIN, namespace_terminating=True)
    assert d.action is Action.RETAIN and "retained" in d.message


def test_nothing_written_nothing_to_delete() -> None:
    d = deletion.decide(bk("p", None, phase="Pending"), [], namespace_terminating=False)
    assert d.action is Action.RELEASE


def test_terminating_namespace_retains_even_without_dependents() -> None:
    # no delete Job in a terminating namespace: the namespace controller would delete it
    d = deletion.decide(CHAIN[-1], CHAIN, namespace_terminating=True)
    assert d.action is Action.RETAIN and d.reason == "NamespaceTerminating"
