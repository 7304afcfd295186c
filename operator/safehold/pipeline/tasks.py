"""Execute a runner task (:mod:`safehold.api.task`) through the same pipeline as the CLI.

``execute(task)`` returns a Completed :class:`~safehold.api.result.TaskResult`, or a Failed one
for a verdict that is not an exception (a check that found problems, a verify that found damage);
anything else raises, and ``safehold run-task`` turns the exception into a Failed result.

Secrets arrive by reference only: :func:`read_secret` reads the environment variable or mounted
file a :class:`~safehold.api.task.SecretInput` names, and :func:`load_key_dir` reads a mounted key
Secret (one file per key; ``active`` names the key that encrypts new backups).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safehold.api.common import ErrorInfo
from safehold.api.errors import Conflict, DatabaseProblem, KeyProblem, UsageError
from safehold.api.manifest import Manifest, stage_timings
from safehold.api.result import LIST_PAGE_BYTES, ListedBackup, PipelineFigures, TaskResult
from safehold.api.task import (
    BackupTask,
    CheckTask,
    DeleteTask,
    ListTask,
    RestoreTask,
    RewrapTask,
    SecretInput,
    Task,
    TaskDatabase,
    TaskEncryption,
    TaskRepository,
    VerifyTask,
)
from safehold.codecs import crypto
from safehold.codecs.compression import parse_codec
from safehold.engines.base import ConnectionOptions, Engine, open_engine, redact_url
from safehold.engines.common import PASSWORD_SOURCES
from safehold.pipeline.backup import BackupOptions, run_backup
from safehold.pipeline.keys import DataKeys, backup_context, read_wrapped_key, write_wrapped_key
from safehold.pipeline.physical import method_problems
from safehold.pipeline.profile import Profile
from safehold.pipeline.restore import run_restore, verify_backup
from safehold.repository import layout
from safehold.repository.lease import (
    DEFAULT_TTL,
    Holder,
    Lease,
    hold,
    ttl_from_env,
    wait_from_env,
)
from safehold.repository.repo import BackupNotFound, Repository
from safehold.repository.trust import resign_policies
from safehold.storage.base import open_storage

log = logging.getLogger("safehold.task")
ACTIVE = "active"  # the file in a key directory that names the active key


class DependentBackups(Conflict):
    """A backup to delete is the parent of one that stays."""


# --------------------------------------------------------------------------- inputs


def read_secret(source: SecretInput, env: Mapping[str, str] = os.environ) -> str:
    """The value an env variable or mounted file holds (trailing newline dropped)."""
    if source.env is not None:
        value = env.get(source.env)
        if not value:
            raise UsageError(f"environment variable {source.env} is not set or empty",
                             hint="the Job must set it from the Secret the resource names")
        return value
    assert source.file is not None
    try:
        return Path(source.file).read_text().rstrip("\r\n")
    except OSError as exc:
        raise UsageError(f"cannot read secret file {source.file}: {exc.strerror}",
                         hint="the Job must mount the Secret the resource names") from None


def open_database(db: TaskDatabase, env: Mapping[str, str] = os.environ) -> Engine:
    return open_engine(*database_settings(db, env))


def database_settings(db: TaskDatabase, env: Mapping[str, str] = os.environ
                      ) -> tuple[str, ConnectionOptions]:
    """The task database's URL and connection options (secrets read from env and files)."""
    url = db.url if db.url is not None else read_secret(_given(db.url_from), env)
    tls = db.tls
    options = ConnectionOptions(
        password=read_secret(db.password_from, env) if db.password_from else None,
        tls=tls.mode if tls else None,
        ca_file=tls.ca_file if tls else None,
        cert_file=tls.cert_file if tls else None,
        key_file=tls.key_file if tls else None,
        connect_timeout=db.connect_timeout,
        jobs=db.jobs,
    )
    return url, options


def open_repository(repo: TaskRepository) -> Repository:
    return Repository(open_storage(repo.url))


