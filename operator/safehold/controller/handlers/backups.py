"""Backup: exactly one runner Job per object, status from its result, deletionPolicy on delete."""

from __future__ import annotations

import logging

import kopf

from safehold.api.backup import Backup, BackupStatus
from safehold.api.common import ErrorInfo
from safehold.api.target import BackupTarget
from safehold.controller import naming, reporting, runtime
from safehold.controller.builders import tasks
from safehold.controller.handlers.common import (
    ensure_generated_key,
    ensure_runner_account,
    finished,
    result_of,
    settle_existing,
)
from safehold.controller.kube import Forbidden, Kube, Obj
from safehold.controller.logic import deletion
from safehold.controller.logic.phase import Phase, Verdict, decide
from safehold.controller.status import write

log = logging.getLogger(__name__)
PLURAL = "backups"
# (Job uid, failed count) already announced by a Retrying event (in-process; a restart may
# announce one retry twice, never miss one)
_RETRIES_SEEN: dict[tuple[str, int], None] = {}


def _patch(kube: Kube, bk: Backup, status: BackupStatus) -> None:
    write(kube, PLURAL, bk.metadata.namespace or "", bk.metadata.name, bk.status, status)
    reporting.backup_status_changed(kube, bk, status)  # metrics, trends, notifications


def _target(kube: Kube, bk: Backup) -> tuple[Obj | None, BackupTarget | None]:
    body = kube.get_custom("backuptargets", bk.metadata.namespace or "", bk.spec.target_ref.name)
    return (body, BackupTarget.from_body(body)) if body else (None, None)


def backup_id_for(bk: Backup) -> str:
    """Already decided (status), imported (spec), or derived from the object (stable)."""
    created = bk.metadata.creation_timestamp
    assert created is not None and bk.metadata.uid
    return bk.status.backup_id or bk.spec.backup_id or naming.backup_id(created, bk.metadata.uid)


def reconcile(body: Obj) -> None:
    """Make sure the Backup's Job exists (create-if-absent by its deterministic name)."""
    rt = runtime.get()
    kube = rt.kube
    bk = Backup.from_body(body)
    if (bk.status.finished or bk.metadata.deletion_timestamp or bk.status.imported
            or bk.metadata.labels.get(naming.IMPORTED) == "true"):
        return  # imported Backups are found, never taken: adoption writes their status
    ns = bk.metadata.namespace or ""
    gen = bk.metadata.generation
    target_body, target = _target(kube, bk)
    if target is None or target_body is None:
        if bk.status.phase != "Pending":
            _patch(kube, bk, bk.status.pending(gen))
            kube.event(body, "TargetNotFound",
                       f"BackupTarget {bk.spec.target_ref.name} does not exist (yet)", warning=True)
        raise kopf.TemporaryError(f"BackupTarget {bk.spec.target_ref.name} not found", delay=30)
    job_name = bk.status.job_name or naming.job_name("backup", bk.metadata.name,
                                                     bk.metadata.uid or "")
    if bk.status.job_name and kube.get_job(ns, job_name) is None:
        recover(kube, body, bk, target, reason="the runner Job is gone")
        return
    backup_id = backup_id_for(bk)
    ensure_runner_account(kube, ns)
    ensure_generated_key(kube, target_body)
    job = tasks.backup_job(bk, target, backup_id, job_name, rt.settings)
    try:
        found, created = kube.ensure_job(job)
    except Forbidden as exc:
        raise kopf.TemporaryError(f"cannot create Job {job_name}: {exc}", delay=60) from None
    if bk.status.phase not in ("Running",):
        _patch(kube, bk, bk.status.running(job_name, backup_id, gen))
    if created:
        kube.event(body, "JobCreated", f"runner Job {job_name} takes backup {backup_id}")
    settle_existing(kube, found, created, on_job)


def recover(kube: Kube, body: Obj, bk: Backup, target: BackupTarget, *, reason: str) -> None:
    """The Job's result is lost (Job or pod gone): read the backup from the repository."""
    backup_id = backup_id_for(bk)
    name = naming.job_name("recover", bk.metadata.name, bk.metadata.uid or "")
    job = tasks.verify_job(bk, target, backup_id, name, runtime.get().settings)
    try:
        _, created = kube.ensure_job(job)
    except Forbidden as exc:
        log.warning("cannot create recovery Job %s: %s", name, exc)
        return
    if created:
        kube.event(body, "Recovering",
                   f"{reason}: runner Job {name} reads backup {backup_id} from the repository")


