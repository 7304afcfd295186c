"""BackupSchedule decisions (pure): firing, exactly-once, concurrency, promotion, retention."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from safehold.api.schedule import BackupSchedule
from safehold.controller.builders.scheduled import scheduled_backup, verify_job
from safehold.controller.logic import schedules as logic
from safehold.controller.settings import Settings
from tests.unit.controller import samples
from tests.unit.controller.golden import assert_golden

T0 = datetime(2026, 12, 2, 10, 11, 12, tzinfo=UTC)  # the samples' creationTimestamp


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def schedule(status: dict[str, Any] | None = None, **spec: Any) -> BackupSchedule:
    body: dict[str, Any] = {
        "apiVersion": "safehold.dev/v1alpha1", "kind": "BackupSchedule",
        "metadata": samples.meta("orders", uid="0f1e2d3c-0000-4000-8000-0000000000aa"),
        "spec": {"targetRef": {"name": "orders"}, **spec},
    }
    if status:
        body["status"] = status
    return BackupSchedule.from_body(body)


def backup(name: str, phase: str | None = "Completed", *, ours: bool = True,
           bid: str | None = None, parent: str | None = None, started: str | None = None,
           pinned: bool = False, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "uid": f"uid-{name}",
                            "creationTimestamp": started or "2026-12-01T00:00:00Z"}
    if ours:
        meta["labels"] = {logic.SCHEDULE: "orders"}
    meta.update(extra)
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if bid:
        status.update(backupId=bid, parentId=parent, startedAt=started,
                      completedAt=started)
    return {"metadata": meta, "spec": {"targetRef": {"name": "orders"}, "pinned": pinned},
            "status": status}


def test_a_due_slot_creates_one_labelled_unowned_backup() -> None:
    sched = schedule(full="0 * * * *")
    assert logic.plan(sched, [], utc(2026, 12, 2, 10, 59)).create is None
    p = logic.plan(sched, [], utc(2026, 12, 2, 11, 0, 3))
    assert p.create is not None
    assert (p.create.name, p.create.type) == ("orders-full-20261202t1100", "full")
    assert p.status.full is not None
    assert p.status.full.last_schedule_time == utc(2026, 12, 2, 11)
    assert p.status.full.next_schedule_time == utc(2026, 12, 2, 12)
    assert p.status.active == ["orders-full-20261202t1100"]
    body = scheduled_backup(sched, p.create)
    assert "ownerReferences" not in body["metadata"]
    assert body["metadata"]["labels"][logic.SCHEDULE] == "orders"
    assert_golden("scheduled_backup", body)


def test_a_backup_made_before_a_lost_status_write_is_recorded_not_remade() -> None:
    sched = schedule(full="0 * * * *")
    made = backup("orders-full-20261202t1100", phase=None)
    p = logic.plan(sched, [made], utc(2026, 12, 2, 11, 0, 30))
    assert p.create is None
    assert p.status.full is not None and p.status.full.last_run == "orders-full-20261202t1100"
    again = logic.plan(schedule(p.status.to_kube(), full="0 * * * *"), [made],
                       utc(2026, 12, 2, 11, 1))
    assert again.create is None and not again.events


def test_past_the_starting_deadline_the_run_is_skipped_and_recorded() -> None:
    sched = schedule(full="0 * * * *", startingDeadlineSeconds=60)
    p = logic.plan(sched, [], utc(2026, 12, 2, 13, 1, 1))
    assert p.create is None
    assert p.status.full is not None
    assert p.status.full.skipped == 3  # 11:00 and 12:00 passed over, 13:00 missed
    assert "startingDeadlineSeconds (60)" in (p.status.full.last_skip_reason or "")
    assert [e.reason for e in p.events] == ["MissedSchedule"]
    assert p.status.full.last_schedule_time == utc(2026, 12, 2, 13)


def test_forbid_waits_for_any_running_backup_of_the_target() -> None:
    sched = schedule(incremental="0 * * * *")
    manual = backup("by-hand", phase="Running", ours=False)
    p = logic.plan(sched, [manual, backup("old", bid="20261201T000000.000001Z")],
                   utc(2026, 12, 2, 11, 0, 1))
    assert p.create is None and not p.cancel
    assert p.status.incremental is not None
    assert p.status.incremental.last_schedule_time is None  # still due next look
    cond = next(c for c in p.status.conditions if c.type == "Scheduled")
    assert cond.reason == "Waiting" and "by-hand" in cond.message


def test_replace_cancels_only_the_schedules_own_running_backup() -> None:
    sched = schedule(full="0 * * * *", concurrencyPolicy="Replace")
    mine = backup("orders-full-20261202t1000", phase="Running")
    p = logic.plan(sched, [mine], utc(2026, 12, 2, 11, 0, 1))
    assert p.cancel == ["orders-full-20261202t1000"] and p.create is not None
    manual = backup("by-hand", phase="Pending", ours=False)
    p = logic.plan(sched, [mine, manual], utc(2026, 12, 2, 11, 0, 1))
    assert p.create is None and not p.cancel


def test_suspend_skips_slots_and_says_so() -> None:
    p = logic.plan(schedule(full="0 * * * *", suspend=True), [], utc(2026, 12, 2, 11, 0, 1))
    assert p.create is None
    assert p.status.full is not None and p.status.full.last_skip_reason == "suspended"
    cond = next(c for c in p.status.conditions if c.type == "Scheduled")
    assert (cond.status, cond.reason) == ("False", "Suspended")


def test_an_incremental_without_a_full_to_build_on_is_promoted() -> None:
    p = logic.plan(schedule(incremental="0 * * * *"), [], utc(2026, 12, 2, 11, 0, 1))
    assert p.create is not None
    assert (p.create.name, p.create.type) == ("orders-incremental-20261202t1100", "full")
    assert p.status.last_promotion and "no completed backup" in p.status.last_promotion
    assert "Promoted" in [e.reason for e in p.events]


def test_runner_promotion_is_reported_once() -> None:
    done = backup("orders-incremental-20261202t1000", bid="20261202T100000.000001Z",
                  started="2026-12-02T10:00:00Z",
                  annotations={logic.SCHEDULED_TYPE: "incremental"})
    done["status"]["type"] = "full"
    p = logic.plan(schedule(incremental="0 * * * *"), [done], utc(2026, 12, 2, 10, 30))
    assert p.status.last_promotion and "runner promoted" in p.status.last_promotion
    again = logic.plan(schedule(p.status.to_kube(), incremental="0 * * * *"), [done],
                       utc(2026, 12, 2, 10, 31))
    assert "Promoted" not in [e.reason for e in again.events]


def test_the_strongest_type_in_a_slot_covers_the_others() -> None:
    sched = schedule(full="0 2 * * *", incremental="0 */2 * * *")
    p = logic.plan(sched, [backup("x", bid="20261201T000000.000001Z")], utc(2026, 12, 3, 2, 0, 1))
    assert p.create is not None and p.create.name == "orders-full-20261203t0200"
    assert p.status.incremental is not None
    assert "covered by the full run" in (p.status.incremental.last_skip_reason or "")


def test_verify_is_due_on_its_own_cron() -> None:
    p = logic.plan(schedule(verify="0 5 * * *"), [], utc(2026, 12, 3, 5, 0, 1))
    assert p.verify_slot == utc(2026, 12, 3, 5) and p.create is None
    target = samples.target()
    from safehold.api.target import BackupTarget

    job = verify_job(schedule(verify="0 5 * * *"), BackupTarget.from_body(target),
                     "verify-orders-0123456789", Settings())
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "BackupSchedule"
    assert_golden("scheduled_verify_job", job)


# ---------------------------------------------------------------- retention

F1, I1, I2 = "20261125T020000.000001Z", "20261125T060000.000001Z", "20261125T100000.000001Z"
F2, I3 = "20261202T020000.000001Z", "20261202T060000.000001Z"


def chains() -> list[dict[str, Any]]:
    return [
        backup("f1", bid=F1, started="2026-11-25T02:00:00Z"),
        backup("i1", bid=I1, parent=F1, started="2026-11-25T06:00:00Z"),
        backup("i2", bid=I2, parent=I1, started="2026-11-25T10:00:00Z"),
        backup("f2", bid=F2, started="2026-12-02T02:00:00Z"),
        backup("i3", bid=I3, parent=F2, started="2026-12-02T06:00:00Z"),
    ]


def test_retention_prunes_whole_old_chains_and_keeps_what_the_newest_needs() -> None:
    sched = schedule(full="0 2 * * 0", retention={"keepLast": 1})
    verdict = logic.retention(sched, chains(), utc(2026, 12, 2, 12))
    assert sorted(verdict.prune) == ["f1", "i1", "i2"]  # f2 stays: i3 needs it
    assert verdict.status is not None and verdict.status.kept == 2
    assert {p.name: p.backup_id for p in verdict.status.pruned}["f1"] == F1


def test_pinned_backups_and_their_chain_stay() -> None:
    items = chains()
    items[1]["spec"]["pinned"] = True  # i1, which needs f1
    verdict = logic.retention(schedule(full="0 2 * * 0", retention={"keepLast": 1}), items,
                              utc(2026, 12, 2, 12))
    assert sorted(verdict.prune) == ["i2"]


def test_manual_backups_are_counted_never_pruned() -> None:
    items = chains()
    items[0]["metadata"].pop("labels")  # f1 was taken by hand
    verdict = logic.retention(schedule(full="0 2 * * 0", retention={"keepLast": 1}), items,
                              utc(2026, 12, 2, 12))
    assert sorted(verdict.prune) == ["i1", "i2"]


def test_a_running_backups_parent_is_kept() -> None:
    items = chains()
    running = backup("i4", phase="Running")
    running["status"].update(backupId="20261202T100000.000001Z", parentId=I2)
    verdict = logic.retention(schedule(full="0 2 * * 0", retention={"keepLast": 1}),
                              [*items, running], utc(2026, 12, 2, 12))
    assert verdict.prune == {}


def test_no_retention_prunes_nothing_and_pruned_backups_wait_for_the_finalizer() -> None:
    assert logic.retention(schedule(full="@daily"), chains(), utc(2026, 12, 2)).prune == {}
    marked = backup("f1", bid=F1, annotations={logic.PRUNED: "no rule keeps it"})
    marked["spec"]["deletionPolicy"] = "Delete"
    sched = schedule(full="@daily")
    assert logic.to_delete(sched, [marked]) == []
    marked["metadata"]["finalizers"] = [logic.FINALIZER]
    assert logic.to_delete(sched, [marked]) == ["f1"]


def test_pruned_backups_are_deleted_one_generation_at_a_time_children_first() -> None:
    items = chains()[:3]
    for b in items:
        b["metadata"].update(annotations={logic.PRUNED: "no rule keeps it"},
                             finalizers=[logic.FINALIZER])
        b["spec"]["deletionPolicy"] = "Delete"
    sched = schedule(full="@daily")
    assert logic.to_delete(sched, items) == ["i2"]
    items[2]["metadata"]["deletionTimestamp"] = "2026-12-02T12:00:00Z"
    assert logic.to_delete(sched, items) == []  # i1 waits until i2 (and its data) is gone
    assert logic.to_delete(sched, items[:2]) == ["i1"]
    assert logic.to_delete(sched, items[:1]) == ["f1"]


def test_a_berlin_schedule_on_the_spring_day_fires_once_at_the_jump() -> None:
    sched = schedule(full="30 2 * * *", timeZone="Europe/Berlin")
    sched = sched.model_copy(update={"metadata": sched.metadata.model_copy(update={
        "creation_timestamp": utc(2026, 3, 28, 12)})})
    assert logic.plan(sched, [], utc(2026, 3, 29, 0, 59)).create is None
    p = logic.plan(sched, [], utc(2026, 3, 29, 1, 0, 2))
    assert p.create is not None and p.create.name == "orders-full-20260329t0100"
    assert p.status.full is not None
    assert p.status.full.next_schedule_time == utc(2026, 3, 30, 0, 30)


def test_bad_cron_and_time_zone_in_the_spec_name_the_field_and_the_fix() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        schedule(incremental="61 */4 * * *")  # the CRD's pattern passes it; croniter does not
    text = str(err.value)
    assert "incremental: invalid cron expression '61 */4 * * *'" in text
    assert "0 2 * * *" in text
    with pytest.raises(ValidationError, match=r"unknown time zone 'Mars/Olympus'.*Europe/Berlin"):
        schedule(full="@daily", timeZone="Mars/Olympus")
