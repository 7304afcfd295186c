"""`safehold backup` of a target naming several databases (or all of a server's).

Each database becomes its own backup under the repository target ``<name>@<database>`` (its own
chain, retention and lease; :mod:`safehold.api.databases`), and the server-wide objects
(PostgreSQL roles, MySQL/MariaDB users and grants) one more under ``<name>@~globals``. One
database failing does not stop the others: the run reports each, and its status is ``success``,
``partial`` (exit 12) or ``failure`` (the first failure's exit code).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import click

from safehold.api import databases as dbnames
from safehold.api.errors import Exit, UsageError
from safehold.cli import common, locking
from safehold.cli.errors import Terminated, report_for
from safehold.codecs import crypto
from safehold.engines import servers
from safehold.engines.base import ConnectionOptions, Engine, redact_url
from safehold.pipeline.backup import BackupOptions, run_backup
from safehold.pipeline.profile import WAITING, Profile
from safehold.repository import layout
from safehold.repository.repo import Repository

log = logging.getLogger("safehold.backup")


@dataclass(frozen=True)
class Selection:
    """Which databases a target covers: ``names``, or all (``names`` None); and the globals."""

    names: tuple[str, ...] | None
    globals: bool


def selection(databases: str | None, all_databases: bool, globals_flag: bool | None,
              configured: list[str] | str | None, configured_globals: bool | None,
              url: str) -> Selection | None:
    """The multi-database selection of the flags (else the config file), None for one database.
    """
    if databases is not None and all_databases:
        raise UsageError("--databases and --all-databases exclude each other",
                         hint="name the databases, or back up all of them")
    names: tuple[str, ...] | None
    if databases is not None:
        names = tuple(n.strip() for n in databases.split(",") if n.strip())
        if not names:
            raise UsageError(f"--databases {databases!r} names no database",
                             hint="give database names separated by commas")
    elif all_databases or configured == "all":
        names = None
    elif isinstance(configured, list):
        names = tuple(configured)
        if not names:
            raise UsageError("the target's databases: [] names no database")
    else:
        if globals_flag:
            raise UsageError("--globals needs --databases or --all-databases",
                             hint="the server-wide objects travel with a multi-database target")
        return None
    if len(set(names or ())) != len(names or ()):
        raise UsageError(f"--databases names a database twice: {', '.join(names or ())}")
    kind = servers.family(url)  # SQLite: one file, refused here
    chosen = globals_flag if globals_flag is not None else configured_globals
    if chosen and kind == "mongodb":
        raise UsageError("MongoDB users are not backed up as server-wide objects yet",
                         hint="leave --globals out (back up the admin database's users with"
                         " the server's own tools)")
    return Selection(names, chosen if chosen is not None else (names is None
                                                               and kind != "mongodb"))


def default_name(url: str) -> str:
    """A URL target's name when it names a server rather than one database: its host."""
    host = urlsplit(url).hostname or "server"
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in host).strip(".-_")
    return name[:128] or "server"


@dataclass
class Outcome:
    database: str | None  # None: the server-wide objects
    target: str
    summary: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    exit_code: int = 0

    def as_dict(self) -> dict[str, Any]:
        base: dict[str, Any] = {"database": self.database, "target": self.target,
                                "status": "completed" if self.error is None else "failed"}
        return {**base, **(self.summary or {}), **({"error": self.error} if self.error else {})}


def _failed(database: str | None, target: str, exc: BaseException) -> Outcome:
    report = report_for(exc)
    if report.code == Exit.FAILED:
        log.error("unexpected error backing up %s", target, exc_info=exc)
    error = {"class": report.error_class, "message": report.message, "hint": report.hint,
             "code": int(report.code)}
    log.error("backup of %s failed: %s", target, report.message)
    return Outcome(database, target, error=error, exit_code=int(report.code))


def back_up(ctx: click.Context, *, url: str, name: str, options: ConnectionOptions,
            chosen: Selection, repository: Repository, backup: BackupOptions,
            keks: Sequence[crypto.Kek], lock_wait: float, backup_id: str | None,
            summarize: Callable[[Any], dict[str, Any]], output: str) -> None:
    """Back up each database (and the globals), report every one, exit 0, 12 or the code of
    the failure when none succeeded."""
    layout.check_target_name(name)
    if dbnames.SEPARATOR in name:
        raise UsageError(f"target name {name!r} contains {dbnames.SEPARATOR!r}, which separates"
                         " a target from its databases", hint="choose a name without it")
    started = time.monotonic()
    names = list(chosen.names) if chosen.names is not None else \
        servers.list_databases(url, options)
    if not names and not chosen.globals:
        raise UsageError(f"the server of {redact_url(url)} has no database to back up")
    log.info("backing up %d database(s) of %s: %s", len(names), name, ", ".join(names))
    outcomes = []
    for db in names:
        key = dbnames.database_key(name, db)
        outcomes.append(_one(db, key, lambda db=db: servers.open_database(  # type: ignore[misc]
            url, db, options), repository, backup, keks, lock_wait, backup_id, summarize))
    if chosen.globals:
        key = dbnames.globals_key(name)
        outcomes.append(_one(None, key, lambda: servers.globals_engine(url, options),
                             repository, backup, keks, lock_wait, backup_id, summarize))
    failed = [o for o in outcomes if o.error is not None]
    status = dbnames.run_status(len(outcomes) - len(failed), len(failed))
    seconds = round(time.monotonic() - started, 3)
    summaries = [o.summary for o in outcomes if o.summary]
    raw = sum(s.get("raw_bytes") or 0 for s in summaries)
    stored = sum(s.get("stored_bytes") or 0 for s in summaries)
    # No ratio where a backup has none: pg_dump compressed its archives, so their raw size is
    # already compressed (Manifest.compression_ratio), and a total with them in it would
    # blend that with the others' real ratios (the roles' backup beside the databases').
    told = all(s.get("compression_ratio") is not None for s in summaries
               if s.get("stored_bytes"))
    result = {
        "target": name, "status": status, "seconds": seconds,
        "raw_bytes": raw, "stored_bytes": stored,
        "compression_ratio": round(raw / stored, 3) if stored and told else None,
        "throughput_mib_s": round(raw / 2**20 / max(seconds, 1e-9), 2),
        "pipeline": added_up([(o.summary or {}).get("pipeline") for o in outcomes]),
        "databases": [o.as_dict() for o in outcomes if o.database is not None],
        "globals": next((o.as_dict() for o in outcomes if o.database is None), None),
    }
    common.emit(output, result, lambda: _text(result, outcomes))
    if status == "partial":
        ctx.exit(int(Exit.PARTIAL))
    if status == "failure":
        ctx.exit(failed[0].exit_code or int(Exit.FAILED))


