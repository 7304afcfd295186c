"""Runner Jobs per purpose: a task (no secrets) + its wiring (references) -> a Job manifest.

Pure: models and settings in, the Job dict out. A target's name in the repository is
``BackupTarget.repository_name`` (spec.repositoryName, else its name), so a new cluster with a
BackupTarget of the same name finds the same backups.
"""

from __future__ import annotations

from typing import Any

from safehold.api.backup import Backup
from safehold.api.databases import database_key, globals_key
from safehold.api.manifest import BackupMethod
from safehold.api.restore import Restore
from safehold.api.target import BackupTarget
from safehold.api.task import (
    BackupTask,
    CheckTask,
    DeleteTask,
    ListTask,
    RestoreTask,
    RewrapTask,
    TaskDatabase,
    TaskRecovery,
    VerifyTask,
    task_to_json,
)
from safehold.controller import naming
from safehold.controller.builders import wiring
from safehold.controller.builders.job import JobSpec, Wiring, build_job
from safehold.controller.settings import Settings

SRC, DST = "src", "dst"


def owner(obj: BackupTarget | Backup | Restore) -> dict[str, str]:
    return {"apiVersion": obj.api_version, "kind": obj.kind, "name": obj.metadata.name,
            "uid": obj.metadata.uid or ""}


def _key_secret(target: BackupTarget) -> str | None:
    if target.spec.encryption.generate_key:
        return target.status.generated_key_secret or naming.key_secret_name(target.metadata.name)
    return None


def check_job(target: BackupTarget, job_name: str, settings: Settings) -> dict[str, Any]:
    db, w_db = wiring.database(target.spec, SRC)
    repo, w_repo = wiring.repository(target.spec, SRC)
    task = CheckTask(database=db, repository=repo, purpose="backup", method=_method(target))
    return build_job(JobSpec(
        name=job_name, namespace=target.metadata.namespace or "", purpose="check",
        owner=owner(target), task_json=task_to_json(task), wiring=w_db + w_repo,
        overrides=target.spec.runner, deadline_seconds=settings.check_deadline_seconds,
        retries=0, labels={naming.TARGET: target.metadata.name[:63],
                           naming.GENERATION: str(target.metadata.generation or 0)},
    ), settings)


def _method(target: BackupTarget) -> BackupMethod | None:
    """The target's method for a task; None for logical (the task as before methods)."""
    return None if target.spec.method == "logical" else target.spec.method


def backup_job(backup: Backup, target: BackupTarget, backup_id: str, job_name: str,
               settings: Settings) -> dict[str, Any]:
    db, w_db = wiring.database(target.spec, SRC)
    repo, w_repo = wiring.repository(target.spec, SRC)
    enc, w_enc = wiring.encryption(target.spec, SRC, _key_secret(target))
    many = target.spec.databases
    globals_ = bool(many and (many.globals if many.globals is not None
                              else many.all and target.spec.engine != "mongodb"))
    task = BackupTask(
        repository=repo, target=target.repository_name, database=db, encryption=enc,
        type=backup.spec.type, method=_method(target), include=list(backup.spec.include),
        backup_id=backup_id,
        compression=target.spec.compression, namespace=target.metadata.namespace,
        databases=list(many.names) if many and many.names else None,
        all_databases=True if many and many.all else None, globals=globals_ or None,
    )
    return build_job(JobSpec(
        name=job_name, namespace=backup.metadata.namespace or "", purpose="backup",
        owner=owner(backup), task_json=task_to_json(task), wiring=w_db + w_repo + w_enc,
        overrides=target.spec.runner, labels={naming.TARGET: target.metadata.name[:63]},
    ), settings)


def verify_job(backup: Backup, target: BackupTarget, backup_id: str, job_name: str,
               settings: Settings) -> dict[str, Any]:
    """Recovery: read one backup's manifest from the repository when its Job's result is lost."""
    repo, w_repo = wiring.repository(target.spec, SRC)
    enc, w_enc = wiring.encryption(target.spec, SRC, _key_secret(target))
    task = VerifyTask(repository=repo, target=target.repository_name, backup_id=backup_id,
                      encryption=enc)
    return build_job(JobSpec(
        name=job_name, namespace=backup.metadata.namespace or "", purpose="recover",
        owner=owner(backup), task_json=task_to_json(task), wiring=w_repo + w_enc,
        overrides=target.spec.runner, labels={naming.TARGET: target.metadata.name[:63]},
    ), settings)


def delete_job(backup: Backup, target: BackupTarget, backup_id: str, job_name: str,
               settings: Settings) -> dict[str, Any]:
    repo, w_repo = wiring.repository(target.spec, SRC)
    parts = [d.target for d in backup.status.databases or ()]
    task = DeleteTask(repository=repo, target=target.repository_name, backup_ids=[backup_id],
                      databases=parts or None)
    return build_job(JobSpec(
        name=job_name, namespace=backup.metadata.namespace or "", purpose="delete",
        owner=owner(backup), task_json=task_to_json(task), wiring=w_repo,
        overrides=target.spec.runner, deadline_seconds=settings.check_deadline_seconds * 4,
        labels={naming.TARGET: target.metadata.name[:63]},
    ), settings)