def load_key_dir(directory: Path) -> list[crypto.Kek]:
    """Every key in a mounted key Secret, the active one first.

    One file per key (base64 or raw 32 bytes); with several, a file named ``active`` holds the
    name (or key id) of the key that encrypts new backups. Kubernetes' own ``..data`` entries
    are skipped.
    """
    try:
        names = sorted(p.name for p in directory.iterdir()
                       if not p.name.startswith(".") and p.name != ACTIVE and p.is_file())
    except OSError as exc:
        raise KeyProblem(f"cannot read the key directory {directory}: {exc.strerror}",
                         hint="mount the key Secret there") from None
    if not names:
        raise KeyProblem(f"the key Secret mounted at {directory} holds no keys",
                         hint="add a key (safehold keys generate) to the Secret")
    try:
        keks = {name: crypto.load_key_file(directory / name) for name in names}
    except PermissionError as exc:  # the pod runs as a user the Secret volume does not admit
        raise KeyProblem(f"cannot read the key file {exc.filename}: permission denied to uid"
                         f" {os.getuid()} (groups {sorted(os.getgroups())})",
                         hint="run the pod with an fsGroup, so the mounted Secret is readable"
                         " by its group") from None
    active_file = directory / ACTIVE
    if active_file.is_file():
        wanted = active_file.read_text().strip()
        by_id = {k.key_id: name for name, k in keks.items()}
        chosen = wanted if wanted in keks else by_id.get(wanted)
        if chosen is None:
            raise KeyProblem(f"the key Secret names {wanted!r} as active, but holds only"
                             f" {', '.join(names)}", hint="fix the Secret's `active` entry")
    elif len(keks) == 1:
        chosen = names[0]
    else:
        raise KeyProblem(f"the key Secret holds {len(keks)} keys ({', '.join(names)}) and no"
                         " `active` entry naming the one that encrypts new backups",
                         hint="add `active: <key name>` to the Secret")
    return [keks[chosen], *(k for n, k in keks.items() if n != chosen)]


def load_keys(encryption: TaskEncryption) -> list[crypto.Kek]:
    if encryption.mode == "none":
        return []
    return load_key_dir(Path(_given(encryption.key_dir)))


def _given(value: Any) -> Any:
    assert value is not None  # the task model's validators guarantee it
    return value


def name_wired_secrets(result: TaskResult, task: Task) -> TaskResult:
    """``result`` with the engines' CLI advice ("--password-file, SAFEHOLD_PASSWORD or
    PGPASSWORD") replaced by where the operator's user set the password (the task's
    ``passwordOrigin``: the BackupTarget's Secret and key, never a value)."""
    database = getattr(task, "database", None)
    origin = database.password_origin if isinstance(database, TaskDatabase) else None
    if origin is None:
        return result

    def swap(text: str) -> str:
        return PASSWORD_SOURCES.sub(lambda _: origin, text)

    update: dict[str, Any] = {"problems": [swap(p) for p in result.problems]}
    if result.error is not None:
        update["error"] = result.error.model_copy(update={
            "message": swap(result.error.message),
            "hint": swap(result.error.hint) if result.error.hint else None,
        })
    return result.model_copy(update=update)


# --------------------------------------------------------------------------- timing


@dataclass
class Stages:
    """Wall time per stage of a task, for the result's stageSeconds."""

    seconds: dict[str, float] = field(default_factory=dict)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    _t0: float = field(default_factory=time.monotonic)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - t0, 3)

    def facts(self) -> dict[str, Any]:
        return {"started_at": self.started, "finished_at": datetime.now(UTC),
                "seconds": round(time.monotonic() - self._t0, 3), "stage_seconds": self.seconds}


# --------------------------------------------------------------------------- executors


def execute(task: Task, stages: Stages | None = None,
            env: Mapping[str, str] = os.environ) -> TaskResult:
    """Run ``task``; its result (stage timings go into ``stages``)."""
    stages = stages or Stages()
    runners: dict[str, Callable[[Any, Stages, Mapping[str, str]], TaskResult]] = {
        "backup": _backup, "restore": _restore, "check": _check, "delete": _delete,
        "rewrap": _rewrap, "verify": _verify, "list": _list,
    }
    return runners[task.kind](task, stages, env)


def manifest_facts(repo: Repository, m: Manifest) -> dict[str, Any]:
    """What a result says about one backup (no secrets: the location is redacted)."""
    key_id = None
    if m.encryption != "none":
        key_id = read_wrapped_key(repo, m.target, m.backup_id).key_id
    return {
        "target": m.target, "backup_id": m.backup_id, "type": m.type, "parent_id": m.parent_id,
        "chain_id": m.chain_id, "chain": [b.backup_id for b in repo.chain(m)],
        "start_position": m.start_position, "end_position": m.end_position,
        "raw_bytes": m.raw_bytes, "stored_bytes": m.stored_bytes,
        "compression_ratio": m.reported_ratio,
        "objects": len(m.objects),
        "location": redact_url(repo.url).rstrip("/") + "/"
        + layout.backup_prefix(m.target, m.backup_id).rstrip("/"),
        "key_id": key_id, "encryption": m.encryption, "compression": m.compression,
        "server_version": m.server_version or None,
    }


