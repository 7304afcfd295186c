"""What deleting a Backup object does to its data (``deletionPolicy``).

Retain (the default): nothing — the object goes, the data stays. Delete: a runner Job removes
the backup from the repository, but not while a kept backup depends on it, and never at the
price of a terminating namespace hanging: there, the data is retained and an event says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

Obj = dict[str, Any]


class Action(StrEnum):
    RELEASE = "release"  # nothing to delete: let the object go
    BLOCK = "block"  # refuse for now, with a condition saying why
    RUN_JOB = "run-job"  # delete the data through a runner Job
    RETAIN = "retain"  # cannot delete: keep the data, let the object go, say so


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    message: str


def _kept(b: Obj) -> bool:
    """Will this Backup's data still exist after everything being deleted now is gone?"""
    deleting = bool(b["metadata"].get("deletionTimestamp"))
    policy = (b.get("spec") or {}).get("deletionPolicy") or "Retain"
    return not (deleting and policy == "Delete")


def dependents(backup: Obj, others: list[Obj]) -> list[str]:
    """Names of kept Backups whose chain runs through ``backup``."""
    me = (backup.get("status") or {}).get("backupId")
    uid = backup["metadata"].get("uid")
    if not me:
        return []
    names = []
    for b in others:
        st = b.get("status") or {}
        if b["metadata"].get("uid") == uid or not _kept(b):
            continue
        if me in (st.get("parentId"), st.get("chainId")) and st.get("backupId") != me:
            names.append(b["metadata"]["name"])
    return sorted(names)


def decide(backup: Obj, others: list[Obj], *, namespace_terminating: bool) -> Decision:
    st = backup.get("status") or {}
    if not st.get("backupId") or st.get("phase") not in ("Completed", "Failed", "Running",
                                                          "PartiallyFailed"):
        return Decision(Action.RELEASE, "NothingToDelete",
                        "the backup never started writing: nothing to delete")
    deps = dependents(backup, others)
    if namespace_terminating:
        # no delete Job here: the namespace controller deletes Jobs as it empties the namespace
        # (and admission refuses new ones), so one could be cut off half-way or never start
        why = (f"kept backups depend on this one ({', '.join(deps)})" if deps
               else "no delete Job can run there")
        return Decision(
            Action.RETAIN, "RetainedDependents" if deps else "NamespaceTerminating",
            f"namespace is terminating and {why}: its data is retained in the repository",
        )
    if deps:
        return Decision(
            Action.BLOCK, "DependentBackups",
            f"kept backups depend on this one: {', '.join(deps)}; delete them first or set"
            " their deletionPolicy to Delete (or set this one's to Retain to keep the data)",
        )
    return Decision(Action.RUN_JOB, "Deleting", "removing the backup's data from the repository")