def on_job(job: Obj, verdict: Verdict, deleted: bool) -> None:
    """A backup (or recovery) Job changed: record what it says."""
    rt = runtime.get()
    kube = rt.kube
    meta = job["metadata"]
    purpose = meta.get("labels", {}).get(naming.PURPOSE)
    body = kube.get_custom(PLURAL, meta["namespace"],
                           meta.get("annotations", {}).get(naming.OWNER_NAME, ""))
    if body is None or body["metadata"].get("uid") != meta["labels"].get(naming.OWNER_UID):
        return
    bk = Backup.from_body(body)
    if bk.status.finished or purpose not in ("backup", "recover"):
        return
    gen = bk.metadata.generation
    if deleted and not verdict.terminal:
        if purpose == "backup" and not bk.metadata.deletion_timestamp:
            _, target = _target(kube, bk)
            if target is not None:
                recover(kube, body, bk, target, reason="the runner Job was deleted")
        return
    if not verdict.terminal:
        seen = (meta.get("uid", ""), verdict.retries)
        if verdict.retries and bk.status.phase == "Running" and seen not in _RETRIES_SEEN:
            _RETRIES_SEEN[seen] = None
            while len(_RETRIES_SEEN) > 10_000:  # bounded: oldest first
                _RETRIES_SEEN.pop(next(iter(_RETRIES_SEEN)))
            kube.event(body, "Retrying", verdict.message, warning=True)
        return
    result = result_of(verdict, "verify" if purpose == "recover" else "backup")
    if purpose == "backup" and result.ok:
        _patch(kube, bk, bk.status.completed(result, gen))
        kube.event(body, "Completed", f"backup {result.backup_id} completed"
                   f" ({result.stored_bytes or 0} bytes stored)")
        return
    if purpose == "backup" and result.phase == "PartiallyFailed":
        _patch(kube, bk, bk.status.partially_failed(result, gen))
        kube.event(body, "PartiallyFailed", (result.error.message if result.error else
                                             "some databases were not backed up"),
                   warning=True)
        return
    if purpose == "backup" and result.error and result.error.error_class == "ResultMissing":
        _, target = _target(kube, bk)
        if target is not None:
            recover(kube, body, bk, target, reason="the runner pod left no result")
            return
    if purpose == "recover":
        if result.ok:
            found = result.model_copy(update={"backup_id": result.backup_id
                                              or bk.status.backup_id})
            _patch(kube, bk, bk.status.completed(found, gen))
            kube.event(body, "Completed",
                       f"backup {found.backup_id} found in the repository (result recovered)")
            return
        error = ErrorInfo(
            error_class="ResultLost",
            message=f"the runner Job ended without a result and the repository has no complete"
            f" backup {bk.status.backup_id} ({result.error.message if result.error else '?'})",
            hint="create a new Backup",
        )
    else:
        assert result.error is not None
        error = result.error
    _patch(kube, bk, bk.status.failed(error, gen))
    kube.event(body, error.error_class if error.error_class.isalnum() else "Failed",
               error.message, warning=True)


def delete_data(body: Obj) -> None:
    """deletionPolicy Delete: remove the data through a runner Job (kopf holds the finalizer)."""
    rt = runtime.get()
    kube = rt.kube
    bk = Backup.from_body(body)
    ns = bk.metadata.namespace or ""
    if bk.status.job_name and not bk.status.finished:
        kube.delete_job(ns, bk.status.job_name)  # cancel the running backup first
    terminating = kube.namespace_terminating(ns)
    others = kube.list_custom(PLURAL, ns)
    decision = deletion.decide(body, others, namespace_terminating=terminating)
    if decision.action is deletion.Action.RELEASE:
        return
    if decision.action is deletion.Action.RETAIN:
        kube.event(body, "Retained", decision.message, warning=True)
        return
    if decision.action is deletion.Action.BLOCK:
        _blocked(kube, bk, decision.reason, decision.message)
        kube.event(body, decision.reason, decision.message, warning=True)
        raise kopf.TemporaryError(decision.message, delay=60)
    _, target = _target(kube, bk)
    if target is None:
        kube.event(body, "Retained", f"BackupTarget {bk.spec.target_ref.name} is gone: the data"
                   " of this backup is retained in the repository", warning=True)
        return
    backup_id = backup_id_for(bk)
    name = naming.job_name("delete", bk.metadata.name, bk.metadata.uid or "")
    try:
        job, created = kube.ensure_job(tasks.delete_job(bk, target, backup_id, name,
                                                        rt.settings))
    except Forbidden as exc:
        kube.event(body, "Retained", f"no delete Job can be created ({exc}): the data of backup"
                   f" {backup_id} is retained in the repository", warning=True)
        return
    if created:
        kube.event(body, "Deleting", f"runner Job {name} deletes backup {backup_id}")
    verdict = decide(job, kube.job_pods(ns, job) if finished(job) else [])
    if verdict.phase is Phase.COMPLETED:
        kube.event(body, "Deleted", f"backup {backup_id} deleted from the repository")
        return
    if verdict.phase is Phase.FAILED:
        result = result_of(verdict, "delete")
        message = result.error.message if result.error else verdict.message
        if terminating:
            kube.event(body, "Retained", f"delete Job failed ({message}) and the namespace is"
                       " terminating: the data is retained", warning=True)
            return
        kube.delete_job(ns, name)  # the next attempt makes a fresh Job
        _blocked(kube, bk, "DeleteFailed", f"{message}; retrying. Set deletionPolicy: Retain"
                 " to let the object go and keep the data")
        kube.event(body, "DeleteFailed", message, warning=True)
        raise kopf.TemporaryError(message, delay=120)
    raise kopf.TemporaryError(f"waiting for delete Job {name}", delay=10)


def _blocked(kube: Kube, bk: Backup, reason: str, message: str) -> None:
    from safehold.api.common import set_condition

    conds = set_condition(bk.status.conditions, "Deleting", "False", reason, message,
                          generation=bk.metadata.generation)
    write(kube, PLURAL, bk.metadata.namespace or "", bk.metadata.name, bk.status,
          bk.status.model_copy(update={"conditions": list(conds)}))