def _throughput(raw: int, seconds: float) -> float:
    return round(raw / max(seconds, 1e-6), 1)


# A retried Job may find its killed predecessor's lease: waiting twice the default TTL lets that
# lease expire instead of failing the retry (SAFEHOLD_LOCK_WAIT overrides).
JOB_LOCK_WAIT = 2 * DEFAULT_TTL


def _lease(repo: Repository, target: str, operation: str, backup_id: str | None = None
           ) -> AbstractContextManager[Lease]:
    """Hold ``target``'s lease, as the CLI's writers do (safehold.repository.lease)."""
    try:
        wait, ttl = wait_from_env(JOB_LOCK_WAIT), ttl_from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    holder = Holder.current(operation, backup_id=backup_id,
                            command=f"safehold run-task {operation}")
    return hold(repo.storage, target, holder, wait=wait, ttl=ttl)


def _backup(task: BackupTask, stages: Stages, env: Mapping[str, str]) -> TaskResult:
    if task.databases or task.all_databases:
        from safehold.pipeline.task_databases import backup_databases

        return backup_databases(task, stages, env)
    with stages("open"):
        repo = open_repository(task.repository)
        keks = load_keys(task.encryption)
        engine = open_database(task.database, env)
        codec = parse_codec(task.compression)
    pipeline: PipelineFigures | None = None  # an earlier run's: from its manifest, if there
    if task.backup_id and repo.storage.exists(layout.manifest_key(task.target, task.backup_id)):
        # a retried Job whose first run finished but could not report: report that backup
        log.info("backup %s of %s is already complete; reporting it", task.backup_id,
                 task.target)
        manifest = repo.manifest(task.target, task.backup_id)
        notes = [f"backup {task.backup_id} was already complete: reported, not taken again"]
        timings = stage_timings(manifest)  # as the first run measured them
        if timings is not None:
            pipeline = PipelineFigures.model_validate(timings.model_dump())
    else:
        notes = []
        profile = Profile("backup")
        options = BackupOptions(target=task.target, type=task.type, method=task.method or "logical",
                                codec=codec,
                                chunk_size=task.chunk_size, include=task.include or None,
                                no_encryption=task.encryption.mode == "none",
                                namespace=task.namespace)
        with stages("backup"), _lease(repo, task.target, "backup", task.backup_id) as lease:
            manifest = run_backup(engine, repo, options, keks[0] if keks else None, keks[1:],
                                  backup_id=task.backup_id, lease=lease, profile=profile)
        pipeline = PipelineFigures.model_validate(profile.report().as_dict())
        log.info("%s", pipeline.summary)
    facts = stages.facts()
    facts["started_at"] = manifest.started_at
    facts["finished_at"] = manifest.finished_at
    elapsed = (manifest.finished_at - manifest.started_at).total_seconds()
    return TaskResult(kind="backup", phase="Completed", **facts, notes=notes,
                      **manifest_facts(repo, manifest), pipeline=pipeline,
                      throughput_bytes_per_second=_throughput(manifest.raw_bytes, elapsed))


