"""Restore: a plan (from the Backup objects, else from the repository) recorded in status,
then one runner Job; ``dryRun`` stops after the plan."""

from __future__ import annotations

import kopf

from safehold.api.common import ErrorInfo
from safehold.api.pointintime import RESTORE_ENGINES, STREAMER_ENGINES, VOLUME_ENGINES
from safehold.api.restore import Restore, RestoreStatus
from safehold.api.result import TaskResult
from safehold.api.target import BackupTarget
from safehold.controller import naming, reporting, runtime
from safehold.controller.builders import tasks
from safehold.controller.handlers.common import (
    ensure_generated_key,
    ensure_runner_account,
    result_of,
    settle_existing,
)
from safehold.controller.kube import Forbidden, Kube, Obj
from safehold.controller.logic import plan
from safehold.controller.logic.phase import Verdict
from safehold.controller.status import write

PLURAL = "restores"


class _Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _save(kube: Kube, rs: Restore, new: RestoreStatus) -> Restore:
    write(kube, PLURAL, rs.metadata.namespace or "", rs.metadata.name, rs.status, new)
    reporting.restore_status_changed(kube, rs, new)  # metrics
    return rs.model_copy(update={"status": new})


def _fail(kube: Kube, body: Obj, rs: Restore, reason: str, message: str) -> None:
    _save(kube, rs, rs.status.failed(ErrorInfo(error_class=reason, message=message),
                                     rs.metadata.generation))
    kube.event(body, reason, message, warning=True)


def _target(kube: Kube, ns: str, name: str, role: str) -> tuple[Obj, BackupTarget]:
    body = kube.get_custom("backuptargets", ns, name)
    if body is None:
        raise _Refused("TargetNotFound", f"the {role} BackupTarget {name!r} does not exist")
    return body, BackupTarget.from_body(body)


def _targets(kube: Kube, rs: Restore, source_name: str
             ) -> tuple[tuple[Obj, BackupTarget], tuple[Obj, BackupTarget] | None]:
    ns = rs.metadata.namespace or ""
    source = _target(kube, ns, source_name, "source")
    if rs.spec.destination.volume is not None:
        if source[1].spec.engine not in VOLUME_ENGINES:
            raise _Refused("InvalidDestination", f"a volume destination takes a physical"
                           f" PostgreSQL backup (a new data directory); a {source[1].spec.engine}"
                           " backup restores into a database: destination.targetRef or"
                           " database")
        return source, None
    dest_ref = rs.spec.destination.target_ref
    if dest_ref is None:
        if source[1].spec.engine == "sqlite":
            raise _Refused("InvalidDestination", "a sqlite source has no server to create a new"
                           " database on: name a destination targetRef")
        return source, None
    dest = _target(kube, ns, dest_ref.name, "destination")
    if dest[1].spec.engine != source[1].spec.engine:
        raise _Refused("EngineMismatch", f"source engine {source[1].spec.engine} cannot be"
                       f" restored into a {dest[1].spec.engine} target")
    return source, dest


def reconcile(body: Obj) -> None:
    kube = runtime.get().kube
    rs = Restore.from_body(body)
    if rs.status.finished or rs.metadata.deletion_timestamp:
        return
    if rs.status.phase in ("Planning", "Running"):
        return  # its Job reports through on_job
    if rs.status.phase == "Planned" and rs.status.backup_id:
        # resumed between the plan and the Job: the source target is the one the spec names
        name = (rs.spec.source.target_ref.name if rs.spec.source.target_ref else
                _source_of(kube, rs))
        if name:
            _start(kube, body, rs, name, rs.status.backup_id)
            return
    src = rs.spec.source
    # a point in time: the runner plans it from the repository (backups and archived log)
    if src.point_in_time is not None and src.target_ref is not None:
        _point_in_time(kube, body, rs, src.target_ref.name)
        return
    # one database (or the roles/users) of a multi-database target: resolved from the repository
    if src.database is not None or src.globals:
        picked = _database_source(kube, body, rs)
        if picked is not None:
            _plan_job(kube, body, rs, *picked)
        return
    backups = kube.list_custom("backups", rs.metadata.namespace or "")
    try:
        try:
            chosen = plan.choose(
                backups,
                backup_name=src.backup_ref.name if src.backup_ref else None,
                target=src.target_ref.name if src.target_ref else None,
                backup_id=src.backup_id,
            )
        except plan.PlanError as exc:
            if src.target_ref is None or exc.reason not in ("NoBackups", "BackupNotFound"):
                raise
            # not in the cluster: the runner resolves it from the repository
            _plan_job(kube, body, rs, src.target_ref.name, src.backup_id or "latest")
            return
        found = plan.chain(backups, chosen)
        (_, source), _ = _targets(kube, rs, found.target)
    except plan.PlanError as exc:
        _fail(kube, body, rs, exc.reason, exc.message)
        return
    except _Refused as exc:
        _fail(kube, body, rs, exc.reason, exc.message)
        return
    planned = TaskResult(kind="restore", phase="Completed", target=source.repository_name,
                         backup_id=found.backup_id, plan_only=True,
                         chain=[s.backup_id for s in found.steps])
    rs = _save(kube, rs, rs.status.planned(planned, rs.spec.dry_run, rs.metadata.generation))
    kube.event(body, "DryRun" if rs.spec.dry_run else "Planned", found.summary())
    if not rs.spec.dry_run:
        _start(kube, body, rs, found.target, found.backup_id)


