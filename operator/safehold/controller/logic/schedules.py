"""BackupSchedule decisions (pure): what to create now, what to skip, what retention prunes.

Inputs are the schedule, the Backup objects of its target (as the API server returns them) and
``now``; outputs are a new status and the actions for the handler. The cron arithmetic is
:mod:`safehold.api.slots`, the retention rules :mod:`safehold.api.retention_select`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from safehold.api.common import ConditionStatus, set_condition
from safehold.api.retention_select import Candidate, select
from safehold.api.schedule import (
    BackupSchedule,
    BackupScheduleStatus,
    PrunedBackup,
    RetentionStatus,
    SlotStatus,
)
from safehold.api.slots import TYPES, Cron, due, run_name, strongest, zone
from safehold.controller.naming import GROUP

Obj = dict[str, Any]

SCHEDULE = f"{GROUP}/schedule"  # label on the Backups a schedule creates (not an owner)
SCHEDULED_TYPE = f"{GROUP}/scheduled-type"  # annotation: the type the cron asked for
SLOT = f"{GROUP}/slot"  # annotation: the slot (UTC, ISO 8601) a Backup was made for
PRUNED = f"{GROUP}/pruned"  # annotation: why retention pruned this Backup
FINALIZER = f"{GROUP}/delete-data"
SCHEDULED = "Scheduled"
VERIFIED = "Verified"


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Run:
    """A Backup to create: ``kind`` is what the cron asked for, ``type`` what it will take."""

    kind: str
    slot: datetime
    name: str
    type: str
    promoted: str | None = None


@dataclass
class Plan:
    status: BackupScheduleStatus
    create: Run | None = None
    verify_slot: datetime | None = None
    cancel: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


# ---------------------------------------------------------------- reading Backup objects


def phase(b: Obj) -> str:
    return str((b.get("status") or {}).get("phase") or "")


def deleting(b: Obj) -> bool:
    return bool(b["metadata"].get("deletionTimestamp"))


def finished(b: Obj) -> bool:
    return phase(b) in ("Completed", "Failed", "PartiallyFailed")


def of_schedule(b: Obj, name: str) -> bool:
    return (b["metadata"].get("labels") or {}).get(SCHEDULE) == label_value(name)


def label_value(name: str) -> str:
    """The schedule label's value: its name (label values stop at 63 characters)."""
    return name[:63].rstrip("-.")


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _when(b: Obj, *keys: str) -> datetime:
    st = b.get("status") or {}
    for key in keys:
        if when := _time(st.get(key)):
            return when
    created = _time(b["metadata"].get("creationTimestamp"))
    assert created is not None, "API objects carry a creationTimestamp"
    return created


def active(backups: list[Obj]) -> list[Obj]:
    """Backups running or about to run (not finished, not being deleted)."""
    return [b for b in backups if not finished(b) and not deleting(b)]


# ---------------------------------------------------------------- firing


