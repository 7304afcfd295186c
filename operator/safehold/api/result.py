"""What a runner Job reports: the task's result, written as the Pod's termination message.

Kubernetes keeps at most 4096 bytes of a termination message, so :meth:`TaskResult.
to_termination_message` shrinks the result until it fits: long messages and lists are cut first
(``truncated`` says so), and in the worst case only the phase, exit code and the head of the
error remain. Everything left out can be read again from the repository's manifest.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from safehold.api.common import ErrorInfo, KubeModel
from safehold.api.manifest import BackupType

TERMINATION_MESSAGE_LIMIT = 4096
TaskKind = Literal["backup", "restore", "check", "delete", "rewrap", "verify", "list",
                   "stream"]
ResultPhase = Literal["Completed", "Failed", "PartiallyFailed"]
# bytes of a list result's page of backups: with the rest of the result it stays under 4 KiB
LIST_PAGE_BYTES = 3072


class ListedBackup(KubeModel):
    """One backup of a list task's page: what adoption needs, nothing secret (~90 bytes)."""

    id: str = Field(description="The backup id.")
    type: BackupType
    parent: str | None = Field(default=None, description="The parent's id (not for a full).")
    size: int | None = Field(default=None, ge=0, description="Stored bytes.")

    def json_size(self) -> int:
        return len(self.model_dump_json(by_alias=True, exclude_none=True).encode())


class DatabaseResult(KubeModel):
    """One database of a multi-database backup (compact: the result holds up to 4 KiB)."""

    model_config = ConfigDict(extra="ignore")

    database: str | None = Field(
        default=None, description="The database; unset for the server-wide objects (roles,"
        " users and grants).")
    target: str = Field(description="Its name in the repository, e.g. orders@shop.")
    phase: Literal["Completed", "Failed"] = Field(description="Completed or Failed.")
    backup_id: str | None = Field(default=None, description="Id of its backup.")
    type: BackupType | None = Field(default=None, description="Type actually taken.")
    raw_bytes: int | None = Field(default=None, ge=0, description="Bytes read from it.")
    stored_bytes: int | None = Field(default=None, ge=0, description="Bytes stored.")
    error_class: str | None = Field(default=None, description="Class of the failure.")
    message: str | None = Field(default=None, description="Why it failed.")


class PipelineFigures(KubeModel):
    """Where a backup's or restore's time went (safehold.pipeline.profile.StageReport)."""

    model_config = ConfigDict(extra="ignore")

    stage_seconds: dict[str, float] = Field(
        default_factory=dict,
        description="Thread-seconds per pipeline stage: a backup's read (from the database),"
        " compress, encrypt, hash, write (to storage); a restore's read (from storage), hash,"
        " decrypt, decompress, write (to the database); and waiting (for the codec pool).",
    )
    stage_cpu_seconds: dict[str, float] = Field(
        default_factory=dict,
        description="CPU seconds of the threads in each stage (below stageSeconds: they waited"
        " for a core, the GIL, the database or storage).")
    wall_seconds: float | None = Field(
        default=None, ge=0, description="Wall time of the run the figures cover.")
    cpu_seconds: float | None = Field(
        default=None, ge=0, description="CPU of the runner and the tools it ran.")
    tool_cpu_seconds: float | None = Field(
        default=None, ge=0, description="The tools' part of cpuSeconds (pg_dump, pg_restore,"
        " ...).")
    tool_stages: list[str] = Field(
        default_factory=list,
        description="Stages the engine's tools did themselves, whose time is inside another"
        " stage's: 'compress' inside a backup's read (pg_dump --compress), 'decompress' inside"
        " a restore's write (its pg_restore).")
    cores: int | None = Field(default=None, ge=1, description="Cores the runner could use.")
    cores_busy: float | None = Field(
        default=None, ge=0, le=1, description="The whole machine's CPU use over the run (0..1).")
    bottleneck: str | None = Field(default=None, description="The stage that did the most work.")
    summary: str | None = Field(
        default=None, description="e.g. 'bottleneck: compression (cores busy 97%, ...)'.")