def added_up(pipelines: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """The stage timings of several backups added up, and the stage that bounded them all
    (``stage_seconds``, ``bottleneck``: the stage with the most time, ``waiting`` aside)."""
    total: dict[str, float] = {}
    for pipeline in pipelines:
        for stage, value in ((pipeline or {}).get("stage_seconds") or {}).items():
            total[stage] = round(total.get(stage, 0.0) + value, 6)
    work = {k: v for k, v in total.items() if k != WAITING and v > 0}
    return {"stage_seconds": total, "bottleneck": max(work, key=lambda k: work[k])
            if work else None}


def _one(database: str | None, key: str, engine: Callable[[], Engine], repository: Repository,
         backup: BackupOptions, keks: Sequence[crypto.Kek], lock_wait: float,
         backup_id: str | None, summarize: Callable[[Any], dict[str, Any]]) -> Outcome:
    options = BackupOptions(
        target=key, type=backup.type if database is not None else "full", codec=backup.codec,
        chunk_size=backup.chunk_size, no_encryption=backup.no_encryption,
        namespace=backup.namespace, database=database)
    started, profile = time.monotonic(), Profile("backup")
    try:
        opened = engine()
        with locking.target_lease(repository, key, "backup", lock_wait,
                                  backup_id=backup_id) as lease, \
                common.progress(f"backup {key}", None) as hook:
            manifest = run_backup(opened, repository, options, keks[0] if keks else None,
                                  keks[1:], progress=hook, backup_id=backup_id, lease=lease,
                                  profile=profile)
    except Terminated:  # SIGTERM stops the whole run (SIGINT is no Exception)
        raise
    except Exception as exc:
        return _failed(database, key, exc)
    summary = {**summarize(manifest), "seconds": round(time.monotonic() - started, 3),
               "pipeline": profile.report().manifest_record()}
    return Outcome(database, key, summary=summary)


def _text(result: dict[str, Any], outcomes: list[Outcome]) -> None:
    for o in outcomes:
        what = o.database if o.database is not None else "(roles, users and grants)"
        if o.error is None:
            s = o.summary or {}
            click.echo(f"completed  {what}: {s.get('type')} backup {s.get('backup_id')} of"
                       f" {o.target}, {common.human_bytes(s.get('raw_bytes') or 0)} ->"
                       f" {common.human_bytes(s.get('stored_bytes') or 0)}")
        else:
            click.echo(f"failed     {what}: {o.error['class']}: {o.error['message']}")
    done = sum(o.error is None for o in outcomes)
    click.echo(f"{result['status']}: {done} of {len(outcomes)} backed up into {result['target']}@*"
               f" in {common.human_seconds(result['seconds'])}")


def restore_source(repository: Repository, base: str | None, database: str | None,
                   want_globals: bool) -> str:
    """The repository target a ``restore --database DB`` / ``--globals`` reads: ``BASE@DB``
    (``BASE@~globals``), BASE from ``--from`` or the one target holding such backups."""
    if database is not None and want_globals:
        raise UsageError("--database and --globals exclude each other",
                         hint="restore the roles/users and each database in separate runs")
    part = dbnames.GLOBALS if want_globals else dbnames.database_part(database or "")
    if base is not None:
        if dbnames.SEPARATOR in base:
            raise UsageError(f"--from {base!r} already names one database's backups; with"
                             " --database or --globals give the target's name only")
        return f"{base}{dbnames.SEPARATOR}{part}"
    holders = [t for t in repository.targets() if dbnames.split_key(t)[1] == part]
    what = "server-wide objects" if want_globals else f"database {database!r}"
    if len(holders) == 1:
        return holders[0]
    if not holders:
        raise UsageError(f"{repository.url} holds no backup of the {what}",
                         hint="check --database, or list the targets with `safehold list`")
    raise UsageError(f"several targets hold backups of the {what}: {', '.join(holders)}",
                     hint="name one with --from TARGET")
