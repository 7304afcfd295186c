"""Backup (short name ``bk``): one backup of a BackupTarget, taken by exactly one runner Job.

Phases: Pending -> Running -> Completed | Failed | PartiallyFailed (a target of several
databases: some were backed up, some not; ``status.databases`` lists each). The transitions
are pure methods on :class:`BackupStatus` that return a new status; the controller only
applies them as patches. Deleting a Backup deletes its data only with ``deletionPolicy: Delete``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from safehold.api.common import (
    API_VERSION,
    BACKUP_ID_PATTERN,
    Condition,
    ErrorInfo,
    KubeModel,
    LocalObjectReference,
    ObjectMeta,
    StatusModel,
    condition_reason,
    set_condition,
    utcnow,
)
from safehold.api.manifest import BackupType
from safehold.api.result import DatabaseResult, PipelineFigures, TaskResult
from safehold.api.units import human_bytes as human_bytes  # re-exported

BackupPhase = Literal["Pending", "Running", "Completed", "Failed", "PartiallyFailed"]
FINISHED = ("Completed", "Failed", "PartiallyFailed")
DeletionPolicy = Literal["Retain", "Delete"]
COMPLETED = "Completed"


class BackupSpec(KubeModel):
    """Which target to back up and how; targetRef, type and include cannot change later."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.include) || size(self.include) == 0 || self.type == 'full'",
         "message": "include is only valid for type full (incremental and differential"
                    " backups always cover the whole database)", "fieldPath": ".include"},
        {"rule": "self.targetRef == oldSelf.targetRef && self.type == oldSelf.type"
                 " && (has(self.include) ? self.include : []) =="
                 " (has(oldSelf.include) ? oldSelf.include : [])",
         "message": "targetRef, type and include are immutable: create a new Backup"},
        {"rule": "!has(oldSelf.backupId) || (has(self.backupId)"
                 " && self.backupId == oldSelf.backupId)",
         "message": "backupId is immutable once set", "fieldPath": ".backupId"},
    ]})

    target_ref: LocalObjectReference = Field(description="The BackupTarget to back up.")
    type: BackupType = Field(
        default="full",
        description="full; incremental (changes since the previous backup of the chain) or"
        " differential (changes since the chain's full). Without a usable full, the backup is"
        " taken as a full and the status says so.",
    )
    include: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=1000,
        description="Only these tables or collections (e.g. public.customers); full only."
        " Empty means everything.",
    )
    pinned: bool = Field(default=False, description="Retention never deletes a pinned backup.")
    deletion_policy: DeletionPolicy = Field(
        default="Retain",
        description="Retain (default): deleting this object keeps the backup's data in the"
        " repository. Delete: deleting this object deletes the data too (retention sets this"
        " on what it prunes).",
    )
    backup_id: Annotated[str, Field(pattern=BACKUP_ID_PATTERN)] | None = Field(
        default=None,
        description="Id of the backup in the repository. Leave unset: the operator assigns"
        " one. Set on Backups the operator imports from an existing repository.",
    )

    @model_validator(mode="after")
    def _check(self) -> BackupSpec:
        if self.include and self.type != "full":
            raise ValueError("include is only valid for type full")
        return self