def _point_in_time(kube: Kube, body: Obj, rs: Restore, source: str) -> None:
    """Refused at once for an engine without a log streamer; else a plan Job (which refuses a
    point outside the recoverable window with OutsideWindow), then the restore Job."""
    try:  # what the source's engine can do first, then whether the destination suits it
        _, target = _target(kube, rs.metadata.namespace or "", source, "source")
    except _Refused as exc:
        _fail(kube, body, rs, exc.reason, exc.message)
        return
    if target.spec.engine not in STREAMER_ENGINES:
        _fail(kube, body, rs, "PointInTimeUnsupported",
              f"target {source!r} is a {target.spec.engine} target: point-in-time restores need"
              f" a log streamer, which engines {', '.join(STREAMER_ENGINES)} have; restore a"
              " backup instead (source.backupId or backupRef)")
        return
    pit = rs.spec.source.point_in_time
    if target.spec.engine in VOLUME_ENGINES and rs.spec.destination.volume is None:
        _fail(kube, body, rs, "PointInTimeUnsupported",
              f"target {source!r} is a {target.spec.engine} target: its point-in-time restore"
              " replays WAL into a new data directory: give destination.volume (a claimName or"
              " a claimTemplate) instead of a database")
        return
    if target.spec.engine in VOLUME_ENGINES and pit is not None and pit.time is None:
        _fail(kube, body, rs, "PointInTimeUnsupported",
              "gtid and position are MariaDB's: a PostgreSQL target restores to a time"
              " (pointInTime.time)")
        return
    if target.spec.engine not in RESTORE_ENGINES + VOLUME_ENGINES:
        _fail(kube, body, rs, "PointInTimeUnsupported",
              f"target {source!r} is a {target.spec.engine} target, which a Restore cannot"
              " bring to a point in time yet; restore a backup instead (source.backupId or"
              " backupRef)")
        return
    try:
        _targets(kube, rs, source)
    except _Refused as exc:
        _fail(kube, body, rs, exc.reason, exc.message)
        return
    _plan_job(kube, body, rs, source, "latest")


def _database_source(kube: Kube, body: Obj, rs: Restore) -> tuple[str, str] | None:
    """(target, backup id) of a Restore of one database (or the roles/users) of a
    multi-database target."""
    src = rs.spec.source
    if src.target_ref is not None:
        return src.target_ref.name, src.backup_id or "latest"
    assert src.backup_ref is not None
    bk = kube.get_custom("backups", rs.metadata.namespace or "", src.backup_ref.name)
    status = (bk or {}).get("status") or {}
    target = str(((bk or {}).get("spec") or {}).get("targetRef", {}).get("name") or "")
    if not bk or not target or status.get("phase") not in ("Completed", "PartiallyFailed") \
            or not status.get("backupId"):
        _fail(kube, body, rs, "BackupNotReady", f"Backup {src.backup_ref.name} has no"
              " completed backup to restore a database from")
        return None
    return target, str(status["backupId"])


