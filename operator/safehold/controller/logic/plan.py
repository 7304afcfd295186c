"""The restore plan: which backups a Restore applies, full first, from the Backup objects.

Pure: the Backup objects of the namespace in, a plan or a PlanError (a message naming what is
missing and what to do) out. The runner resolves the chain again from the repository's
manifests (the source of truth); the plan recorded in status is what the user reads and what
``dryRun`` stops at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

Obj = dict[str, Any]
COMPLETED = "Completed"


class PlanError(ValueError):
    """No restorable backup matches; the message says which and why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Step:
    backup_id: str
    type: str
    name: str | None  # the Backup object, when the cluster has one

    def as_status(self) -> Obj:
        return {"backupId": self.backup_id, "type": self.type, "backupName": self.name}


@dataclass(frozen=True)
class Plan:
    target: str  # the BackupTarget whose repository holds the backups
    steps: tuple[Step, ...]

    @property
    def backup_id(self) -> str:
        return self.steps[-1].backup_id

    def summary(self) -> str:
        chain = " -> ".join(f"{s.backup_id} ({s.type})" for s in self.steps)
        return f"restore {self.backup_id} of target {self.target}: {chain}"


def _status(b: Obj) -> Obj:
    return b.get("status") or {}


def _target_of(b: Obj) -> str:
    return str(((b.get("spec") or {}).get("targetRef") or {}).get("name", ""))


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def choose(
    backups: list[Obj],
    *,
    backup_name: str | None = None,
    target: str | None = None,
    backup_id: str | None = None,
    point_in_time: str | None = None,
) -> Obj:
    """The Backup object a Restore's source names (by name, by id, latest, or at a time)."""
    if backup_name:
        found = next((b for b in backups if b["metadata"]["name"] == backup_name), None)
        if found is None:
            raise PlanError(
                "BackupNotFound",
                f"no Backup named {backup_name!r} in this namespace; `kubectl get"
                " backups.safehold.dev` lists them (a fresh cluster adopts a repository's"
                " backups through its BackupTarget)",
            )
        phase = _status(found).get("phase") or "Pending"
        if phase != COMPLETED or not _status(found).get("backupId"):
            raise PlanError(
                "BackupNotRestorable",
                f"Backup {backup_name!r} is {phase}: only a Completed backup can be restored",
            )
        return found
    if not target:
        raise PlanError("InvalidSource", "the source names neither a backup nor a target")
    done = [
        b for b in backups
        if _target_of(b) == target and _status(b).get("phase") == COMPLETED
        and _status(b).get("backupId")
    ]
    if backup_id and backup_id != "latest":
        found = next((b for b in done if _status(b)["backupId"] == backup_id), None)
        if found is None:
            raise PlanError(
                "BackupNotFound",
                f"target {target!r} has no Completed backup with id {backup_id!r}",
            )
        return found
    if point_in_time:
        t = _parse_time(point_in_time)
        done = [
            b for b in done
            if _status(b).get("completedAt") and _parse_time(_status(b)["completedAt"]) <= t
        ]
        if not done:
            raise PlanError(
                "NoBackupBeforeTime",
                f"target {target!r} has no Completed backup finished at or before {point_in_time}",
            )
    if not done:
        raise PlanError("NoBackups", f"target {target!r} has no Completed backup yet")
    return max(done, key=lambda b: _status(b)["backupId"])  # ids sort in time order


def chain(backups: list[Obj], chosen: Obj) -> Plan:
    """The chosen backup and its ancestors, full first."""
    by_id = {
        _status(b)["backupId"]: b for b in backups
        if _status(b).get("backupId") and _target_of(b) == _target_of(chosen)
    }
    steps: list[Step] = []
    seen: set[str] = set()
    current: Obj | None = chosen
    cur_id = _status(chosen)["backupId"]
    while True:
        if cur_id in seen:
            raise PlanError("BrokenChain", f"backup {cur_id} is its own ancestor")
        seen.add(cur_id)
        st = _status(current) if current else {}
        kind = st.get("type") or ((current or {}).get("spec") or {}).get("type") or "unknown"
        steps.append(Step(cur_id, str(kind), current["metadata"]["name"] if current else None))
        parent = st.get("parentId") if current else None
        if not parent:
            break
        cur_id = str(parent)
        current = by_id.get(cur_id)
        if current is None:
            # not in the cluster (pruned object, Retain): the runner finds it in the repository
            steps.append(Step(cur_id, "unknown", None))
            break
    return Plan(_target_of(chosen), tuple(reversed(steps)))
