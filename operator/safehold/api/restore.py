"""Restore (short name ``rst``): put a backup (and the chain it builds on) back into a database.

Phases: Pending -> Planning -> Planned -> Running -> Completed | Failed. The plan (which backups
are applied, in order) is resolved by a runner Job from the repository and recorded in status
before anything is written; ``dryRun`` stops there (phase Completed, reason DryRun).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from safehold.api.common import (
    API_VERSION,
    BACKUP_REF_PATTERN,
    Condition,
    ErrorInfo,
    KubeModel,
    LocalObjectReference,
    Name,
    ObjectMeta,
    Quantity,
    StatusModel,
    condition_reason,
    set_condition,
    utcnow,
)
from safehold.api.result import TaskResult
from safehold.api.task import ConflictPolicy

RestorePhase = Literal["Pending", "Planning", "Planned", "Running", "Completed", "Failed"]
COMPLETED = "Completed"


_PIT_SOURCE = ("pointInTime restores a target to a point: set targetRef, and no backupRef,"
               " backupId, database or globals")


class RestorePointInTime(KubeModel):
    """Where a point-in-time restore stops: exactly one of time, gtid or position."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "(has(self.time) ? 1 : 0) + (has(self.gtid) ? 1 : 0)"
                 " + (has(self.position) ? 1 : 0) == 1",
         "message": "set exactly one of time, gtid or position"},
    ]})

    time: datetime | None = Field(
        default=None, description="Restore to this time (RFC 3339, e.g. 2026-12-02T18:30:05Z):"
        " the newest full at or before it, then the logs up to it. It must lie in the source"
        " target's recoverable window (status.pointInTime).")
    gtid: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None, description="MariaDB: restore up to and including this GTID, e.g. 0-1-42.")
    position: Annotated[str, Field(pattern=r"^[^:\s]+:[0-9]+$")] | None = Field(
        default=None, description="MariaDB: restore up to (not including) the event at this"
        " binlog position, e.g. binlog.000007:1234.")

    @model_validator(mode="after")
    def _check(self) -> RestorePointInTime:
        if sum(x is not None for x in (self.time, self.gtid, self.position)) != 1:
            raise ValueError("set exactly one of time, gtid or position")
        return self