def _restore(task: RestoreTask, stages: Stages, env: Mapping[str, str]) -> TaskResult:
    if task.data_dir is not None:
        return _restore_data_dir(task, Path(task.data_dir), stages)
    if task.recovery is not None:
        return _restore_to_point(task, stages, env)
    with stages("plan"):
        repo = open_repository(task.repository)
        keks = load_keys(task.encryption)
        manifest = repo.resolve(task.source, task.backup_id)
        chain = repo.chain(manifest)
        keys = DataKeys(repo, keks)
        for m in chain:  # a missing key or a tampered manifest fails the plan, not the restore
            keys.for_backup(m)
    facts = {**manifest_facts(repo, manifest), "restored_to": manifest.finished_at,
             "plan_only": task.plan_only}
    if task.plan_only:
        return TaskResult(kind="restore", phase="Completed", **stages.facts(), **facts)
    with stages("check"):
        if task.globals:
            from safehold.engines.servers import globals_engine

            engine = globals_engine(*database_settings(_given(task.database), env), "fail")
        else:
            engine = open_database(_given(task.database), env)
        report = engine.check("restore")
        if not report.ok:
            raise DatabaseProblem("cannot restore: " + "; ".join(report.problems))
    profile = Profile("restore")
    with stages("restore"):
        run_restore(engine, repo, manifest, keks, include=task.include or None,
                    conflict=task.conflict_policy, profile=profile)
    pipeline = PipelineFigures.model_validate(profile.report().as_dict())
    log.info("%s", pipeline.summary)
    done = stages.facts()
    return TaskResult(kind="restore", phase="Completed", **done, **facts, pipeline=pipeline,
                      throughput_bytes_per_second=_throughput(
                          manifest.raw_bytes, stages.seconds.get("restore", 0.0)))


def _restore_to_point(task: RestoreTask, stages: Stages, env: Mapping[str, str]
                      ) -> TaskResult:
    """Point in time (the CLI's ``restore --to-time|--to-gtid|--to-position``): the plan is
    the newest full at or before the target, its chain and the logs up to it; a target outside
    the recoverable window is OutsideWindow, naming the window."""
    from safehold.engines.recovery import RecoveryTarget
    from safehold.pipeline.pitr import plan_recovery, run_recovery

    rec = _given(task.recovery)
    to = RecoveryTarget(time=rec.time.astimezone(UTC) if rec.time else None, gtid=rec.gtid,
                        position=rec.position)
    with stages("plan"):
        repo = open_repository(task.repository)
        keks = load_keys(task.encryption)
        engine = open_database(_given(task.database), env)
        plan, reader = plan_recovery(engine, repo, task.source, to, keks)
    for line in plan.lines():
        log.info("%s", line)
    newest = plan.chain[-1]
    facts = {**manifest_facts(repo, newest), "restored_to": rec.time or newest.finished_at,
             "plan_only": task.plan_only, "chain": [m.backup_id for m in plan.chain]}
    notes = [f"{len(plan.logs)} log piece(s) replayed to {to.describe()}"]
    if task.plan_only:
        return TaskResult(kind="restore", phase="Completed", **stages.facts(), **facts,
                          notes=notes)
    with stages("check"):
        report = engine.check("restore")
        if not report.ok:
            raise DatabaseProblem("cannot restore: " + "; ".join(report.problems))
    with stages("restore"):
        run_recovery(engine, plan, reader, conflict=task.conflict_policy)
    return TaskResult(kind="restore", phase="Completed", **stages.facts(), **facts, notes=notes)


def _restore_data_dir(task: RestoreTask, data_dir: Path, stages: Stages) -> TaskResult:
    """A physical PostgreSQL backup chain into a new data directory (the CLI's ``restore
    --data-dir``); to a point in time, with the WAL its recovery replays bundled into it
    (``--bundle-wal``): a PostgreSQL server of the same major, nothing more, starts it."""
    from safehold.engines.postgres import pitr
    from safehold.pipeline import walarchive
    from safehold.pipeline.physical import (
        archive_reaches,
        archived_wal,
        bundle_wal,
        check_wal_cluster,
        new_data_dir,
        run_data_dir_restore,
    )

    to_time = task.recovery.time.astimezone(UTC) if task.recovery and task.recovery.time \
        else None
    with stages("plan"):
        repo = open_repository(task.repository)
        keks = load_keys(task.encryption)
        if to_time is not None:
            backups = repo.backups(task.source)
            manifest = pitr.choose_base(backups, to_time=to_time)
            segments = archived_wal(repo, task.source)
            check_wal_cluster(manifest, segments, task.source)
            archive_reaches(backups, manifest, segments, to_time=to_time,
                            what="pointInTime.time")
        else:
            manifest = repo.resolve(task.source, task.backup_id)
        chain = repo.chain(manifest)
        keys = DataKeys(repo, keks)
        for m in chain:  # a missing key or a tampered manifest fails the plan
            keys.for_backup(m)
    major = manifest.server_version.split(".")[0]
    facts = {**manifest_facts(repo, manifest), "restored_to": to_time or manifest.finished_at,
             "plan_only": task.plan_only, "chain": [m.backup_id for m in chain]}
    if task.plan_only:
        return TaskResult(kind="restore", phase="Completed", **stages.facts(), **facts)
    profile = Profile("restore")
    notes = [f"data directory {data_dir}: start it with PostgreSQL {major}'s server"]
    with stages("restore"), new_data_dir(data_dir):
        run_data_dir_restore(repo, manifest, keks, data_dir, profile=profile)
        if to_time is not None:
            names, size = bundle_wal(repo, task.source, keks, manifest, data_dir, segments)
            settings = pitr.recovery_settings(walarchive.BUNDLE_RESTORE_COMMAND, to_time=to_time)
            settings["recovery_end_command"] = walarchive.BUNDLE_END_COMMAND
            pitr.prepare_recovery(data_dir, settings)
            notes.append(f"it recovers to {to_time.isoformat()} from the {len(names)} WAL"
                         f" segment(s) ({size} bytes) bundled in it and promotes when started")
    pipeline = PipelineFigures.model_validate(profile.report().as_dict())
    return TaskResult(kind="restore", phase="Completed", **stages.facts(), **facts,
                      notes=notes, pipeline=pipeline,
                      throughput_bytes_per_second=_throughput(
                          manifest.raw_bytes, stages.seconds.get("restore", 0.0)))