def _source_of(kube: Kube, rs: Restore) -> str | None:
    ref = rs.spec.source.backup_ref
    bk = kube.get_custom("backups", rs.metadata.namespace or "", ref.name) if ref else None
    return str(((bk or {}).get("spec") or {}).get("targetRef", {}).get("name") or "") or None


def _plan_job(kube: Kube, body: Obj, rs: Restore, source: str, backup_id: str) -> None:
    _run_step(kube, body, rs, source, backup_id, plan_only=True)


def _start(kube: Kube, body: Obj, rs: Restore, source: str, backup_id: str) -> None:
    _run_step(kube, body, rs, source, backup_id, plan_only=False)


def _run_step(kube: Kube, body: Obj, rs: Restore, source: str, backup_id: str, *,
              plan_only: bool) -> None:
    """One runner Job of the restore: the plan-only Job, or the restore itself."""
    ns = rs.metadata.namespace or ""
    try:
        (src_body, src), dest = _targets(kube, rs, source)
    except _Refused as exc:
        _fail(kube, body, rs, exc.reason, exc.message)
        return
    ensure_runner_account(kube, ns)
    ensure_generated_key(kube, src_body)
    step = "plan" if plan_only else "restore"
    name = naming.job_name(step, rs.metadata.name, rs.metadata.uid or "")
    volume = rs.spec.destination.volume
    if not plan_only and volume is not None and volume.claim_template is not None:
        try:
            _, made = kube.ensure_claim(tasks.claim(rs))
        except Forbidden as exc:
            raise kopf.TemporaryError(f"cannot create claim {tasks.claim_name(rs)}: {exc}",
                                      delay=60) from None
        if made:
            kube.event(body, "ClaimCreated", f"claim {tasks.claim_name(rs)} holds the restored"
                       " data directory; it stays when the Restore is deleted")
    job = tasks.restore_job(rs, src, dest[1] if dest else None, backup_id, name,
                            runtime.get().settings, plan_only=plan_only)
    message = (f"runner Job {name} resolves backup {backup_id} of {source} from the repository"
               if plan_only else f"runner Job {name} restores {backup_id}")
    job, created = _create(kube, body, job, name, message)
    status = (rs.status.planning if plan_only else rs.status.running)(name, rs.metadata.generation)
    _save(kube, rs, status)
    settle_existing(kube, job, created, on_job)


def _create(kube: Kube, body: Obj, job: Obj, name: str, message: str) -> tuple[Obj, bool]:
    try:
        found, created = kube.ensure_job(job)
    except Forbidden as exc:
        raise kopf.TemporaryError(f"cannot create Job {name}: {exc}", delay=60) from None
    if created:
        kube.event(body, "JobCreated", message)
    return found, created


def on_job(job: Obj, verdict: Verdict, deleted: bool) -> None:
    kube = runtime.get().kube
    meta = job["metadata"]
    body = kube.get_custom(PLURAL, meta["namespace"],
                           meta.get("annotations", {}).get(naming.OWNER_NAME, ""))
    if body is None or body["metadata"].get("uid") != meta["labels"].get(naming.OWNER_UID):
        return
    rs = Restore.from_body(body)
    if rs.status.finished or rs.status.job_name != meta["name"]:
        return
    if not verdict.terminal:
        if deleted:
            _fail(kube, body, rs, "JobDeleted", f"runner Job {meta['name']} was deleted before"
                  " it finished; create a new Restore")
        return
    purpose = meta["labels"].get(naming.PURPOSE)
    result = result_of(verdict, "restore")
    gen = rs.metadata.generation
    if not result.ok:
        assert result.error is not None
        _save(kube, rs, rs.status.failed(result.error, gen))
        kube.event(body, result.error.error_class, result.error.message, warning=True)
        return
    if purpose == "plan":
        rs = _save(kube, rs, rs.status.planned(result, rs.spec.dry_run, gen))
        kube.event(body, "DryRun" if rs.spec.dry_run else "Planned",
                   f"plan: {' -> '.join(result.chain) or result.backup_id}")
        ref = rs.spec.source.target_ref  # or a backupRef with a database
        source = ref.name if ref is not None else _source_of(kube, rs)
        if not rs.spec.dry_run and result.backup_id and source is not None:
            _start(kube, body, rs, source, result.backup_id)
        return
    _save(kube, rs, rs.status.completed(result, gen))
    kube.event(body, "Completed", f"restored backup {result.backup_id}")
