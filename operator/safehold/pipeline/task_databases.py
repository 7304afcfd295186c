"""A backup task of a target naming several databases (the operator's side of
``safehold backup --databases``): each database its own backup under ``target@database``, all
with the task's backup id, plus the server-wide objects when asked.

One database failing does not stop the others. The result lists each (``databases``) and its
phase is Completed, PartiallyFailed (exit 12: the Job retries, and a retry reports the
databases already complete instead of taking them again) or Failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager

from safehold.api import databases as dbnames
from safehold.api.common import ErrorInfo
from safehold.api.errors import Exit, SafeholdError
from safehold.api.result import DatabaseResult, TaskResult
from safehold.api.task import BackupTask
from safehold.codecs import crypto
from safehold.codecs.compression import Codec, parse_codec
from safehold.engines import servers
from safehold.engines.base import Engine, redact_url
from safehold.pipeline.backup import BackupOptions, run_backup
from safehold.pipeline.profile import Profile
from safehold.repository import layout
from safehold.repository.lease import Lease
from safehold.repository.repo import Repository

log = logging.getLogger("safehold.task")


def backup_databases(task: BackupTask, stages: object, env: Mapping[str, str]) -> TaskResult:
    from safehold.pipeline.tasks import (
        Stages,
        _lease,
        database_settings,
        load_keys,
        open_repository,
    )

    assert isinstance(stages, Stages)
    with stages("open"):
        repo = open_repository(task.repository)
        keks = load_keys(task.encryption)
        url, options = database_settings(task.database, env)
        names = list(task.databases or ()) or servers.list_databases(url, options)
    codec = parse_codec(task.compression)
    jobs: list[tuple[str | None, str, Callable[[], Engine]]] = [
        (db, dbnames.database_key(task.target, db),
         lambda db=db: servers.open_database(url, db, options))  # type: ignore[misc]
        for db in names]
    if task.globals:
        jobs.append((None, dbnames.globals_key(task.target),
                     lambda: servers.globals_engine(url, options)))
    results: list[DatabaseResult] = []
    first_error: ErrorInfo | None = None
    with stages("backup"):
        for db, key, engine in jobs:
            try:
                results.append(_one(repo, task, db, key, engine, keks, codec, _lease))
            except SafeholdError as exc:
                log.error("backup of %s failed: %s", key, exc.message)
                error = ErrorInfo(error_class=exc.error_class, message=redact_url(exc.message),
                                  exit_code=int(exc.exit_code), hint=exc.hint,
                                  transient=exc.transient)
                first_error = first_error or error
                results.append(DatabaseResult(database=db, target=key, phase="Failed",
                                              error_class=error.error_class,
                                              message=error.message))
    done = [r for r in results if r.phase == "Completed"]
    status = dbnames.run_status(len(done), len(results) - len(done))
    facts = stages.facts()
    common = {"kind": "backup", "target": task.target, "backup_id": task.backup_id,
              "type": task.type, "databases": results,
              "raw_bytes": sum(r.raw_bytes or 0 for r in done),
              "stored_bytes": sum(r.stored_bytes or 0 for r in done),
              "location": redact_url(repo.url), **facts}
    if status == "success":
        return TaskResult(phase="Completed", **common)
    assert first_error is not None
    failed = len(results) - len(done)
    if status == "partial":
        error = first_error.model_copy(update={
            "error_class": "PartialFailure", "exit_code": int(Exit.PARTIAL),
            "message": f"{failed} of {len(results)} failed, first: {first_error.message}"})
        return TaskResult(phase="PartiallyFailed", exit_code=int(Exit.PARTIAL), error=error,
                          **common)
    return TaskResult(phase="Failed", exit_code=first_error.exit_code or 1, error=first_error,
                      **common)


def _one(repo: Repository, task: BackupTask, database: str | None, key: str,
         engine: Callable[[], Engine], keks: Sequence[crypto.Kek], codec: Codec,
         lease: Callable[..., AbstractContextManager[Lease]]) -> DatabaseResult:
    if task.backup_id and repo.storage.exists(layout.manifest_key(key, task.backup_id)):
        manifest = repo.manifest(key, task.backup_id)  # a retried Job: reported, not taken again
    else:
        options = BackupOptions(
            target=key, type=task.type if database is not None else "full",
            codec=codec,
            chunk_size=task.chunk_size, no_encryption=task.encryption.mode == "none",
            namespace=task.namespace, database=database)
        opened = engine()
        with lease(repo, key, "backup", task.backup_id) as held:
            manifest = run_backup(opened, repo, options, keks[0] if keks else None, keks[1:],
                                  backup_id=task.backup_id, lease=held,
                                  profile=Profile("backup"))
    return DatabaseResult(database=database, target=key, phase="Completed",
                          backup_id=manifest.backup_id, type=manifest.type,
                          raw_bytes=manifest.raw_bytes, stored_bytes=manifest.stored_bytes)
