"""Adoption: a BackupTarget whose repository already holds backups (disaster recovery on a fresh
cluster) gets Backup objects for them, marked imported, so a Restore can name them.

What is adopted is what the runner's plan of ``latest`` reports: the newest backup and the chain
it builds on (full first) — everything needed to restore the newest state. Older chains stay in
the repository (restorable by id through ``targetRef`` + ``backupId``) without objects.

Pure: the plan result and the Backups that exist in, the Backup manifests to create out.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from safehold.api.common import API_VERSION
from safehold.api.result import TaskResult
from safehold.controller import naming

Obj = dict[str, Any]


def backup_name(target: str, backup_id: str) -> str:
    """``<target>-<id>`` as a DNS name: ``20261202T101112.123456Z`` -> ``...-123456z``."""
    slug = re.sub(r"[^a-z0-9]+", "-", backup_id.lower()).strip("-")
    name = f"{target}-{slug}"
    if len(name) > 253:
        name = f"{target[:200]}-{hashlib.sha256(backup_id.encode()).hexdigest()[:12]}-{slug}"
    return name


def known_ids(backups: list[Obj], target: str) -> set[str]:
    out = set()
    for b in backups:
        if ((b.get("spec") or {}).get("targetRef") or {}).get("name") != target:
            continue
        for bid in ((b.get("status") or {}).get("backupId"), (b.get("spec") or {}).get("backupId")):
            if bid:
                out.add(bid)
    return out


def to_adopt(result: TaskResult, target: str, existing: list[Obj]
             ) -> list[tuple[Obj, TaskResult]]:
    """(Backup manifest, its facts for status) for each backup of the chain not yet known."""
    chain = result.chain or ([result.backup_id] if result.backup_id else [])
    known = known_ids(existing, target)
    out = []
    for i, bid in enumerate(chain):
        if bid in known:
            continue
        last = bid == result.backup_id
        kind = "full" if i == 0 else (result.type if last and result.type else "incremental")
        facts = result if last else TaskResult(
            kind="restore", phase="Completed", target=result.target, backup_id=bid, type=kind,
            parent_id=chain[i - 1] if i else None, chain_id=chain[0],
            chain=chain[: i + 1], key_id=None, location=None)
        manifest = {
            "apiVersion": API_VERSION,
            "kind": "Backup",
            "metadata": {
                "name": backup_name(target, bid),
                "labels": {naming.IMPORTED: "true", naming.TARGET: target[:63],
                           naming.MANAGED_BY: naming.OPERATOR},
            },
            # the data is not this cluster's to delete until someone says so
            "spec": {"targetRef": {"name": target}, "type": kind, "backupId": bid,
                     "deletionPolicy": "Retain"},
        }
        out.append((manifest, facts))
    return out
