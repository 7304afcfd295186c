"""Restoring a physical backup chain into a new data directory (no database connection)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from safehold.api.errors import Unsupported
from safehold.api.manifest import BackupMethod, Manifest, method_of
from safehold.codecs import crypto
from safehold.engines.base import Engine
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.objects import ObjectReader, ProgressHook
from safehold.pipeline.profile import Profile
from safehold.repository.repo import Repository


def run_data_dir_restore(repo: Repository, backup: Manifest, keks: Sequence[crypto.Kek],
                         data_dir: Path, *, progress: ProgressHook | None = None,
                         profile: Profile | None = None) -> list[Manifest]:
    """Restore ``backup`` and its chain into the new data directory ``data_dir``; the chain."""
    from safehold.engines.postgres.physical_restore import (  # only PostgreSQL has them
        chain_problems,
        check_destination,
        restore_data_dir,
    )
    from safehold.engines.recovery import BrokenChain

    if backup.engine != "postgresql" or method_of(backup) != "physical":
        raise Unsupported(
            f"backup {backup.backup_id} is a {method_of(backup)} {backup.engine} backup:"
            " --data-dir restores physical PostgreSQL backups; restore it into a database"
            " with --target instead", hint="leave out --data-dir and give --target")
    check_destination(data_dir)
    chain = repo.chain(backup)
    problems = chain_problems(chain)
    if problems:  # found from manifests, before any key is unwrapped or byte read
        raise BrokenChain("cannot restore this chain: " + "; ".join(problems))
    keys = DataKeys(repo, keks)
    for manifest in chain:  # unwrap keys and check MACs before touching anything
        keys.for_backup(manifest)
    reader = ObjectReader(repo, keys)
    reader.on_bytes = progress
    reader.profile = profile
    restore_data_dir(chain, reader, data_dir)
    return chain


def method_problems(engine: Engine, method: BackupMethod) -> list[str]:
    """What keeps ``engine``'s target from taking ``method`` backups (logical: nothing more
    than its own check)."""
    if method == "logical":
        return []
    check = getattr(engine, "check_physical", None)
    if check is None or not engine.capabilities.physical_types:
        return [f"the {engine.name} engine has no physical backups: use method logical"]
    problems: list[str] = check()
    return problems
