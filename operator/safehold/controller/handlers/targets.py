"""BackupTarget: a check Job on create, on spec change and periodically -> the Ready condition."""

from __future__ import annotations

import kopf

from safehold.api.common import utcnow
from safehold.api.target import BackupTarget
from safehold.controller import naming, reporting, runtime
from safehold.controller.builders import tasks
from safehold.controller.handlers import adoption, rotation
from safehold.controller.handlers.common import (
    ensure_generated_key,
    ensure_runner_account,
    finished,
    result_of,
    settle_existing,
)
from safehold.controller.kube import Forbidden, Obj
from safehold.controller.logic import schedule
from safehold.controller.logic.phase import Verdict, decide
from safehold.controller.status import write

PLURAL = "backuptargets"


def start_check(body: Obj, salt: str) -> None:
    """Create the check Job for this generation (or periodic slot) unless it exists."""
    rt = runtime.get()
    kube = rt.kube
    target = BackupTarget.from_body(body)
    ns = target.metadata.namespace or ""
    if target.metadata.deletion_timestamp:
        return
    ensure_runner_account(kube, ns)
    key_secret = ensure_generated_key(kube, body)
    new = target.status
    if key_secret and new.generated_key_secret != key_secret:
        new = new.key_generated(key_secret)
    name = naming.job_name("check", target.metadata.name, target.metadata.uid or "", salt)
    try:
        job, created = kube.ensure_job(tasks.check_job(target, name, rt.settings))
    except Forbidden as exc:
        raise kopf.TemporaryError(f"cannot create check Job {name}: {exc}", delay=60) from None
    # a restart finding this generation's check already done and recorded: nothing to redo
    recorded = (not created and finished(job) and new.last_check_time is not None
                and new.observed_generation == target.metadata.generation)
    if new.check_job != name and not recorded:
        new = new.checking(name, target.metadata.generation)
    write(kube, PLURAL, ns, target.metadata.name, target.status, new)
    if created:
        kube.event(body, "Checking", f"check Job {name} tests the connection and the repository")
    if not recorded:
        settle_existing(kube, job, created, on_job)


def maybe_recheck(body: Obj) -> None:
    """The periodic timer: a new check when the last one is older than the interval."""
    rt = runtime.get()
    target = BackupTarget.from_body(body)
    now = utcnow()
    interval = rt.settings.check_interval_seconds
    ns = target.metadata.namespace or ""
    job = rt.kube.get_job(ns, target.status.check_job) if target.status.check_job else None
    if job is not None:
        if finished(job):
            # its verdict never reached the status (an event lost to an API error while it
            # was handled, say): read it now rather than wait on a Job that will not change
            on_job(job, decide(job, rt.kube.job_pods(ns, job)), False)
        return
    gen = target.metadata.generation or 0
    ready = next((c for c in target.status.conditions if c.type == "Ready"), None)
    if ready is None or (ready.observed_generation or 0) < gen:
        # a spec change kopf folded into an earlier cycle: check what the spec is now
        start_check(body, salt=f"g{gen}")
    elif schedule.check_due(target.status.last_check_time, interval, now, checking=False):
        start_check(body, salt=f"t{schedule.slot(now, interval)}")


def on_job(job: Obj, verdict: Verdict, deleted: bool) -> None:
    kube = runtime.get().kube
    meta = job["metadata"]
    purpose = meta.get("labels", {}).get(naming.PURPOSE)
    if purpose in ("adopt", "rewrap"):
        (adoption.on_job if purpose == "adopt" else rotation.on_job)(job, verdict, deleted)
        return
    body = kube.get_custom(PLURAL, meta["namespace"],
                           meta.get("annotations", {}).get(naming.OWNER_NAME, ""))
    if body is None or body["metadata"].get("uid") != meta["labels"].get(naming.OWNER_UID):
        return
    target = BackupTarget.from_body(body)
    if target.status.check_job != meta["name"]:
        return  # a stale check (the spec changed since): its verdict no longer applies
    if not verdict.terminal:
        if not deleted:
            return
        verdict = Verdict(verdict.phase.FAILED, "CheckJobDeleted",
                          f"check Job {meta['name']} was deleted before it reported")
    was_ready = target.status.ready
    was = next((c for c in target.status.conditions if c.type == "Ready"), None)
    result = result_of(verdict, "check")
    # the verdict is about the spec the Job tested, which may be older than the object's
    tested = meta["labels"].get(naming.GENERATION, "")
    gen = int(tested) if tested.isdigit() else target.metadata.generation
    status = target.status.checked(result, gen)
    write(kube, PLURAL, meta["namespace"], target.metadata.name, target.status, status)
    ready = status.ready
    cond = next(c for c in status.conditions if c.type == "Ready")
    if ready != was_ready or not ready:
        kube.event(body, "Ready" if ready else cond.reason, cond.message, warning=not ready)
    reporting.key_problem(kube, body, target, result.error, "the target's check",
                          already_known=was is not None and was.reason == cond.reason)