def _check(task: CheckTask, stages: Stages, env: Mapping[str, str]) -> TaskResult:
    with stages("check"):
        engine = open_database(task.database, env)
        report = engine.check(task.purpose)
    problems = list(report.problems)
    if task.purpose == "backup":
        problems += method_problems(engine, task.method or "logical")
    if task.repository is not None:
        with stages("repository"):
            repo = open_repository(task.repository)
            probe = ".safehold-check"
            try:
                repo.storage.put_bytes(probe, b"ok")
                repo.storage.delete(probe)
            except Exception as exc:
                problems.append(f"repository {redact_url(repo.url)} is not writable:"
                                f" {redact_url(str(exc))}")
    facts = {**stages.facts(), "server_version": report.server_version or None,
             "problems": problems, "notes": list(report.notes)}
    if not problems:
        return TaskResult(kind="check", phase="Completed", **facts)
    error = ErrorInfo(error_class="CheckFailed", message="; ".join(problems), exit_code=6,
                      hint="grant what is missing, then the target is checked again")
    return TaskResult.failure("check", error, **facts)


def _verify(task: VerifyTask, stages: Stages, env: Mapping[str, str]) -> TaskResult:
    with stages("verify"):
        repo = open_repository(task.repository)
        keys = DataKeys(repo, load_keys(task.encryption))
        targets = [task.target] if task.target else repo.targets()
        if task.target and not task.backup_id:  # a target of several databases: its parts too
            targets += [t for t in repo.targets() if t.startswith(task.target + "@")]
        checks = []
        for name in targets:
            backups = ([repo.resolve(name, task.backup_id)] if task.backup_id
                       else repo.backups(name))
            for manifest in backups:
                checks += verify_backup(repo, manifest, keys)
    bad = [f"{c.backup_id}/{c.object}: {c.detail}" for c in checks if not c.ok]
    facts = {**stages.facts(), "checked": len(checks), "failures": bad}
    if not bad:
        return TaskResult(kind="verify", phase="Completed", **facts)
    error = ErrorInfo(error_class="IntegrityError", exit_code=4,
                      message=f"{len(bad)} of {len(checks)} objects failed verification")
    return TaskResult.failure("verify", error, **facts)


def _list(task: ListTask, stages: Stages, env: Mapping[str, str]) -> TaskResult:
    """One page of a target's backups, oldest first, each verified with the keys.

    The page holds what fits :data:`LIST_PAGE_BYTES` (the whole result stays within the 4 KiB
    termination message); ``more`` says the caller lists again after the page's last id.
    A damaged manifest is skipped and named in the notes; a missing key fails the task. A target
    the repository holds no backups of lists nothing and succeeds (a new BackupTarget's adoption
    is the common case, and a failed pod would be noise), the note naming what is there.
    """
    with stages("list"):
        repo = open_repository(task.repository)
        keys = DataKeys(repo, load_keys(task.encryption))
        try:
            repo.require_target(task.target)
        except BackupNotFound as exc:
            return TaskResult(kind="list", phase="Completed", **stages.facts(),
                              target=task.target, backups=[], more=False, notes=[str(exc)])
        healthy, damaged = repo.scan(task.target)
        page: list[ListedBackup] = []
        used, more = 0, False
        for m in healthy:
            if task.after is not None and m.backup_id <= task.after:
                continue
            entry = ListedBackup(id=m.backup_id, type=m.type, parent=m.parent_id,
                                 size=m.stored_bytes)
            if page and used + entry.json_size() + 1 > LIST_PAGE_BYTES:
                more = True
                break
            keys.for_backup(m)  # a manifest the keys cannot open is not listed as restorable
            page.append(entry)
            used += entry.json_size() + 1
    notes = [f"{d.backup_id}: damaged manifest, not listed" for d in damaged[:4]]
    if len(damaged) > 4:
        notes.append(f"and {len(damaged) - 4} more damaged manifests")
    return TaskResult(kind="list", phase="Completed", **stages.facts(), target=task.target,
                      backups=page, more=more, notes=notes)


