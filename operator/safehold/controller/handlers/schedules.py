"""BackupSchedule: one look per wake-up (the kopf daemon in handlers/__init__.py calls tick).

Each look reads the schedule and its target's Backups fresh from the API server, lets the pure
logic (controller/logic/schedules.py) decide, creates the Backup for a due slot (create-if-absent
by its deterministic name) *before* recording the slot in status, starts a due verify Job,
records a finished verify, runs retention once after each successful backup, deletes the pruned
Backups once their finalizer holds them, and returns how long to sleep: until the next slot,
at most ``SAFEHOLD_SCHEDULE_POLL_SECONDS``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from pydantic import ValidationError

from safehold.api.common import find_condition, set_condition, utcnow
from safehold.api.schedule import BackupSchedule, BackupScheduleStatus, SlotStatus
from safehold.api.slots import stamp
from safehold.api.target import BackupTarget
from safehold.api.validation import describe_validation_error
from safehold.controller import naming, reporting, runtime
from safehold.controller.builders.scheduled import scheduled_backup, verify_job
from safehold.controller.handlers.common import ensure_runner_account, finished, result_of
from safehold.controller.kube import Forbidden, Kube, Obj
from safehold.controller.logic import schedules as logic
from safehold.controller.logic.phase import decide
from safehold.controller.status import write

log = logging.getLogger(__name__)
PLURAL = "backupschedules"
MIN_SLEEP = 0.2

#: the operator's clock; envtests replace it with one they control (no waiting for minutes)
CLOCK: Callable[[], datetime] = utcnow


def tick(namespace: str, name: str) -> float:
    """Look at the schedule once; returns the seconds to sleep before the next look."""
    rt = runtime.get()
    poll = rt.settings.schedule_poll_seconds
    kube = rt.kube
    body = kube.get_custom(PLURAL, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return poll
    try:
        sched = BackupSchedule.from_body(body)
    except ValidationError as exc:
        _invalid(kube, body, describe_validation_error(exc))
        return poll
    now = CLOCK()
    target_name = sched.spec.target_ref.name
    target_body = kube.get_custom("backuptargets", namespace, target_name)
    backups = [b for b in kube.list_custom("backups", namespace)
               if ((b.get("spec") or {}).get("targetRef") or {}).get("name") == target_name]
    plan = logic.plan(sched, backups, now, target_found=target_body is not None)
    status = plan.status
    for victim in plan.cancel:
        kube.delete_custom("backups", namespace, victim)
    if plan.create is not None:
        kube.ensure_custom("backups", scheduled_backup(sched, plan.create))
    if plan.verify_slot is not None and target_body is not None:
        status = _start_verify(kube, sched, BackupTarget.from_body(target_body),
                               plan.verify_slot, status)
    status = _verify_outcome(kube, body, sched, status)
    status = _retention(kube, body, sched, backups, status, now)
    for pruned in logic.to_delete(sched, backups):
        if kube.delete_custom("backups", namespace, pruned):
            log.info("BackupSchedule %s/%s: deleting pruned Backup %s", namespace, name, pruned)
    for event in plan.events:
        kube.event(body, event.reason, event.message, warning=event.warning)
    reporting.schedule_looked(sched, [b for b in backups if b["metadata"].get("labels", {})
                                      .get(logic.SCHEDULE) == name], now)  # gauges
    write(kube, PLURAL, namespace, name, sched.status, status)
    if status.next_schedule_time is None:
        return poll
    wake = (status.next_schedule_time - CLOCK()).total_seconds()
    return max(MIN_SLEEP, min(poll, wake + 0.05))


def _invalid(kube: Kube, body: Obj, problem: str) -> None:
    """A spec the API server accepted but the operator cannot use (e.g. an unknown timeZone)."""
    old = BackupScheduleStatus.model_validate(body.get("status") or {})
    gen = body["metadata"].get("generation")
    message = f"invalid spec: {problem}"
    cond = find_condition(old.conditions, logic.SCHEDULED)
    if cond is not None and cond.reason == "InvalidSpec" and cond.message == message:
        return
    new = old.model_copy(update={"observed_generation": gen, "conditions": list(set_condition(
        old.conditions, logic.SCHEDULED, "False", "InvalidSpec", message, generation=gen))})
    write(kube, PLURAL, body["metadata"]["namespace"], body["metadata"]["name"], old, new)
    kube.event(body, "InvalidSpec", message, warning=True)


# ---------------------------------------------------------------- verify


def _start_verify(kube: Kube, sched: BackupSchedule, target: BackupTarget, slot: datetime,
                  status: BackupScheduleStatus) -> BackupScheduleStatus:
    ns = sched.metadata.namespace or ""
    name = naming.job_name("verify", sched.metadata.name, sched.metadata.uid or "",
                           salt=stamp(slot))
    ensure_runner_account(kube, ns)
    try:
        kube.ensure_job(verify_job(sched, target, name, runtime.get().settings))
    except Forbidden as exc:
        log.warning("cannot create verify Job %s: %s", name, exc)
        return status
    slot_status = (status.verify or SlotStatus()).model_copy(update={"last_run": name})
    return status.model_copy(update={
        "verify": slot_status, "last_verify_job": name,
        "conditions": list(set_condition(
            status.conditions, logic.VERIFIED, "Unknown", "Verifying",
            f"verify Job {name} checks every backup of {target.metadata.name}",
            generation=sched.metadata.generation)),
    })


def _verify_outcome(kube: Kube, body: Obj, sched: BackupSchedule,
                    status: BackupScheduleStatus) -> BackupScheduleStatus:
    """A finished verify Job -> the Verified condition and an event (once)."""
    cond = find_condition(status.conditions, logic.VERIFIED)
    name = status.last_verify_job
    if name is None or cond is None or cond.reason != "Verifying":
        return status
    ns = sched.metadata.namespace or ""
    job = kube.get_job(ns, name)
    if job is not None and not finished(job):
        return status
    if job is None:
        ok, reason, message = False, "VerifyJobGone", f"verify Job {name} vanished before it" \
            " reported"
    else:
        result = result_of(decide(job, kube.job_pods(ns, job)), "verify")
        if result.ok:
            ok, reason = True, "Verified"
            message = f"verify Job {name}: the backups of {sched.spec.target_ref.name} verified"
        else:
            error = result.error
            ok, reason = False, "VerifyFailed"
            message = f"verify Job {name}: " + (
                f"{error.error_class}: {error.message}"
                + (f" (hint: {error.hint})" if error.hint else "") if error else "failed")
    kube.event(body, reason, message, warning=not ok)
    reporting.verify_finished(kube, body, sched, ok, message)  # metric, notification
    return status.model_copy(update={"conditions": list(set_condition(
        status.conditions, logic.VERIFIED, "True" if ok else "False", reason, message,
        generation=sched.metadata.generation))})


# ---------------------------------------------------------------- retention


def _retention(kube: Kube, body: Obj, sched: BackupSchedule, backups: list[Obj],
               status: BackupScheduleStatus, now: datetime) -> BackupScheduleStatus:
    """Once per successful backup: mark what retention prunes (deletionPolicy Delete and an
    annotation saying why); a later look deletes them once the finalizer holds them."""
    newest = logic.newest_success(sched, backups)
    if sched.spec.retention is None or newest is None or newest == status.retained_for:
        return status
    verdict = logic.retention(sched, backups, now)
    ns = sched.metadata.namespace or ""
    for name, reason in verdict.prune.items():
        kube.patch_custom("backups", ns, name, {
            "metadata": {"annotations": {logic.PRUNED: reason[:1024]}},
            "spec": {"deletionPolicy": "Delete"},
        })
    if verdict.prune:
        kube.event(body, "Pruned", f"retention after {newest} prunes "
                   + "; ".join(f"{n} ({r})" for n, r in verdict.prune.items()))
        reporting.retention_pruned(kube, body, sched, verdict.prune)  # metric, notification
    return status.model_copy(update={"retention": verdict.status, "retained_for": newest})
