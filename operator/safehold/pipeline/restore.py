"""Restore and verify: decode a backup's chain and hand it to the engine, or just check it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from safehold.api.manifest import Manifest
from safehold.codecs import crypto
from safehold.engines.base import Engine, RestoreRequest, UnsupportedError
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.objects import CorruptObjectError, ObjectReader, ProgressHook, ReadTally
from safehold.pipeline.profile import Profile
from safehold.repository.repo import Repository


def run_restore(engine: Engine, repo: Repository, backup: Manifest,
                keks: Sequence[crypto.Kek], *, include: Sequence[str] | None = None,
                conflict: Literal["fail", "replace"] = "replace",
                workers: int | None = None, progress: ProgressHook | None = None,
                profile: Profile | None = None, tally: ReadTally | None = None
                ) -> list[Manifest]:
    """Restore ``backup`` (with the chain it depends on); returns the chain used.

    ``profile`` (operation "restore") collects where the streaming time goes, ``tally`` the
    sizes of the objects it read (a selective restore reads only some).
    """
    if include and not engine.capabilities.selective_restore:
        raise UnsupportedError(f"the {engine.name} engine does not support selective restore")
    if backup.engine != engine.name:
        raise UnsupportedError(
            f"backup {backup.backup_id} is a {backup.engine} backup; it cannot be restored"
            f" into a {engine.name} target"
        )
    chain = repo.chain(backup)
    keys = DataKeys(repo, keks)
    for manifest in chain:  # unwrap keys and check MACs before touching the target
        keys.for_backup(manifest)
    reader = ObjectReader(repo, keys, workers=workers, tags_suffice=True)
    reader.on_bytes = progress
    reader.profile, reader.tally = profile, tally
    engine.restore(RestoreRequest(chain=chain, include=include, conflict=conflict), reader)
    return chain


@dataclass(frozen=True)
class ObjectCheck:
    backup_id: str
    object: str
    ok: bool
    detail: str = ""


def verify_backup(repo: Repository, backup: Manifest, keys: DataKeys,
                  workers: int | None = None) -> list[ObjectCheck]:
    """Re-read every object of one backup and check frames, authentication, sizes and hashes."""
    try:
        keys.for_backup(backup)
    except crypto.TamperedError as exc:  # a missing or wrong key is not damage: it propagates
        return [ObjectCheck(backup.backup_id, "manifest.json", False, str(exc))]
    reader = ObjectReader(repo, keys, workers=workers)
    results = []
    for record in backup.objects:
        try:
            for _ in reader.open(backup, record.name):
                pass
        except CorruptObjectError as exc:
            results.append(ObjectCheck(backup.backup_id, record.name, False, str(exc)))
        except Exception as exc:  # storage errors: report per object, keep checking the rest
            results.append(ObjectCheck(backup.backup_id, record.name, False,
                                       f"{type(exc).__name__}: {exc}"))
        else:
            results.append(ObjectCheck(backup.backup_id, record.name, True))
    return results