def _delete(task: DeleteTask, stages: Stages, env: Mapping[str, str]) -> TaskResult:
    """Delete backups, refusing while a backup that stays depends on one of them."""
    with stages("delete"):
        repo = open_repository(task.repository)
        doomed = set(task.backup_ids)
        targets = task.databases or [task.target]  # a multi-database Backup: each database's
        for target in targets:
            backups = repo.backups(target)
            dependents = [m for m in backups
                          if m.parent_id in doomed and m.backup_id not in doomed]
            if dependents:
                pairs = ", ".join(f"{m.backup_id} builds on {m.parent_id}" for m in dependents)
                raise DependentBackups(
                    f"cannot delete: kept backups of {target} depend on it ({pairs})",
                    hint="delete the dependent backups too (or first), or keep this one")
        freed = 0
        deleted, gone = [], []
        for target in targets:
            complete, incomplete = repo.backup_ids(target)
            present = set(complete) | set(incomplete)
            with _lease(repo, target, "delete") if doomed & present else nullcontext() as lease:
                # newest first: a crash midway never leaves a backup whose parent is gone
                for backup_id in sorted(doomed, reverse=True):
                    shown = backup_id if target == task.target else f"{target}/{backup_id}"
                    if backup_id not in present:
                        gone.append(shown)
                        continue
                    if lease is not None:
                        lease.check()
                    freed += repo.delete_backup(target, backup_id)
                    deleted.append(shown)
    notes = [f"{b} was already gone" for b in sorted(gone)]
    return TaskResult(kind="delete", phase="Completed", **stages.facts(), target=task.target,
                      deleted=deleted, freed_bytes=freed, notes=notes)


def _rewrap(task: RewrapTask, stages: Stages, env: Mapping[str, str]) -> TaskResult:
    """Key rotation: wrap every backup's data key with the active key; no data is rewritten.

    The same steps as ``safehold keys rotate``: every data key is unwrapped before anything is
    written, so a missing old key fails before anything changes.
    """
    with stages("rewrap"):
        repo = open_repository(task.repository)
        keks = load_keys(task.encryption)
        new = keks[0]
        config = repo.config()
        retired: set[str] = set(config.retired_key_ids)
        pending = []
        for target in repo.targets():
            for manifest in repo.backups(target):
                if manifest.encryption == "none":
                    continue
                wrapped = read_wrapped_key(repo, target, manifest.backup_id)
                if wrapped.key_id == new.key_id:
                    continue
                data_key = crypto.unwrap_key(keks, wrapped, backup_context(manifest.backup_id))
                pending.append((target, manifest.backup_id, data_key, wrapped.key_id))
        with ExitStack() as held:  # every target's lease, in name order, as `keys rotate`
            leases = [held.enter_context(_lease(repo, t, "rewrap")) for t in repo.targets()]
            resign_policies(repo, keks[1:], new)  # checks every record before writing any
            for target, backup_id, data_key, old_id in pending:
                for lease in leases:
                    lease.check()
                write_wrapped_key(repo, target, backup_id, new, data_key)
                retired.add(old_id)
        retired.update(k.key_id for k in keks[1:])
        retired.discard(new.key_id)
        repo.update_config(active_key_id=new.key_id, retired_key_ids=tuple(sorted(retired)))
    return TaskResult(kind="rewrap", phase="Completed", **stages.facts(), rewrapped=len(pending),
                      active_key_id=new.key_id, retired_key_ids=sorted(retired))