class RestoreSource(KubeModel):
    """Which backup to restore: a Backup object, or a target's backup by id (or the latest)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "(has(self.backupRef) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) == 1",
         "message": "set exactly one source: backupRef, or targetRef (with an optional"
                    " backupId)"},
        {"rule": "!has(self.backupId) || has(self.targetRef)",
         "message": "backupId goes with targetRef; a backupRef already names the backup",
         "fieldPath": ".backupId"},
        {"rule": "!has(self.database) || !has(self.globals) || !self.globals",
         "message": "database and globals exclude each other: one Restore each"},
        {"rule": "!has(self.pointInTime) || (has(self.targetRef) && !has(self.backupId)"
                 " && !has(self.database) && !(has(self.globals) && self.globals))",
         "message": _PIT_SOURCE, "fieldPath": ".pointInTime"},
    ]})

    backup_ref: LocalObjectReference | None = Field(
        default=None, description="A Backup object in this namespace."
    )
    target_ref: LocalObjectReference | None = Field(
        default=None, description="A BackupTarget whose repository holds the backup."
    )
    backup_id: Annotated[str, Field(pattern=BACKUP_REF_PATTERN)] | None = Field(
        default=None, description="With targetRef: a backup id, or latest (the default)."
    )
    database: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="A target of several databases: which database's backup to"
        " restore (with backupRef, that database's part of the Backup)."
    )
    globals: bool | None = Field(
        default=None, description="A target of several databases: restore its server-wide"
        " objects (PostgreSQL roles, MySQL/MariaDB users and grants) into the destination"
        " target's server, meant for a new server: refused, creating nothing, when any of them"
        " exists there (conflictPolicy fail; existing roles are never replaced)."
    )
    point_in_time: RestorePointInTime | None = Field(
        default=None, description="With targetRef: restore to a point in time (time, gtid or"
        " position) from the target's backups and archived log (mongodb, mysql: into a database;"
        " postgresql: time only, into a destination volume). A point outside the recoverable"
        " window fails with OutsideWindow."
    )

    @model_validator(mode="after")
    def _check(self) -> RestoreSource:
        if (self.backup_ref is None) == (self.target_ref is None):
            raise ValueError("set exactly one source: backupRef, or targetRef")
        if self.backup_id is not None and self.target_ref is None:
            raise ValueError("backupId goes with targetRef")
        if self.database is not None and self.globals:
            raise ValueError("database and globals exclude each other: one Restore each")
        if self.point_in_time is not None and (
                self.target_ref is None or self.backup_id is not None
                or self.database is not None or self.globals):
            raise ValueError(_PIT_SOURCE)
        return self


class ClaimTemplate(KubeModel):
    """A new PersistentVolumeClaim (ReadWriteOnce) for the restored data directory."""

    storage: Quantity = Field(description="Its size, e.g. 20Gi: room for the data directory"
                              " and the WAL bundled into it for the recovery.")
    storage_class_name: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        default=None, description="Its storage class (default: the cluster's default class).")


_SUB_PATH = "subPath names a directory inside the volume: not . or .."
_VOLUME_CLAIM = ("set exactly one of claimName (an existing claim) or claimTemplate (a new"
                 " claim named after the Restore)")


class RestoreVolume(KubeModel):
    """A PersistentVolumeClaim to restore a physical PostgreSQL backup into, as a new data
    directory: the Job mounts it and writes the directory, with the archived WAL a point in
    time needs bundled in it, so a PostgreSQL Pod of the same major starts it as it is."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "(has(self.claimName) ? 1 : 0) + (has(self.claimTemplate) ? 1 : 0) == 1",
         "message": _VOLUME_CLAIM},
        {"rule": "!has(self.subPath) || (self.subPath != '.' && self.subPath != '..')",
         "message": _SUB_PATH, "fieldPath": ".subPath"},
    ]})

    claim_name: Name | None = Field(
        default=None, description="An existing claim in this namespace (ReadWriteOnce is"
        " enough: the Job mounts it alone; nothing else may have it mounted).")
    claim_template: ClaimTemplate | None = Field(
        default=None, description="A new claim, <restore name>-data, created for the Restore"
        " and kept when the Restore is deleted (it holds the restored data).")
    sub_path: Annotated[str, Field(min_length=1, max_length=253,
                                   pattern=r"^[A-Za-z0-9._-]+$")] = Field(
        default="pgdata", description="The data directory inside the volume; absent or empty.")
    run_as_user: Annotated[int, Field(ge=1)] = Field(
        default=999, description="The user the database image runs as (Debian postgres"
        " images: 999; Alpine ones: 70): the data directory is written as this user, which"
        " PostgreSQL requires of its owner.")
    run_as_group: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Its group (default: run_as_user's number).")
    fs_group: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="The Pod's fsGroup (default: the group): the mounted Secrets"
        " (keys, credentials) are readable through it, and volumes that need it are"
        " writable.")

    @model_validator(mode="after")
    def _check(self) -> RestoreVolume:
        if (self.claim_name is None) == (self.claim_template is None):
            raise ValueError(_VOLUME_CLAIM)
        if self.sub_path in (".", ".."):
            raise ValueError(_SUB_PATH)
        return self


_DESTINATION = ("set exactly one destination: targetRef, database (a database name on the"
                " source target's server) or volume (a new PostgreSQL data directory)")


