from __future__ import annotations

from safehold.api.result import LIST_PAGE_BYTES, TERMINATION_MESSAGE_LIMIT, ListedBackup, TaskResult
from safehold.controller import naming
from safehold.controller.logic.adopt import backup_name, known_ids, to_adopt

FULL, INC, DIFF = "20261201T000000.000001Z", "20261201T060000.000001Z", "20261201T120000.000001Z"
FULL2, INC2 = "20261202T000000.000001Z", "20261202T060000.000001Z"
PAGE = [ListedBackup(id=FULL, type="full", size=100),
        ListedBackup(id=INC, type="incremental", parent=FULL, size=10),
        ListedBackup(id=DIFF, type="differential", parent=FULL, size=20),
        ListedBackup(id=FULL2, type="full", size=110),
        ListedBackup(id=INC2, type="incremental", parent=FULL2, size=11)]


def test_every_listed_backup_is_adopted_with_type_parent_and_chain() -> None:
    out = to_adopt(PAGE, "orders", "orders", [])
    assert [m["metadata"]["name"] for m, _ in out] == [backup_name("orders", b.id) for b in PAGE]
    assert [m["spec"]["type"] for m, _ in out] == [
        "full", "incremental", "differential", "full", "incremental"]
    full, facts = out[0]
    assert full["spec"] == {"targetRef": {"name": "orders"}, "type": "full", "backupId": FULL,
                            "deletionPolicy": "Retain"}
    assert full["metadata"]["labels"][naming.IMPORTED] == "true"
    assert facts.parent_id is None and facts.chain_id == FULL and facts.stored_bytes == 100
    assert [(f.parent_id, f.chain_id) for _, f in out[1:]] == [
        (FULL, FULL), (FULL, FULL), (None, FULL2), (FULL2, FULL2)]
    assert facts.started_at is not None and facts.started_at.isoformat().startswith("2026-12-01")


def test_known_backups_are_skipped_and_a_parent_from_an_earlier_page_gives_the_chain() -> None:
    mine = {"metadata": {"name": "mine"}, "spec": {"targetRef": {"name": "orders"}},
            "status": {"backupId": FULL, "chainId": FULL}}
    out = to_adopt(PAGE[1:3], "orders", "orders", [mine])  # the second page
    assert [(m["spec"]["backupId"], f.chain_id) for m, f in out] == [(INC, FULL), (DIFF, FULL)]
    assert [m["spec"]["backupId"] for m, _ in to_adopt(PAGE, "orders", "orders", [mine])] == [
        INC, DIFF, FULL2, INC2]
    other = {"metadata": {"name": "x"}, "spec": {"targetRef": {"name": "crm"},
                                                 "backupId": FULL}}
    assert len(to_adopt(PAGE, "orders", "orders", [other])) == 5


def test_a_backup_not_started_yet_is_known_by_the_id_the_operator_will_give_it() -> None:
    pending = {"metadata": {"name": "p", "uid": "u-1", "creationTimestamp": "2026-12-01T00:00:00Z"},
               "spec": {"targetRef": {"name": "orders"}}}
    assert known_ids([pending], "orders") == {naming.backup_id("2026-12-01T00:00:00Z", "u-1")}


def test_an_orphan_incremental_is_adopted_without_a_chain() -> None:
    (_, facts), = to_adopt([PAGE[1]], "orders", "orders", [])
    assert facts.parent_id == FULL and facts.chain_id is None


def test_a_full_page_fits_the_termination_message() -> None:
    entry = ListedBackup(id=INC, type="differential", parent=FULL, size=10**15)
    page = [entry] * (LIST_PAGE_BYTES // (entry.json_size() + 1))
    result = TaskResult(kind="list", phase="Completed", target="t" * 128, backups=page,
                        more=True, notes=["x" * 200] * 5, seconds=1.0,
                        stage_seconds={"list": 1.0})
    text = result.to_termination_message()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    back = TaskResult.from_termination_message(text)
    assert back.backups == page and back.more


def test_names_are_dns_names() -> None:
    name = backup_name("a" * 250, FULL)
    assert len(name) <= 253 and name == name.lower()
