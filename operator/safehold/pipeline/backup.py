"""One backup, start to finish: resolve the chain, stream the engine's objects, write the manifest.

The manifest is written last, so a backup interrupted at any point (even by kill -9) does not
exist for readers; prune removes its leftovers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from safehold import __version__
from safehold.api.manifest import PIPELINE_KEY, BackupMethod, BackupType, Manifest, method_of
from safehold.codecs import crypto
from safehold.codecs.compression import Codec, parse_codec
from safehold.engines.base import BackupRequest, Engine, check_request
from safehold.pipeline.keys import (
    DataKeys,
    backup_context,
    check_active,
    read_wrapped_key,
    write_wrapped_key,
)
from safehold.pipeline.objects import ObjectReader, ObjectWriter, ProgressHook
from safehold.pipeline.profile import Profile
from safehold.pipeline.stream import DEFAULT_CHUNK_SIZE
from safehold.repository import layout
from safehold.repository.lease import Lease
from safehold.repository.repo import Repository, RepositoryError
from safehold.repository.trust import establish
from safehold.storage.base import NoSpaceError

log = logging.getLogger("safehold.backup")


@dataclass(frozen=True)
class BackupOptions:
    target: str
    type: BackupType = "full"
    method: BackupMethod = "logical"
    codec: Codec | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    include: Sequence[str] | None = None
    workers: int | None = None
    no_encryption: bool = False  # the explicit choice an unencrypted target needs
    namespace: str | None = None  # the operator's namespace: the full name is namespace/target
    database: str | None = None  # one database of a multi-database target (api/databases.py)


def parent_chain(repo: Repository, target: str, backup_type: BackupType,
                 method: BackupMethod = "logical") -> list[Manifest]:
    """The chain a new backup extends: [] for a full; the newest chain (root first) otherwise.

    An incremental extends the newest backup of any type; a differential extends the newest full;
    both only among the backups of their ``method`` (a physical incremental never chains onto
    a logical full).
    """
    if backup_type == "full":
        return []
    backups = [m for m in repo.backups(target) if method_of(m) == method]
    if not backups:
        return []
    if backup_type == "differential":
        fulls = [m for m in backups if m.type == "full"]
        return fulls[-1:]
    return repo.chain(backups[-1], backups)


def check_database(engine: Engine, need: int | None = None) -> int | None:
    """The database's estimated size, ``need`` if the caller already asked (on a large catalog
    asking again is a query of its own). This is a backup's first contact with the database,
    made before anything is written to the repository (a new target's policy record, the
    backup's key record): an unreachable database fails here, and so does a missing one."""
    if need is None:
        need = engine.estimate_size()
    if need is None:  # missing, or empty: only a missing one is an error
        engine.require_database()
    return need


def check_free_space(repo: Repository, need: int | None) -> None:
    """Refuse a backup of ``need`` bytes (the engine's estimate) that cannot fit."""
    free = repo.storage.free_space()
    if free is not None and need is not None and free < need:
        raise NoSpaceError(
            f"{repo.url} has {free / 2**20:.0f} MiB free but the database is"
            f" {need / 2**20:.0f} MiB uncompressed; free space or choose another repository"
        )


def resumed_data_key(repo: Repository, target: str, backup_id: str,
                     keks: Sequence[crypto.Kek]) -> bytes | None:
    """The data key of an interrupted run of ``backup_id``, or None if it wrote no key record.

    Reusing it (with the deterministic chunk encryption) makes the retry store the same bytes,
    so the storage can skip what the first run already uploaded.
    """
    if not repo.storage.exists(layout.keys_key(target, backup_id)):
        return None
    wrapped = read_wrapped_key(repo, target, backup_id)
    return crypto.unwrap_key(keks, wrapped, backup_context(backup_id))


def check_resumable(repo: Repository, target: str, backup_id: str) -> None:
    if not layout.is_backup_id(backup_id):
        raise ValueError(
            f"invalid backup id {backup_id!r}: use the form 20261126T114217.123456Z"
            f" (e.g. {layout.new_backup_id()}), the same on every retry of one backup"
        )
    if repo.storage.exists(layout.manifest_key(target, backup_id)):
        raise RepositoryError(
            f"backup ID {backup_id} of {target} is already complete in {repo.url};"
            " use a new backup id (or none) for a new backup"
        )


def guarded(progress: ProgressHook | None, lease: Lease | None) -> ProgressHook | None:
    """The progress hook, also stopping the stream (LeaseLost) as soon as the lease is lost."""
    if lease is None:
        return progress

    def hook(n: int) -> None:
        if progress is not None:
            progress(n)
        lease.check()

    return hook


def run_backup(engine: Engine, repo: Repository, options: BackupOptions,
               kek: crypto.Kek | None, keks: Sequence[crypto.Kek] = (), *,
               progress: ProgressHook | None = None, backup_id: str | None = None,
               lease: Lease | None = None, profile: Profile | None = None,
               estimated_size: int | None = None) -> Manifest:
    """Take one backup; returns its manifest once it is durable in the repository.

    ``kek`` encrypts the backup unless ``options.no_encryption``; the target's recorded policy
    (repository/trust.py) decides whether that is allowed, and a new target without a key and
    without ``no_encryption`` is refused. ``backup_id`` names the backup instead of the start
    time; running again with the same id after an interruption resumes it (same data key,
    uploads continue from stored parts). ``lease`` is the target's lease, held by the caller
    (safehold.repository.lease): losing it stops the backup, at the latest right before the
    manifest would be written. ``profile`` collects where the streaming time goes.
    ``estimated_size`` is ``engine.estimate_size()`` when the caller has already asked.
    """
    target = layout.check_target_name(options.target)
    codec = options.codec or parse_codec("zstd")
    backup_type = options.type
    check_request(engine, backup_type, method=options.method)
    chain = parent_chain(repo, target, backup_type, options.method)
    if backup_type != "full" and not chain:
        log.warning("no %s full backup of %s yet: taking a full backup instead of %s",
                    options.method, target, backup_type)
        backup_type = "full"
    if kek is not None and not options.no_encryption:
        check_active(repo, kek)
    if backup_id is not None:
        check_resumable(repo, target, backup_id)
    check_free_space(repo, check_database(engine, estimated_size))
    establish(repo, target, options.namespace, kek, no_encryption=options.no_encryption)
    all_keks = [kek, *keks] if kek else list(keks)  # to read the parent's objects
    if options.no_encryption:
        kek = None

    started = datetime.now(UTC)
    backup_id = backup_id or layout.new_backup_id(started)
    data_key = None
    if kek is not None:
        data_key = resumed_data_key(repo, target, backup_id, [kek, *keks])
        if data_key is None:
            data_key = os.urandom(crypto.KEY_SIZE)
            if lease is not None:
                lease.check()
            write_wrapped_key(repo, target, backup_id, kek, data_key)
        else:
            log.info("resuming backup %s of %s with its data key", backup_id, target)
    reader = ObjectReader(repo, DataKeys(repo, all_keks),
                          workers=options.workers)
    writer = ObjectWriter(repo, target, backup_id, codec, data_key,
                          chunk_size=options.chunk_size, workers=options.workers)
    writer.on_bytes = guarded(progress, lease)
    writer.profile = profile
    outcome = engine.backup(BackupRequest(type=backup_type, chain=chain, include=options.include,
                                          method=options.method, compression=codec.spec),
                            writer, reader)
    parent = None if not chain else (chain[0] if backup_type == "differential" else chain[-1])
    manifest = Manifest(
        backup_id=backup_id,
        target=target,
        namespace=options.namespace,
        database=options.database,
        repo_id=repo.ensure_repo_id(),  # read again: a concurrent creator's id may have won
        engine=engine.name,
        server_version=outcome.server_version,
        type=backup_type,
        parent_id=parent.backup_id if parent else None,
        chain_id=chain[0].backup_id if chain else backup_id,
        started_at=started,
        finished_at=datetime.now(UTC),
        start_position=outcome.start_position,
        end_position=outcome.end_position,
        compression=codec.spec,
        encryption="aes-256-gcm" if data_key is not None else "none",
        chunk_size=options.chunk_size,
        objects=tuple(writer.records),
        include=tuple(options.include) if options.include else None,
        engine_meta={**outcome.engine_meta,
                     **({"method": "physical"} if options.method == "physical" else {}),
                     **({PIPELINE_KEY: profile.report().manifest_record()} if profile else {})},
        tools={"safehold": __version__, **outcome.tools},
    )
    if data_key is not None:
        manifest = manifest.model_copy(
            update={"mac": crypto.manifest_mac(data_key, manifest.signing_bytes())})
    if lease is not None:
        lease.confirm()  # still ours, renewed for a full TTL: no one can break it meanwhile
    repo.write_manifest(manifest)
    log.info("backup %s of %s complete: %d objects, %d bytes raw, %d stored",
             backup_id, target, len(manifest.objects), manifest.raw_bytes, manifest.stored_bytes)
    return manifest