class TaskResult(KubeModel):
    """A runner's report on one task; which fields are set depends on the task's kind."""

    model_config = ConfigDict(extra="ignore")  # a newer runner may report more

    kind: TaskKind | None = Field(
        default=None, description="The task's kind; unset when the task could not be read."
    )
    phase: ResultPhase
    exit_code: int = Field(default=0, description="The runner's exit code (0 on success).")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float | None = Field(default=None, ge=0, description="Wall time of the task.")
    stage_seconds: dict[str, float] = Field(
        default_factory=dict, description="Wall time per stage, e.g. {check: 0.2, backup: 41.5}."
    )
    # backup, and the backup a restore applied
    target: str | None = Field(default=None, description="The target's name in the repository.")
    backup_id: str | None = None
    type: BackupType | None = None
    parent_id: str | None = None
    chain_id: str | None = None
    chain: list[str] = Field(default_factory=list, description="Backup ids, root (full) first.")
    start_position: dict[str, str] | None = None
    end_position: dict[str, str] | None = None
    raw_bytes: int | None = Field(default=None, ge=0)
    stored_bytes: int | None = Field(default=None, ge=0)
    compression_ratio: float | None = Field(default=None, ge=0)
    throughput_bytes_per_second: float | None = Field(default=None, ge=0)
    objects: int | None = Field(default=None, ge=0)
    location: str | None = Field(default=None, description="Where the backup lives (no secrets).")
    key_id: str | None = Field(default=None, description="Key that wraps the backup's data key.")
    encryption: str | None = None
    compression: str | None = None
    server_version: str | None = None
    pipeline: PipelineFigures | None = Field(
        default=None, description="Backup and restore: where the streaming time went.")
    # restore
    restored_to: datetime | None = Field(
        default=None, description="The point in time the restored data reflects."
    )
    plan_only: bool = False
    # check
    problems: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    # verify
    checked: int | None = Field(default=None, ge=0, description="Objects verified.")
    failures: list[str] = Field(default_factory=list)
    # delete
    deleted: list[str] = Field(default_factory=list, description="Backup ids deleted.")
    freed_bytes: int | None = Field(default=None, ge=0)
    # rewrap
    rewrapped: int | None = Field(default=None, ge=0)
    active_key_id: str | None = None
    retired_key_ids: list[str] = Field(default_factory=list)
    # list
    backups: list[ListedBackup] = Field(
        default_factory=list, description="A page of backups, oldest first (list tasks)."
    )
    more: bool = Field(default=False, description="More backups follow: list again after the"
                       " last id of this page.")
    # multi-database backup: each database (and the server-wide objects)
    databases: list[DatabaseResult] = Field(
        default_factory=list, description="A multi-database backup's databases, each with its"
        " own backup (phase PartiallyFailed when some failed).")
    # failure
    error: ErrorInfo | None = None
    audit_head: dict[str, str] | None = Field(
        default=None, description="Latest hashes of the audit logs this run appended to"
        " (repository, and local when configured): a later check of the history must find them.")
    truncated: bool = Field(
        default=False, description="Parts were cut to fit the 4 KiB termination message."
    )

    @property
    def ok(self) -> bool:
        return self.phase == "Completed"

    @classmethod
    def failure(cls, kind: TaskKind | None, error: ErrorInfo, **facts: object) -> TaskResult:
        """A Failed result carrying ``error`` (and its exit code)."""
        return cls.model_validate(
            {**facts, "kind": kind, "phase": "Failed", "error": error,
             "exit_code": error.exit_code if error.exit_code is not None else 1}
        )

    # -- termination message ---------------------------------------------------------------

    def to_json(self) -> str:
        """Compact camelCase JSON; fields that are unset or empty are left out."""
        body = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        body = {k: v for k, v in body.items() if v not in ([], {}) and v is not False}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    def to_termination_message(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """The result as JSON of at most ``limit`` UTF-8 bytes (Kubernetes keeps 4096)."""
        text = self.to_json()
        if _size(text) <= limit:
            return text
        for budget in (1024, 256, 64, 16):
            text = self._shrunk(budget).to_json()
            if _size(text) <= limit:
                return text
        return self._minimal(limit).to_json()

    @classmethod
    def from_termination_message(cls, text: str) -> TaskResult:
        """Parse a termination message; raises ValueError when it is not a runner result."""
        return cls.model_validate_json(text)

    def _shrunk(self, budget: int) -> TaskResult:
        """Every string cut to ``budget`` bytes and every list to a few items."""
        items = max(2, budget // 32)
        error = None
        if self.error is not None:
            error = self.error.model_copy(update={
                "error_class": _clip(self.error.error_class, 128),
                "message": _clip(self.error.message, budget * 2),
                "hint": _clip(self.error.hint, budget) if self.error.hint else None,
            })
        return self.model_copy(update={
            "truncated": True,
            "error": error,
            "target": _clip(self.target, budget) if self.target else None,
            "backup_id": _clip(self.backup_id, 128) if self.backup_id else None,
            "parent_id": _clip(self.parent_id, 128) if self.parent_id else None,
            "chain_id": _clip(self.chain_id, 128) if self.chain_id else None,
            # keep the newest backups: the root is chain_id, and the tail is what was applied
            "chain": [_clip(b, 128) for b in self.chain[-items:]],
            "location": _clip(self.location, budget) if self.location else None,
            "server_version": _clip(self.server_version, budget)
            if self.server_version else None,
            "start_position": _clip_dict(self.start_position, items, budget),
            "end_position": _clip_dict(self.end_position, items, budget),
            "stage_seconds": dict(list(self.stage_seconds.items())[:items]),
            "problems": _clip_list(self.problems, items, budget),
            "notes": _clip_list(self.notes, items, budget),
            "failures": _clip_list(self.failures, items, budget),
            "deleted": [_clip(b, 128) for b in self.deleted[:items]],
            "databases": [d.model_copy(update={
                "database": _clip(d.database, 64) if d.database else None,
                "target": _clip(d.target, 200),
                "message": _clip(d.message, budget // 2) if d.message else None,
            }) for d in self.databases[:items]],
            "retired_key_ids": [_clip(k, 128) for k in self.retired_key_ids[:items]],
            "key_id": _clip(self.key_id, 128) if self.key_id else None,
            "active_key_id": _clip(self.active_key_id, 128) if self.active_key_id else None,
            "encryption": _clip(self.encryption, 64) if self.encryption else None,
            "compression": _clip(self.compression, 64) if self.compression else None,
        })

    def _minimal(self, limit: int) -> TaskResult:
        """The last resort: phase, exit code, backup id and the head of the error."""
        error = None
        if self.error is not None:
            error = ErrorInfo(error_class=_clip(self.error.error_class, 64),
                              message=_clip(self.error.message, max(0, limit // 4)),
                              exit_code=self.error.exit_code, transient=self.error.transient)
        return TaskResult(kind=self.kind, phase=self.phase, exit_code=self.exit_code,
                          backup_id=_clip(self.backup_id, 64) if self.backup_id else None,
                          error=error, truncated=True)


def _size(text: str) -> int:
    return len(text.encode())


def _clip(text: str | None, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary), marked '…'."""
    text = text or ""
    data = text.encode()
    if len(data) <= limit:
        return text
    keep = max(0, limit - len("…".encode()))
    return data[:keep].decode(errors="ignore") + "…"


def _clip_list(values: list[str], items: int, budget: int) -> list[str]:
    kept = [_clip(v, budget) for v in values[:items]]
    if len(values) > items:
        kept.append(f"… and {len(values) - items} more")
    return kept


def _clip_dict(values: dict[str, str] | None, items: int, budget: int) -> dict[str, str] | None:
    if values is None:
        return None
    return {_clip(k, 64): _clip(v, budget) for k, v in list(values.items())[:items]}
