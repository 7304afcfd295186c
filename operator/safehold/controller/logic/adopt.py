"""Adoption: a BackupTarget whose repository already holds backups (disaster recovery on a fresh
cluster) gets Backup objects for ALL of them, marked imported, so a Restore can name any.

The runner's ``list`` task reports the target's backups page by page (id, type, parent, size;
oldest first; a page fits the 4 KiB termination message and says ``more``). Each page becomes
Backup manifests for the ids no Backup object of the target knows yet; the next page lists
after the page's newest id, and so does a later re-check (``status.adoptedThrough``), so a
Backup object deleted after it was listed is not imported again.

Pure: the page and the Backups that exist in, the Backup manifests (with their status facts) out.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from safehold.api.common import API_VERSION
from safehold.api.result import ListedBackup, TaskResult
from safehold.controller import naming

Obj = dict[str, Any]


def backup_name(target: str, backup_id: str) -> str:
    """``<target>-<id>`` as a DNS name: ``20261202T101112.123456Z`` -> ``...-123456z``."""
    slug = re.sub(r"[^a-z0-9]+", "-", backup_id.lower()).strip("-")
    name = f"{target}-{slug}"
    if len(name) > 253:
        name = f"{target[:200]}-{hashlib.sha256(backup_id.encode()).hexdigest()[:12]}-{slug}"
    return name


def _ids_of(b: Obj) -> list[str]:
    """The repository ids a Backup object stands for: its recorded id, its spec's id, and for
    one not started yet the id the operator will give it (naming.backup_id)."""
    spec, status, meta = b.get("spec") or {}, b.get("status") or {}, b.get("metadata") or {}
    ids = [i for i in (status.get("backupId"), spec.get("backupId")) if i]
    if not ids and meta.get("creationTimestamp") and meta.get("uid"):
        ids.append(naming.backup_id(meta["creationTimestamp"], meta["uid"]))
    return ids


def known_ids(backups: list[Obj], target: str) -> set[str]:
    return {i for b in backups
            if ((b.get("spec") or {}).get("targetRef") or {}).get("name") == target
            for i in _ids_of(b)}


def _chains(backups: list[Obj], target: str) -> dict[str, str]:
    """backup id -> its chain's (full's) id, from what the Backup objects recorded."""
    out = {}
    for b in backups:
        if ((b.get("spec") or {}).get("targetRef") or {}).get("name") != target:
            continue
        status = b.get("status") or {}
        if status.get("backupId") and status.get("chainId"):
            out[status["backupId"]] = status["chainId"]
    return out


def started_at(backup_id: str) -> datetime | None:
    """The start time a backup id encodes (``YYYYmmddTHHMMSS.ffffffZ``)."""
    try:
        return datetime.strptime(backup_id, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def to_adopt(page: list[ListedBackup], target: str, repo_target: str, existing: list[Obj]
             ) -> list[tuple[Obj, TaskResult]]:
    """(Backup manifest, its facts for status) for each listed backup not yet known, oldest
    first. A parent listed on an earlier page is found through the Backup objects made then."""
    known = known_ids(existing, target)
    chains = _chains(existing, target)
    out = []
    for b in sorted(page, key=lambda e: e.id):
        chain_id = b.id if b.type == "full" else chains.get(b.parent or "")
        if chain_id:
            chains[b.id] = chain_id
        if b.id in known:
            continue
        facts = TaskResult(kind="list", phase="Completed", target=repo_target, backup_id=b.id,
                           type=b.type, parent_id=b.parent, chain_id=chain_id,
                           stored_bytes=b.size, started_at=started_at(b.id))
        manifest = {
            "apiVersion": API_VERSION,
            "kind": "Backup",
            "metadata": {
                "name": backup_name(target, b.id),
                "labels": {naming.IMPORTED: "true", naming.TARGET: target[:63],
                           naming.MANAGED_BY: naming.OPERATOR},
            },
            # the data is not this cluster's to delete until someone says so
            "spec": {"targetRef": {"name": target}, "type": b.type, "backupId": b.id,
                     "deletionPolicy": "Retain"},
        }
        out.append((manifest, facts))
    return out