class RestoreDestination(KubeModel):
    """Where to restore into: a BackupTarget, a new database on the source's server, or a
    volume (a new PostgreSQL data directory)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "(has(self.targetRef) ? 1 : 0) + (has(self.database) ? 1 : 0)"
                 " + (has(self.volume) ? 1 : 0) == 1",
         "message": _DESTINATION},
    ]})

    target_ref: LocalObjectReference | None = Field(
        default=None, description="A BackupTarget to restore into (it may be the source)."
    )
    database: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")] | None = Field(
        default=None, description="A database name on the source target's server."
    )
    volume: RestoreVolume | None = Field(
        default=None, description="PostgreSQL physical backups: a PersistentVolumeClaim to"
        " restore into as a new data directory (with source.pointInTime: recovered to that"
        " point when the server starts, from the WAL bundled into it)."
    )

    @model_validator(mode="after")
    def _check(self) -> RestoreDestination:
        if sum(x is not None for x in (self.target_ref, self.database, self.volume)) != 1:
            raise ValueError(_DESTINATION)
        return self


_GLOBALS_RULE = ("source.globals restores roles/users into a destination targetRef, with"
                 " conflictPolicy fail and no include (existing roles are never replaced)")


_PIT_INCLUDE = "a point-in-time restore restores the whole database: leave include out"
_VOLUME_WHOLE = ("a volume destination takes a whole physical PostgreSQL backup (a data"
                 " directory is the whole server): leave out include, source.database and"
                 " source.globals")


class RestoreSpec(KubeModel):
    """What to restore, where to, and what to do when the data exists; immutable."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self == oldSelf", "message": "a Restore cannot be changed: create a new one"},
        {"rule": "!has(self.source.globals) || !self.source.globals"
                 " || (has(self.destination.targetRef) && self.conflictPolicy == 'fail'"
                 " && (!has(self.include) || size(self.include) == 0))",
         "message": _GLOBALS_RULE},
        {"rule": "!has(self.source.pointInTime) || !has(self.include)"
                 " || size(self.include) == 0",
         "message": _PIT_INCLUDE, "fieldPath": ".include"},
        {"rule": "!has(self.destination.volume) || ((!has(self.include)"
                 " || size(self.include) == 0) && !has(self.source.database)"
                 " && !(has(self.source.globals) && self.source.globals))",
         "message": _VOLUME_WHOLE},
    ]})

    source: RestoreSource = Field(
        description="The backup to restore: backupRef, or targetRef with an optional backupId"
        " (default latest)."
    )
    destination: RestoreDestination = Field(
        description="Where to restore it: targetRef, or database (a new database on the source"
        " target's server). Required."
    )
    include: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=1000,
        description="Only these tables or collections (e.g. public.customers); empty: all.",
    )
    conflict_policy: ConflictPolicy = Field(
        default="fail",
        description="fail: refuse when the destination already holds the data; replace:"
        " replace it (atomically where the engine can).",
    )
    dry_run: bool = Field(
        default=False, description="Only resolve and record the plan; restore nothing."
    )

    @model_validator(mode="after")
    def _check(self) -> RestoreSpec:
        if self.source.globals and (self.destination.target_ref is None or self.include
                                    or self.conflict_policy != "fail"):
            raise ValueError(_GLOBALS_RULE)
        if self.source.point_in_time is not None and self.include:
            raise ValueError(_PIT_INCLUDE)
        if self.destination.volume is not None and (
                self.include or self.source.database is not None or self.source.globals):
            raise ValueError(_VOLUME_WHOLE)
        return self


class PlannedBackup(StatusModel):
    """One backup the restore applies."""

    backup_id: str = Field(description="Id of the backup in the repository.")


class RestorePlan(StatusModel):
    """What the restore applies, resolved from the repository."""

    target: str | None = Field(default=None, description="Source target's repository name.")
    backups: list[PlannedBackup] = Field(
        default_factory=list, description="Backups applied in order, the full first."
    )
    restored_to: datetime | None = Field(
        default=None, description="The time the restored data will reflect."
    )


