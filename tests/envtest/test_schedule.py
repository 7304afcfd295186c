"""BackupSchedule against a real control plane, on a clock the test controls.

The operator runs in-process, so the test swaps the schedule handler's clock for one it moves
by hand: a slot an hour away "arrives" at once, and stopping the operator "across a scheduled
time" is stopping it, moving the clock, and starting it again. Pods never run: the test plays
the kubelet (finish_pod) where a backup must complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from safehold.api.result import TaskResult
from safehold.api.slots import Cron
from safehold.controller.handlers import schedules
from tests.envtest.conftest import Cluster, events_include, eventually, finish_pod
from tests.unit.controller import samples

LABEL = "safehold.dev/schedule"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def to(self, when: datetime) -> None:
        assert when >= self.now, "the clock only moves forward"
        self.now = when


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    c = Clock()
    monkeypatch.setattr(schedules, "CLOCK", c)
    monkeypatch.setenv("SAFEHOLD_SCHEDULE_POLL_SECONDS", "0.3")
    yield c


def schedule(name: str = "orders", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "safehold.dev/v1alpha1", "kind": "BackupSchedule",
            "metadata": {"name": name}, "spec": {"targetRef": {"name": "orders"}, **spec}}


def scheduled(k8s: Cluster, name: str = "orders") -> list[dict[str, Any]]:
    items = k8s.custom.list_namespaced_custom_object(
        "safehold.dev", "v1alpha1", k8s.ns, "backups", label_selector=f"{LABEL}={name}")["items"]
    return sorted(items, key=lambda b: b["metadata"]["name"])


def next_slot(k8s: Cluster, kind: str = "full") -> datetime:
    text = eventually(lambda: (k8s.status("backupschedules", "orders").get(kind) or {})
                      .get("nextScheduleTime"), f"status.{kind}.nextScheduleTime")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_schedule_fires_once_per_slot_and_never_owns_its_backups(
    k8s: Cluster, operator: Any, clock: Clock
) -> None:
    k8s.create("backuptargets", samples.target())
    with operator():
        k8s.create("backupschedules", schedule(full="0 * * * *"))
        slot = next_slot(k8s)
        assert slot == Cron.parse("0 * * * *").next_after(clock.now)
        assert not scheduled(k8s)
        clock.to(slot + timedelta(seconds=5))
        name = f"orders-full-{slot:%Y%m%dt%H%M}"
        eventually(lambda: scheduled(k8s), "the scheduled Backup")
        status = eventually(lambda: (s := k8s.status("backupschedules", "orders"))
                            .get("lastScheduleTime") and s, "the slot recorded")
        clock.to(slot + timedelta(seconds=40))
        eventually(lambda: k8s.status("backups", name).get("phase") == "Running",
                   "the Backup's Job running")
        assert status["active"] == [name]
        # deleting the schedule stops it and leaves its backups alone
        k8s.delete("backupschedules", "orders")
        eventually(lambda: k8s.get("backupschedules", "orders") is None, "schedule gone")
        events_include(k8s, "orders", {"BackupCreated"})
    backups = scheduled(k8s)
    assert [b["metadata"]["name"] for b in backups] == [name]
    assert "ownerReferences" not in backups[0]["metadata"]
    assert status["full"]["nextScheduleTime"] == (slot + timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def test_exactly_once_across_an_operator_restart(
    k8s: Cluster, operator: Any, clock: Clock
) -> None:
    k8s.create("backuptargets", samples.target())
    with operator():
        k8s.create("backupschedules", schedule(full="0 * * * *"))
        slot = next_slot(k8s)
    # the operator is down when the slot passes
    clock.to(slot + timedelta(minutes=20))
    assert not scheduled(k8s)
    with operator():
        eventually(lambda: scheduled(k8s), "the missed slot run after the restart")
        eventually(lambda: k8s.status("backupschedules", "orders").get("lastScheduleTime"),
                   "the slot recorded")
    assert [b["metadata"]["name"] for b in scheduled(k8s)] == [f"orders-full-{slot:%Y%m%dt%H%M}"]
    # the worst crash: the Backup was made but the schedule's status write was lost
    k8s.patch_status("backupschedules", "orders", {"full": None, "lastScheduleTime": None})
    with operator():
        eventually(lambda: (k8s.status("backupschedules", "orders").get("full") or {})
                   .get("lastScheduleTime"), "the slot recorded again")
        clock.to(clock.now + timedelta(seconds=30))
        eventually(lambda: (k8s.status("backupschedules", "orders").get("full") or {})
                   .get("lastRun"), "the run recorded")
    assert len(scheduled(k8s)) == 1


def test_a_slot_missed_beyond_the_starting_deadline_is_skipped_and_recorded(
    k8s: Cluster, operator: Any, clock: Clock
) -> None:
    k8s.create("backuptargets", samples.target())
    with operator():
        k8s.create("backupschedules", schedule(full="0 * * * *", startingDeadlineSeconds=300))
        slot = next_slot(k8s)
    clock.to(slot + timedelta(minutes=6))
    with operator():
        full = eventually(lambda: (s := k8s.status("backupschedules", "orders").get("full")
                                   or {}).get("skipped") and s, "the skipped slot recorded")
        events_include(k8s, "orders", {"MissedSchedule"})
    assert not scheduled(k8s)
    assert "startingDeadlineSeconds (300)" in full["lastSkipReason"]
    assert full["lastScheduleTime"].startswith(f"{slot:%Y-%m-%dT%H:%M}")
    events = [e for e in k8s.events("orders") if e.reason == "MissedSchedule"]
    assert len(events) == 1 and events[0].type == "Warning"


def test_invalid_time_zone_is_reported_not_guessed(
    k8s: Cluster, operator: Any, clock: Clock
) -> None:
    k8s.create("backuptargets", samples.target())
    with operator():
        k8s.create("backupschedules", schedule(full="@daily", timeZone="Europe/Berln"))
        cond = eventually(lambda: next((c for c in k8s.status("backupschedules", "orders")
                                        .get("conditions") or [] if c["type"] == "Scheduled"),
                                       None), "the Scheduled condition")
    assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec")
    assert "Europe/Berln" in cond["message"] and "Europe/Berlin" in cond["message"]


def _complete(k8s: Cluster, name: str, kind: str, parent: str | None, chain: str | None
              ) -> str:
    bk = eventually(lambda: k8s.get("backups", name), f"Backup {name}")
    job = eventually(lambda: k8s.jobs(bk["metadata"]["uid"], "backup"), f"{name}'s Job")[0]
    bid = eventually(lambda: k8s.status("backups", name).get("backupId"), f"{name}'s id")
    result = TaskResult(kind="backup", phase="Completed", backup_id=bid, type=kind,
                        parent_id=parent, chain_id=chain or bid, raw_bytes=100,
                        stored_bytes=50, seconds=1.0)
    finish_pod(k8s, job, exit_code=0, message=result.to_termination_message())
    eventually(lambda: k8s.status("backups", name).get("phase") == "Completed",
               f"{name} Completed")
    return str(bid)


def test_retention_prunes_an_old_chain_after_several_runs(
    k8s: Cluster, operator: Any, clock: Clock
) -> None:
    k8s.create("backuptargets", samples.target())
    spec = {"full": "0 0 * * *", "incremental": "0 * * * *", "retention": {"keepLast": 2}}
    names: list[str] = []
    with operator():
        k8s.create("backupschedules", schedule(**spec))
        full_at = next_slot(k8s, "full")
        chain: str | None = None
        parent: str | None = None
        # day 1: full, two incrementals; day 2: full, one incremental
        for when, kind in ((full_at, "full"), (full_at + timedelta(hours=1), "incremental"),
                           (full_at + timedelta(hours=2), "incremental"),
                           (full_at + timedelta(days=1), "full"),
                           (full_at + timedelta(days=1, hours=1), "incremental")):
            clock.to(when + timedelta(seconds=2))
            name = f"orders-{kind}-{when:%Y%m%dt%H%M}"
            names.append(name)
            if kind == "full":
                parent = chain = None
            bid = _complete(k8s, name, kind, parent, chain)
            chain, parent = chain or bid, bid
        old = names[:3]
        # the first chain is marked (deletionPolicy Delete) and deleted by its finalizer's
        # Jobs, children first: a parent's object is deleted once its child's is gone
        for name in reversed(old):
            job = eventually(lambda n=name: [  # type: ignore[misc]
                j for j in k8s.jobs(None, "delete")
                if j.metadata.annotations.get("safehold.dev/owner-name") == n],
                f"the delete Job of {name}")[0]
            assert all(k8s.get("backups", n) for n in old[:old.index(name)])
            finish_pod(k8s, job, exit_code=0)
            eventually(lambda n=name: k8s.get("backups", n) is None,  # type: ignore[misc]
                       f"{name} deleted")
        status = eventually(lambda: (s := k8s.status("backupschedules", "orders"))
                            .get("retention", {}).get("pruned") and s, "retention status")
        events_include(k8s, "orders", {"Pruned"})
    assert [b["metadata"]["name"] for b in scheduled(k8s)] == sorted(names[3:])
    pruned = {p["name"]: p["reason"] for p in status["retention"]["pruned"]}
    assert sorted(pruned) == sorted(old)
    assert all("no rule keeps it" in r for r in pruned.values())
    assert status["retention"]["kept"] == 2 and status["retainedFor"] == names[4]
    assert status["lastSuccessfulBackup"] == names[4]


def test_forbid_waits_for_a_manual_backup_then_runs(
    k8s: Cluster, operator: Any, clock: Clock
) -> None:
    k8s.create("backuptargets", samples.target())
    with operator():
        manual = k8s.create("backups", samples.backup("by-hand"))
        eventually(lambda: k8s.status("backups", "by-hand").get("phase") == "Running",
                   "the manual Backup running")
        k8s.create("backupschedules", schedule(full="0 * * * *"))
        slot = next_slot(k8s)
        clock.to(slot + timedelta(seconds=5))
        cond = eventually(lambda: next((c for c in k8s.status("backupschedules", "orders")
                                        .get("conditions") or [] if c["reason"] == "Waiting"),
                                       None), "the run waiting")
        assert "by-hand" in cond["message"] and not scheduled(k8s)
        job = eventually(lambda: k8s.jobs(manual["metadata"]["uid"], "backup"), "Job")[0]
        bid = k8s.status("backups", "by-hand")["backupId"]
        finish_pod(k8s, job, exit_code=0, message=TaskResult(
            kind="backup", phase="Completed", backup_id=bid, type="full", chain_id=bid,
            raw_bytes=1, stored_bytes=1).to_termination_message())
        eventually(lambda: scheduled(k8s), "the scheduled Backup once the manual one finished")
    assert [b["metadata"]["name"] for b in scheduled(k8s)] == [f"orders-full-{slot:%Y%m%dt%H%M}"]


def test_scheduled_verify_reports_a_condition_and_an_event(
    k8s: Cluster, operator: Any, clock: Clock
) -> None:
    from safehold.api.common import ErrorInfo

    k8s.create("backuptargets", samples.target())
    with operator():
        sched = k8s.create("backupschedules", schedule(verify="0 5 * * *"))
        uid = sched["metadata"]["uid"]
        slot = next_slot(k8s, "verify")
        clock.to(slot + timedelta(seconds=1))
        job = eventually(lambda: k8s.jobs(uid, "verify"), "the verify Job")[0]
        assert job.metadata.owner_references[0].kind == "BackupSchedule"
        finish_pod(k8s, job, exit_code=0, message=TaskResult(
            kind="verify", phase="Completed").to_termination_message())
        ok = eventually(lambda: next((c for c in k8s.status("backupschedules", "orders")
                                      .get("conditions") or [] if c["type"] == "Verified"
                                      and c["status"] == "True"), None), "Verified True")
        clock.to(slot + timedelta(days=1, seconds=1))
        second = eventually(lambda: [j for j in k8s.jobs(uid, "verify")
                                     if j.metadata.name != job.metadata.name], "the next verify")
        finish_pod(k8s, second[0], exit_code=4, message=TaskResult.failure("verify", ErrorInfo(
            error_class="IntegrityError", message="object db.pages: SHA-256 mismatch",
            exit_code=4, hint="restore from another backup")).to_termination_message())
        bad = eventually(lambda: next((c for c in k8s.status("backupschedules", "orders")
                                       .get("conditions") or [] if c["type"] == "Verified"
                                       and c["status"] == "False"), None), "Verified False")
        events_include(k8s, "orders", {"Verified", "VerifyFailed"})
    assert ok["reason"] == "Verified"
    assert bad["reason"] == "VerifyFailed" and "SHA-256 mismatch" in bad["message"]
    assert "restore from another backup" in bad["message"]
    reasons = [e.reason for e in k8s.events("orders")]
    assert reasons.count("Verified") == 1 and reasons.count("VerifyFailed") == 1


def test_replace_cancels_the_schedules_running_backup_for_the_next_slot(
    k8s: Cluster, operator: Any, clock: Clock
) -> None:
    k8s.create("backuptargets", samples.target())
    with operator():
        k8s.create("backupschedules", schedule(full="0 * * * *", concurrencyPolicy="Replace"))
        slot = next_slot(k8s)
        first, second = (f"orders-full-{s:%Y%m%dt%H%M}" for s in (slot, slot + timedelta(hours=1)))
        clock.to(slot + timedelta(seconds=1))
        uid = eventually(lambda: k8s.get("backups", first), first)["metadata"]["uid"]
        eventually(lambda: k8s.jobs(uid, "backup"), f"{first}'s Job")
        clock.to(slot + timedelta(hours=1, seconds=1))
        eventually(lambda: k8s.get("backups", second), second)
        eventually(lambda: k8s.get("backups", first) is None, f"{first} cancelled")
        eventually(lambda: not k8s.jobs(uid, "backup"), f"{first}'s Job gone with it")
        events_include(k8s, "orders", {"Replaced"})
    assert [b["metadata"]["name"] for b in scheduled(k8s)] == [second]
