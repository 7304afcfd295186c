from __future__ import annotations

from safehold.api.result import TaskResult
from safehold.controller.logic.adopt import backup_name, to_adopt

FULL, INC = "20261201T000000.000001Z", "20261201T060000.000001Z"
PLAN = TaskResult(kind="restore", phase="Completed", target="orders", backup_id=INC,
                  type="incremental", parent_id=FULL, chain_id=FULL, chain=[FULL, INC],
                  stored_bytes=10, key_id="k1", plan_only=True)


def test_the_latest_chain_is_adopted_full_first() -> None:
    out = to_adopt(PLAN, "orders", [])
    assert [m["metadata"]["name"] for m, _ in out] == [
        "orders-20261201t000000-000001z", "orders-20261201t060000-000001z"]
    (full, full_facts), (inc, inc_facts) = out
    assert full["spec"] == {"targetRef": {"name": "orders"}, "type": "full", "backupId": FULL,
                            "deletionPolicy": "Retain"}
    assert full["metadata"]["labels"]["safehold.dev/imported"] == "true"
    assert full_facts.parent_id is None and full_facts.chain_id == FULL
    assert inc["spec"]["type"] == "incremental" and inc_facts is PLAN


def test_known_backups_are_not_adopted_twice() -> None:
    existing = [{"metadata": {"name": "mine"}, "spec": {"targetRef": {"name": "orders"}},
                 "status": {"backupId": FULL}}]
    assert [m["spec"]["backupId"] for m, _ in to_adopt(PLAN, "orders", existing)] == [INC]
    other = [{"metadata": {"name": "x"}, "spec": {"targetRef": {"name": "crm"},
                                                  "backupId": FULL}}]
    assert len(to_adopt(PLAN, "orders", other)) == 2


def test_names_are_dns_names() -> None:
    name = backup_name("a" * 250, FULL)
    assert len(name) <= 253 and name == name.lower()