def restore_job(restore: Restore, source: BackupTarget, destination: BackupTarget | None,
                backup_id: str, job_name: str, settings: Settings, *, plan_only: bool = False
                ) -> dict[str, Any]:
    """Restore ``backup_id`` of ``source`` into ``destination`` (None: a new database named
    by ``spec.destination.database`` on the source's server)."""
    repo, w_repo = wiring.repository(source.spec, SRC)
    enc, w_enc = wiring.encryption(source.spec, SRC, _key_secret(source))
    volume = restore.spec.destination.volume
    data_dir, identity = None, None
    db: TaskDatabase | None
    if volume is not None:  # a new data directory on the claim (the plan never mounts it)
        db, w_db = None, Wiring() if plan_only else restore_volume(restore)
        data_dir = f"{RESTORE_MOUNT}/{volume.sub_path}"
        if not plan_only:  # the fsGroup (default: the group) lets it read the Secrets
            group = volume.run_as_group or volume.run_as_user
            identity = (volume.run_as_user, group, volume.fs_group or group)
        runner = source.spec.runner
    elif destination is None:
        db, w_db = wiring.database(source.spec, DST, database=restore.spec.destination.database)
        runner = source.spec.runner
    else:
        db, w_db = wiring.database(destination.spec, DST)
        runner = destination.spec.runner
    one, everyone = restore.spec.source.database, restore.spec.source.globals
    part = (globals_key(source.repository_name) if everyone else
            database_key(source.repository_name, one) if one else source.repository_name)
    pit = restore.spec.source.point_in_time
    task = RestoreTask(
        repository=repo, backup_id="latest" if pit else backup_id, database=db,
        data_dir=data_dir, source=part,
        globals=True if everyone else None,
        encryption=enc, include=list(restore.spec.include),
        conflict_policy=restore.spec.conflict_policy, plan_only=plan_only,
        recovery=TaskRecovery(time=pit.time, gtid=pit.gtid, position=pit.position)
        if pit else None,
    )
    return build_job(JobSpec(
        name=job_name, namespace=restore.metadata.namespace or "",
        purpose="plan" if plan_only else "restore", owner=owner(restore),
        task_json=task_to_json(task), wiring=w_repo + w_enc + w_db, overrides=runner,
        labels={naming.TARGET: source.metadata.name[:63]}, identity=identity,
    ), settings)


RESTORE_MOUNT = "/restore"  # where a volume destination's claim is mounted


def claim_name(restore: Restore) -> str:
    """The claim a volume destination restores into: its claimName, or the one its
    claimTemplate makes (``<restore>-data``)."""
    volume = restore.spec.destination.volume
    assert volume is not None
    return volume.claim_name or f"{restore.metadata.name}-data"[:253]


def restore_volume(restore: Restore) -> Wiring:
    name = "restore-data"
    return Wiring(volumes=({"name": name, "persistentVolumeClaim": {
        "claimName": claim_name(restore)}},), mounts=({"name": name,
                                                       "mountPath": RESTORE_MOUNT},))


def claim(restore: Restore) -> dict[str, Any]:
    """The PersistentVolumeClaim a claimTemplate asks for: not owned by the Restore, so the
    restored data outlives it."""
    volume = restore.spec.destination.volume
    assert volume is not None and volume.claim_template is not None
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {
        "requests": {"storage": str(volume.claim_template.storage)}}}
    if volume.claim_template.storage_class_name:
        spec["storageClassName"] = volume.claim_template.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {
        "name": claim_name(restore), "namespace": restore.metadata.namespace or "",
        "labels": {naming.MANAGED_BY: naming.OPERATOR},
        "annotations": {naming.OWNER_NAME: restore.metadata.name}}, "spec": spec}


def adopt_job(target: BackupTarget, job_name: str, settings: Settings,
              after: str | None = None) -> dict[str, Any]:
    """List this target's backups in its repository (one page, after ``after``), for adoption.
    Reads the repository only; the key Secret is mounted so the manifests are verified."""
    repo, w_repo = wiring.repository(target.spec, SRC)
    enc, w_enc = wiring.encryption(target.spec, SRC, _key_secret(target))
    task = ListTask(repository=repo, target=target.repository_name, encryption=enc, after=after)
    return build_job(JobSpec(
        name=job_name, namespace=target.metadata.namespace or "", purpose="adopt",
        owner=owner(target), task_json=task_to_json(task), wiring=w_repo + w_enc,
        overrides=target.spec.runner, deadline_seconds=settings.check_deadline_seconds,
        retries=1, labels={naming.TARGET: target.metadata.name[:63]},
    ), settings)


def rewrap_job(target: BackupTarget, job_name: str, settings: Settings) -> dict[str, Any]:
    """Key rotation: wrap every data key in the repository with the key Secret's active key
    (the Secret mounted whole: the old keys unwrap, the active one wraps). No data moves."""
    repo, w_repo = wiring.repository(target.spec, SRC)
    enc, w_enc = wiring.encryption(target.spec, SRC, _key_secret(target))
    task = RewrapTask(repository=repo, encryption=enc)
    return build_job(JobSpec(
        name=job_name, namespace=target.metadata.namespace or "", purpose="rewrap",
        owner=owner(target), task_json=task_to_json(task), wiring=w_repo + w_enc,
        overrides=target.spec.runner, deadline_seconds=settings.check_deadline_seconds * 4,
        retries=1, labels={naming.TARGET: target.metadata.name[:63]},
    ), settings)