def plan(sched: BackupSchedule, backups: list[Obj], now: datetime, *,
         target_found: bool = True) -> Plan:
    """What the schedule does at ``now``. ``backups``: every Backup of the schedule's target in
    the namespace (manual ones and other schedules' too: Forbid counts them)."""
    spec, name = sched.spec, sched.metadata.name
    gen = sched.metadata.generation
    since = sched.metadata.creation_timestamp or now
    deadline = (timedelta(seconds=spec.starting_deadline_seconds)
                if spec.starting_deadline_seconds is not None else None)
    status = sched.status
    events: list[Event] = []
    slots: dict[str, SlotStatus] = {}
    candidates: list[tuple[str, datetime]] = []
    verify_slot = None
    for kind, expression in spec.crons().items():
        cron = Cron.parse(expression, spec.time_zone)
        st: SlotStatus = getattr(status, kind) or SlotStatus()
        d = due(cron, now, st.last_schedule_time, since, deadline)
        update: dict[str, Any] = {"next_schedule_time": d.next_time}
        skipped = (st.skipped or 0) + d.passed_over
        if d.passed_over:
            update["last_skip_reason"] = (f"{d.passed_over} earlier slot(s) passed while the"
                                          " operator was not running: only the latest counts")
        if d.slot is not None:
            why = None
            if spec.suspend:
                why = "suspended"
            elif d.action == "skip":
                why = (f"missed by {int(d.late_by.total_seconds())}s, more than"
                       f" startingDeadlineSeconds ({spec.starting_deadline_seconds})")
                events.append(Event("MissedSchedule", f"{kind} run of {d.slot:%Y-%m-%d %H:%M}"
                                    f" UTC skipped: {why}", warning=True))
            elif not target_found:
                why = f"BackupTarget {spec.target_ref.name} not found"
                events.append(Event("TargetNotFound", f"{kind} run of"
                                    f" {d.slot:%Y-%m-%d %H:%M} UTC skipped: {why}", warning=True))
            if why is not None:
                skipped += 1
                update.update(last_schedule_time=d.slot, last_skip_reason=why)
            elif kind == "verify":
                verify_slot = d.slot
                update.update(last_schedule_time=d.slot)
            else:
                candidates.append((kind, d.slot))
        if skipped:
            update["skipped"] = skipped
        slots[kind] = st.model_copy(update=update)

    out = Plan(status, events=events)
    out.verify_slot = verify_slot
    waiting = _fire(sched, backups, candidates, slots, out)

    # the whole schedule's summary, and the outcome of its Backups
    mine = [b for b in backups if of_schedule(b, name)]
    nexts = [s.next_schedule_time for s in slots.values() if s.next_schedule_time]
    lasts = [s.last_schedule_time for k, s in slots.items()
             if s.last_schedule_time and k != "verify"]
    update = {k: slots.get(k) for k in (*TYPES, "verify")}
    update.update(
        observed_generation=gen,
        next_schedule_time=min(nexts) if nexts else None,
        last_schedule_time=max(lasts) if lasts else status.last_schedule_time,
        active=sorted(b["metadata"]["name"] for b in active(mine)),
    )
    update.update(_outcomes(mine, status, out))
    condition: tuple[ConditionStatus, str, str] = (
        ("False", "Suspended", "suspend is true: no new backups")
                 if spec.suspend else
                 ("False", "TargetNotFound", f"BackupTarget {spec.target_ref.name} not found")
                 if not target_found else
                 ("True", "Waiting", waiting) if waiting else
                 ("True", "Scheduled", "next run at " + (
                     f"{min(nexts):%Y-%m-%d %H:%M} UTC" if nexts else "-")))
    update["conditions"] = list(set_condition(status.conditions, SCHEDULED, *condition,
                                              generation=gen, now=now))
    out.status = status.model_copy(update=update)
    if out.create is not None:
        out.status = out.status.model_copy(update={
            "active": sorted({*out.status.active, out.create.name})})
    return out


def _fire(sched: BackupSchedule, backups: list[Obj], candidates: list[tuple[str, datetime]],
          slots: dict[str, SlotStatus], out: Plan) -> str | None:
    """Of the due backup runs, create the strongest (it covers the others), if concurrency
    allows; records the slots it handles. Returns why the run waits, if it does."""
    if not candidates:
        return None
    name, spec = sched.metadata.name, sched.spec
    kind = strongest([k for k, _ in candidates])
    slot = max(s for k, s in candidates if k == kind)
    run = run_name(name, kind, slot)
    existing = {b["metadata"]["name"] for b in backups}
    running = [b for b in active(backups) if b["metadata"]["name"] != run]
    if run not in existing and running:
        ours = [b["metadata"]["name"] for b in running if of_schedule(b, name)]
        if spec.concurrency_policy == "Replace" and len(ours) == len(running):
            out.cancel = ours
            out.events.append(Event("Replaced", f"concurrencyPolicy Replace: cancelled"
                                    f" {', '.join(ours)} for the {kind} run of"
                                    f" {slot:%Y-%m-%d %H:%M} UTC", warning=True))
        else:
            # Forbid (or another writer's backup under Replace): the run waits for it; a
            # starting deadline turns a long wait into a skip
            names = ", ".join(sorted(b["metadata"]["name"] for b in running))
            waiting = f"{kind} run of {slot:%Y-%m-%d %H:%M} UTC waits for {names}"
            if _new_wait(sched, waiting):
                out.events.append(Event("Waiting", waiting))
            return waiting
    for other, when in candidates:
        if other != kind:
            st = slots[other]
            slots[other] = st.model_copy(update={
                "last_schedule_time": when, "skipped": (st.skipped or 0) + 1,
                "last_skip_reason": f"covered by the {kind} run {run}"})
    slots[kind] = slots[kind].model_copy(update={"last_schedule_time": slot, "last_run": run})
    if run in existing:
        return None  # made before a restart lost the status write: record it, never make another
    taken, promoted = kind, None
    if kind != "full" and not any(phase(b) == "Completed" and not deleting(b)
                                  for b in backups):
        taken = "full"
        promoted = (f"{run} taken as a full: the target has no completed backup for a {kind}"
                    " to build on")
        out.events.append(Event("Promoted", promoted))
    out.create = Run(kind, slot, run, taken, promoted)
    out.events.append(Event("BackupCreated", f"{kind} run of {slot:%Y-%m-%d %H:%M} UTC:"
                            f" created Backup {run}"
                            + (" (as a full)" if promoted else "")))
    return None


def _new_wait(sched: BackupSchedule, message: str) -> bool:
    old = next((c for c in sched.status.conditions if c.type == SCHEDULED), None)
    return old is None or old.message != message