class RestoreStatus(StatusModel):
    """Observed state of a Restore."""

    phase: RestorePhase | None = Field(
        default=None, description="Pending, Planning, Planned, Running, Completed or Failed."
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the status reflects."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Completed: whether the restore is done, and why not."
    )
    job_name: str | None = Field(default=None, description="The runner Job of the current step.")
    plan: RestorePlan | None = Field(default=None, description="What the restore applies.")
    backup_id: str | None = Field(default=None, description="The backup restored.")
    started_at: datetime | None = Field(default=None, description="When the restore started.")
    completed_at: datetime | None = Field(default=None, description="When it finished.")
    restored_to: datetime | None = Field(
        default=None, description="The time the restored data reflects."
    )
    duration_seconds: float | None = Field(default=None, description="Wall time of the restore.")
    error: ErrorInfo | None = Field(default=None, description="Why the restore failed.")

    def _set(self, phase: RestorePhase, status: Literal["True", "False"], reason: str,
             message: str, generation: int | None, now: datetime | None,
             **changes: object) -> RestoreStatus:
        return self.model_copy(update={
            **changes, "phase": phase, "observed_generation": generation,
            "conditions": list(set_condition(self.conditions, COMPLETED, status, reason, message,
                                             generation=generation, now=now)),
        })

    def pending(self, generation: int | None, now: datetime | None = None) -> RestoreStatus:
        return self._set("Pending", "False", "Pending", "waiting for the plan", generation, now)

    def planning(self, job_name: str, generation: int | None,
                 now: datetime | None = None) -> RestoreStatus:
        now = now or utcnow()
        return self._set("Planning", "False", "Planning",
                         f"runner Job {job_name} is resolving the backups to apply",
                         generation, now, job_name=job_name, started_at=self.started_at or now)

    def planned(self, result: TaskResult, dry_run: bool, generation: int | None,
                now: datetime | None = None) -> RestoreStatus:
        """The plan is known; a dry run ends here (Completed, reason DryRun)."""
        now = now or utcnow()
        plan = RestorePlan(target=result.target, restored_to=result.restored_to,
                           backups=[PlannedBackup(backup_id=b) for b in result.chain])
        chain = " -> ".join(result.chain) or "(none)"
        if dry_run:
            return self._set("Completed", "True", "DryRun", f"dry run: would apply {chain}",
                             generation, now, plan=plan, backup_id=result.backup_id,
                             completed_at=now, job_name=None)
        return self._set("Planned", "False", "Planned", f"will apply {chain}", generation, now,
                         plan=plan, backup_id=result.backup_id, job_name=None)

    def running(self, job_name: str, generation: int | None,
                now: datetime | None = None) -> RestoreStatus:
        now = now or utcnow()
        return self._set("Running", "False", "Running",
                         f"runner Job {job_name} is restoring {self.backup_id or 'the backup'}",
                         generation, now, job_name=job_name, started_at=self.started_at or now)

    def completed(self, result: TaskResult, generation: int | None,
                  now: datetime | None = None) -> RestoreStatus:
        now = now or utcnow()
        return self._set("Completed", "True", "Completed",
                         f"restored {result.backup_id} ({len(result.chain)} backup(s))",
                         generation, now, backup_id=result.backup_id or self.backup_id,
                         restored_to=result.restored_to, duration_seconds=result.seconds,
                         completed_at=result.finished_at or now, error=None)

    def failed(self, error: ErrorInfo, generation: int | None,
               now: datetime | None = None) -> RestoreStatus:
        now = now or utcnow()
        message = error.message + (f" (hint: {error.hint})" if error.hint else "")
        return self._set("Failed", "False", condition_reason(error.error_class, "Failed"),
                         message, generation, now, error=error, completed_at=now)

    @property
    def finished(self) -> bool:
        return self.phase in ("Completed", "Failed")


class Restore(KubeModel):
    """A restore of a backup into a database (kind Restore)."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["safehold.dev/v1alpha1"] = API_VERSION
    kind: Literal["Restore"] = "Restore"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: RestoreSpec
    status: RestoreStatus = Field(default_factory=RestoreStatus)

    @classmethod
    def from_body(cls, body: Any) -> Restore:
        return cls.model_validate(dict(body))