class BackupStatus(StatusModel):
    """Observed state of a Backup, from its runner Job's result."""

    phase: BackupPhase | None = Field(
        default=None, description="Pending, Running, Completed, Failed or PartiallyFailed (a"
        " target of several databases: some backed up, some not; see databases)."
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the status reflects."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Completed: whether the backup is done, and why not."
    )
    job_name: str | None = Field(default=None, description="The runner Job taking the backup.")
    backup_id: str | None = Field(default=None, description="Id of the backup in the repository.")
    type: BackupType | None = Field(
        default=None, description="Type actually taken (a full when no chain could be extended)."
    )
    parent_id: str | None = Field(default=None, description="Backup this one builds on.")
    chain_id: str | None = Field(default=None, description="The full backup at the chain's root.")
    start_position: dict[str, str] | None = Field(
        default=None, description="Log position (LSN, binlog, oplog) when the backup started."
    )
    end_position: dict[str, str] | None = Field(
        default=None, description="Log position when the backup ended."
    )
    started_at: datetime | None = Field(default=None, description="When the runner started.")
    completed_at: datetime | None = Field(default=None, description="When the backup finished.")
    raw_bytes: int | None = Field(default=None, description="Bytes read from the database.")
    stored_bytes: int | None = Field(default=None, description="Bytes written to storage.")
    size: str | None = Field(default=None, description="Stored size for people, e.g. 1.2 GiB.")
    compression_ratio: float | None = Field(default=None, description="raw / stored bytes.")
    throughput_bytes_per_second: float | None = Field(
        default=None, description="Raw bytes per second over the whole backup."
    )
    duration_seconds: float | None = Field(default=None, description="Wall time of the backup.")
    stage_seconds: dict[str, float] | None = Field(
        default=None, description="Wall time per stage of the runner."
    )
    pipeline: PipelineFigures | None = Field(
        default=None, description="Where the streaming time went: seconds per pipeline stage"
        " (read, compress, encrypt, hash, write, waiting), the bottleneck stage and the cores"
        " busy, as the runner measured them (and the backup's manifest records).")
    objects: int | None = Field(default=None, description="Data objects in the backup.")
    location: str | None = Field(default=None, description="Repository URL and path.")
    key_id: str | None = Field(
        default=None, description="Key that wraps the data key (unset when unencrypted)."
    )
    imported: bool | None = Field(
        default=None, description="Adopted from an existing repository, not taken here."
    )
    error: ErrorInfo | None = Field(default=None, description="Why the backup failed.")
    databases: list[DatabaseResult] | None = Field(
        default=None, description="A target of several databases: each database's own backup"
        " (its repository name target@database, phase, backup id, size) or why it failed;"
        " the server-wide objects have no database.")

    def pending(self, generation: int | None, now: datetime | None = None) -> BackupStatus:
        return self.model_copy(update={
            "phase": "Pending", "observed_generation": generation,
            "conditions": list(set_condition(self.conditions, COMPLETED, "False", "Pending",
                                             "waiting for the runner Job",
                                             generation=generation, now=now)),
        })

    def running(self, job_name: str, backup_id: str, generation: int | None,
                now: datetime | None = None) -> BackupStatus:
        """The runner Job exists; ``backup_id`` is fixed so a retried Pod resumes it."""
        now = now or utcnow()
        return self.model_copy(update={
            "phase": "Running", "job_name": job_name, "backup_id": backup_id,
            "observed_generation": generation, "started_at": self.started_at or now,
            "error": None,
            "conditions": list(set_condition(self.conditions, COMPLETED, "False", "Running",
                                             f"runner Job {job_name} is taking backup"
                                             f" {backup_id}", generation=generation, now=now)),
        })

    def completed(self, result: TaskResult, generation: int | None,
                  now: datetime | None = None, *, imported: bool = False) -> BackupStatus:
        """The runner reported success (or the backup was found in the repository)."""
        now = now or utcnow()
        message = (f"{result.type or 'backup'} {result.backup_id}: {self._size(result)}"
                   + (f" in {result.seconds:.1f}s" if result.seconds is not None else ""))
        return self.model_copy(update={
            "phase": "Completed", "observed_generation": generation, "error": None,
            "backup_id": result.backup_id or self.backup_id,
            "type": result.type, "parent_id": result.parent_id, "chain_id": result.chain_id,
            "start_position": result.start_position, "end_position": result.end_position,
            "started_at": self.started_at or result.started_at,
            "completed_at": result.finished_at or now,
            "raw_bytes": result.raw_bytes, "stored_bytes": result.stored_bytes,
            "size": self._size(result), "compression_ratio": result.compression_ratio,
            "throughput_bytes_per_second": result.throughput_bytes_per_second,
            "duration_seconds": result.seconds, "stage_seconds": result.stage_seconds or None,
            "pipeline": result.pipeline,
            "objects": result.objects, "location": result.location, "key_id": result.key_id,
            "imported": True if imported else self.imported,
            "databases": result.databases or None,
            "conditions": list(set_condition(
                self.conditions, COMPLETED, "True", "Imported" if imported else "Completed",
                message, generation=generation, now=now)),
        })

    def failed(self, error: ErrorInfo, generation: int | None,
               now: datetime | None = None) -> BackupStatus:
        """The runner (or Kubernetes: OOMKilled, Evicted, DeadlineExceeded) reported failure."""
        now = now or utcnow()
        reason = condition_reason(error.error_class, "Failed")
        message = error.message + (f" (hint: {error.hint})" if error.hint else "")
        return self.model_copy(update={
            "phase": "Failed", "observed_generation": generation, "error": error,
            "completed_at": now,
            "conditions": list(set_condition(self.conditions, COMPLETED, "False", reason,
                                             message, generation=generation, now=now)),
        })

    def partially_failed(self, result: TaskResult, generation: int | None,
                         now: datetime | None = None) -> BackupStatus:
        """Some databases of the target were backed up, others failed (each listed)."""
        now = now or utcnow()
        done = [d for d in result.databases if d.phase == "Completed"]
        failed = [d for d in result.databases if d.phase != "Completed"]
        message = (f"{len(done)} of {len(result.databases)} backed up; failed: "
                   + "; ".join(f"{d.database or 'server-wide objects'} ({d.message})"
                               for d in failed))
        if not failed:  # the list was cut to fit the termination message: the error says it
            message = result.error.message if result.error else "some databases failed"
        if result.truncated:
            message += " (the list was cut to fit the runner's 4 KiB result; the runner's log"\
                " has all of it)"
        stored = sum(d.stored_bytes or 0 for d in done)
        return self.model_copy(update={
            "phase": "PartiallyFailed", "observed_generation": generation,
            "error": result.error, "databases": result.databases,
            "backup_id": result.backup_id or self.backup_id, "type": result.type,
            "completed_at": result.finished_at or now, "stored_bytes": stored,
            "raw_bytes": sum(d.raw_bytes or 0 for d in done), "size": human_bytes(stored),
            "duration_seconds": result.seconds, "location": result.location,
            "conditions": list(set_condition(self.conditions, COMPLETED, "False",
                                             "PartiallyFailed", message,
                                             generation=generation, now=now)),
        })

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    @staticmethod
    def _size(result: TaskResult) -> str:
        return human_bytes(result.stored_bytes) if result.stored_bytes is not None else "?"


class Backup(KubeModel):
    """One backup of a BackupTarget (kind Backup)."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["safehold.dev/v1alpha1"] = API_VERSION
    kind: Literal["Backup"] = "Backup"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: BackupSpec
    status: BackupStatus = Field(default_factory=BackupStatus)

    @classmethod
    def from_body(cls, body: Any) -> Backup:
        return cls.model_validate(dict(body))