def _outcomes(mine: list[Obj], status: BackupScheduleStatus, out: Plan) -> dict[str, Any]:
    """Last success and failure of the schedule's Backups; promotions the runner made."""
    update: dict[str, Any] = {}
    done = [b for b in mine if phase(b) == "Completed"]
    failed = [b for b in mine if phase(b) in ("Failed", "PartiallyFailed")]
    if done:
        newest = max(done, key=lambda b: _when(b, "completedAt"))
        update.update(last_successful_backup=newest["metadata"]["name"],
                      last_success_time=_when(newest, "completedAt"))
        asked = (newest["metadata"].get("annotations") or {}).get(SCHEDULED_TYPE)
        took = (newest.get("status") or {}).get("type")
        if asked and took and asked != took and not (status.last_promotion or "").startswith(
                newest["metadata"]["name"] + " "):
            update["last_promotion"] = (f"{newest['metadata']['name']} taken as a {took}: no"
                                        f" usable chain for a {asked} (the runner promoted it)")
            out.events.append(Event("Promoted", update["last_promotion"]))
    if out.create is not None and out.create.promoted:
        update["last_promotion"] = out.create.promoted
    if failed:
        newest = max(failed, key=lambda b: _when(b, "completedAt"))
        update.update(last_failed_backup=newest["metadata"]["name"],
                      last_failure_time=_when(newest, "completedAt"))
    return update


# ---------------------------------------------------------------- retention


@dataclass(frozen=True)
class Prune:
    """Retention's verdict: the schedule's Backups to prune (name -> reason), and a summary."""

    prune: dict[str, str]
    status: RetentionStatus | None


def retention(sched: BackupSchedule, backups: list[Obj], now: datetime) -> Prune:
    """Chain-aware retention over every Completed Backup of the target; only this schedule's
    own Backups are pruned (manual and imported ones are counted by the rules, never pruned).
    Pinned Backups, the newest, and every backup a kept or running one builds on stay."""
    policy = sched.spec.retention
    if policy is None:
        return Prune({}, None)
    name = sched.metadata.name
    live = [b for b in backups if not deleting(b)]
    complete = [b for b in live if phase(b) == "Completed"
                and (b.get("status") or {}).get("backupId")]
    by_id = {b["status"]["backupId"]: b for b in complete}
    pinned = {i for i, b in by_id.items() if (b.get("spec") or {}).get("pinned")}
    for b in active(live):  # a running incremental needs its parents (if it named them yet)
        st = b.get("status") or {}
        pinned |= {p for p in (st.get("parentId"), st.get("chainId")) if p in by_id}
    candidates = [Candidate(i, b["status"].get("parentId"), _when(b, "startedAt", "completedAt"))
                  for i, b in by_id.items()]
    decisions = select(candidates, policy, now, zone(sched.spec.time_zone), pinned=pinned)
    prune: dict[str, str] = {}
    for d in decisions:
        b = by_id[d.backup_id]
        if not d.keep and of_schedule(b, name):
            prune[b["metadata"]["name"]] = "; ".join(d.reasons)
    ids = {b["metadata"]["name"]: i for i, b in by_id.items()}
    pruned = [PrunedBackup(name=n, backup_id=ids[n], reason=r) for n, r in prune.items()]
    return Prune(prune, RetentionStatus(time=now, kept=len(decisions) - len(prune),
                                        pruned=pruned))


def to_delete(sched: BackupSchedule, backups: list[Obj]) -> list[str]:
    """The schedule's pruned Backups ready to delete: deletionPolicy Delete is set and the
    operator's finalizer holds them, so deleting the object deletes the data. A parent waits
    until no Backup object builds on it any more (its pruned children are gone, data and all):
    the runner refuses to delete a backup another one in the repository still needs."""
    parents = {(b.get("status") or {}).get("parentId") for b in backups}
    ready = [b for b in backups
             if of_schedule(b, sched.metadata.name) and not deleting(b)
             and (b.get("status") or {}).get("backupId") not in parents
             and (b["metadata"].get("annotations") or {}).get(PRUNED)
             and (b.get("spec") or {}).get("deletionPolicy") == "Delete"
             and FINALIZER in (b["metadata"].get("finalizers") or [])]
    ready.sort(key=lambda b: (_when(b, "startedAt", "completedAt"), b["metadata"]["name"]),
               reverse=True)
    return [b["metadata"]["name"] for b in ready]


def newest_success(sched: BackupSchedule, backups: list[Obj]) -> str | None:
    """The schedule's newest Completed Backup (retention runs once after each)."""
    done = [b for b in backups if of_schedule(b, sched.metadata.name)
            and phase(b) == "Completed" and not deleting(b)]
    if not done:
        return None
    return str(max(done, key=lambda b: _when(b, "completedAt"))["metadata"]["name"])
