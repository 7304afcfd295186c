"""The PostgreSQL engine: consistent parallel logical backups, atomic and selective restores.

Backups are pg_dump custom-format archives cut along sections and tables, all taken in one
exported snapshot (:mod:`.dump`), plus ``toc.json`` (:mod:`.catalog`). Whole restores go
through a staging database swapped in by renaming (:mod:`.restore`); selective ones replay the
chosen tables' archive entries in one transaction (:mod:`.selective`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Literal

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import ISOLATION_LEVEL_REPEATABLE_READ
from psycopg2.extensions import connection as Connection

from safehold.api.errors import IntegrityError
from safehold.api.manifest import method_of
from safehold.engines.base import (
    BackupOutcome,
    BackupRequest,
    BackupSink,
    Capabilities,
    ChainReader,
    CheckReport,
    ConnectionOptions,
    DatabaseMissing,
    EngineError,
    RestoreRequest,
    UnsupportedError,
    VersionUnsupported,
)
from safehold.engines.postgres import privileges
from safehold.engines.postgres.catalog import Toc, read_toc
from safehold.engines.postgres.conn import (
    PgTarget,
    admin_connection,
    connect,
    from_psycopg,
    parse_target,
)
from safehold.engines.postgres.dump import TOC_OBJECT, pattern, plan, run_dumps
from safehold.engines.postgres.tools import (
    SUPPORTED_MAJORS,
    ClientTools,
    compresses,
    find_tools,
)

# The restores' and physical backups' modules (archive, restore, selective, physical) are
# imported by the methods that use them: a logical backup runs without them (start-up,
# docs/performance.md).

log = logging.getLogger("safehold.postgres")
DEFAULT_JOBS = 2
_LSN = ("CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
        " ELSE pg_current_wal_lsn() END::text")


def server_version(conn: Connection) -> tuple[str, int]:
    """("15.14", 15) for a server, refusing majors Safehold does not support."""
    num = conn.server_version
    major, minor = num // 10000, num % 10000
    if major not in SUPPORTED_MAJORS:
        raise VersionUnsupported(
            f"the server runs PostgreSQL {major}.{minor}; Safehold supports majors"
            f" {SUPPORTED_MAJORS[0]}-{SUPPORTED_MAJORS[-1]}")
    return f"{major}.{minor}", major


class PostgresEngine:
    """One database on a PostgreSQL 13-18 server, named by ``postgresql://user@host/db``.

    ``jobs`` is how many pg_dump / pg_restore processes run at once; ``lock_wait`` (seconds)
    bounds how long a backup waits for a table lock that a DDL statement holds.
    """

    name: ClassVar[str] = "postgresql"
    capabilities: ClassVar[Capabilities] = Capabilities(
        backup_types=("full",), selective_restore=True, point_in_time=False,
        physical_types=("full", "incremental", "differential"))

    def __init__(self, target: PgTarget, *, jobs: int | None = None, lock_wait: float = 120.0,
                 attempts: int = 3) -> None:
        self.target = target
        self.jobs = jobs or DEFAULT_JOBS
        self.lock_wait = lock_wait
        self.attempts = attempts

    @classmethod
    def from_url(cls, url: str, options: ConnectionOptions) -> PostgresEngine:
        return cls(parse_target(url, options), jobs=options.jobs)

    def _connect(self, target: PgTarget | None = None) -> Connection:
        return connect(target or self.target, attempts=self.attempts)

    # -- checks -------------------------------------------------------------------------------

    def check(self, purpose: Literal["backup", "restore"]) -> CheckReport:
        conn = self._connect() if purpose == "backup" else admin_connection(self.target)
        try:
            version, major = server_version(conn)
            problems: list[str] = []
            try:
                find_tools(major, self.target.sslmode)
            except VersionUnsupported as exc:
                problems.append(str(exc))
            if purpose == "backup":
                problems += privileges.backup_problems(conn, self.target)
            else:
                problems += privileges.restore_problems(conn, self.target)
        except psycopg2.Error as exc:
            raise from_psycopg(exc, self.target, f"checking for {purpose}") from None
        finally:
            conn.close()
        return CheckReport(ok=not problems, server_version=version, problems=tuple(problems))

    def check_physical(self) -> list[str]:
        """What keeps physical backups (and PG 17+ block-level incrementals) from working:
        REPLICATION, wal_level, summarize_wal, pg_basebackup of the server's major."""
        from safehold.engines.postgres.physical import (
            BACKUP_TOOLS,
            physical_problems,
            physical_tools,
            server_facts,
        )

        conn = self._connect()
        try:
            facts = server_facts(conn)
        except psycopg2.Error as exc:
            raise from_psycopg(exc, self.target, "checking for physical backups") from None
        finally:
            conn.close()
        problems = physical_problems(facts, self.target.user)
        try:
            physical_tools(facts["major"], BACKUP_TOOLS)
        except VersionUnsupported as exc:
            problems.append(str(exc))
        return problems

    def estimate_size(self) -> int | None:
        """Bytes of table data in the database (at least 1 when it exists), None if missing."""
        try:
            conn = self._connect()
        except DatabaseMissing:
            return None
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT coalesce(sum(pg_table_size(oid)), 0) FROM pg_class"
                            " WHERE relkind IN ('r', 'm')")
                return max(1, int(cur.fetchone()[0]))
        finally:
            conn.close()

    def require_database(self) -> None:
        self._connect().close()  # DatabaseMissing names the database and the fix

    # -- backup -------------------------------------------------------------------------------

    def backup(self, request: BackupRequest, sink: BackupSink, chain: ChainReader
               ) -> BackupOutcome:
        if request.method == "physical":
            from safehold.engines.postgres.physical import physical_backup

            return physical_backup(self.target, request, sink, chain, attempts=self.attempts)
        if request.type != "full":
            raise UnsupportedError(
                f"PostgreSQL {request.type} backups chain onto physical fulls: take one with"
                " `safehold backup --method physical`, then add --type"
                f" {request.type} --method physical")
        if request.include:
            raise UnsupportedError("PostgreSQL backups always hold the whole database; choose"
                                   " tables at restore time (restore --include)")
        conn = self._connect()
        try:
            return self._backup(conn, sink, request.compression)
        except psycopg2.Error as exc:
            raise from_psycopg(exc, self.target, "backing up") from None
        finally:
            conn.close()

    def _dump_tools(self, major: int, compression: str) -> tuple[ClientTools, str]:
        """The client tools, and how their pg_dump compresses: ``compression`` when it can
        (why: .dump), else ``none`` and the pipeline compresses."""
        tools = find_tools(major, self.target.sslmode)
        archived = compression if compresses(tools.bindir, compression) else "none"
        if archived == "none" and compression != "none":
            log.info("pg_dump %s cannot compress with %s: the pipeline compresses its archives",
                     tools.version, compression)
        return tools, archived

    def _backup(self, conn: Connection, sink: BackupSink, compression: str) -> BackupOutcome:
        version, major = server_version(conn)
        # Finding the tools runs pg_dump (a version and a compression probe, 10-15 ms): on a
        # thread of its own, beside the snapshot's export and the catalog's reading below,
        # not ahead of them.
        with ThreadPoolExecutor(1, thread_name_prefix="safehold-pg-tools") as pool:
            probed = pool.submit(self._dump_tools, major, compression)
            return self._dump(conn, sink, version, probed.result)

    def _dump(self, conn: Connection, sink: BackupSink, version: str,
              probed: Callable[[], tuple[ClientTools, str]]) -> BackupOutcome:
        conn.autocommit = True
        with conn.cursor() as cur:
            # The exporting transaction idles while the dumps run: no timeout may end it.
            cur.execute("SET idle_in_transaction_session_timeout = 0; SET statement_timeout = 0;"
                        " SET lock_timeout = %s", (f"{int(self.lock_wait * 1000)}ms",))
        conn.autocommit = False
        conn.set_session(isolation_level=ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        with conn.cursor() as cur:
            cur.execute(f"SELECT pg_export_snapshot(), {_LSN}")
            snapshot, start_lsn = cur.fetchone()
            toc = read_toc(cur)
            # As pg_dump does: LOCK TABLE refuses materialized views and foreign tables (the
            # whole backup failed on one), and neither has rows in the archives to protect.
            locked = [t for t in toc.tables if t.kind in "rp"]
            for i in range(0, len(locked), 500):
                cur.execute("LOCK TABLE " + ", ".join(pattern(t) for t in locked[i:i + 500])
                            + " IN ACCESS SHARE MODE")
            tools, archived = probed()
            # at least DEFAULT_JOBS ways: a -j1 backup still restores in parallel
            tasks = plan(toc, ways=max(self.jobs, DEFAULT_JOBS), compression=archived)
            log.info("dumping %s: %d tables in %d archives, %d at a time",
                     self.target.describe(), len(toc.tables), len(tasks), self.jobs)
            records = run_dumps(tasks, target=self.target, tools=tools, snapshot=snapshot,
                                sink=sink, jobs=self.jobs, lock_wait_ms=int(self.lock_wait * 1000))
            toc.objects = {task.name: task.meta() for task in tasks}
            cur.execute(f"SELECT {_LSN}")
            end_lsn = cur.fetchone()[0]
        conn.rollback()
        sink.put(TOC_OBJECT, [json.dumps(toc.as_json(), sort_keys=True).encode()],
                 meta={"format": "safehold-pg-toc", "version": toc.format})
        return BackupOutcome(
            server_version=version,
            start_position={"lsn": start_lsn},
            end_position={"lsn": end_lsn},
            engine_meta={"database": toc.database["name"], "snapshot": toc.snapshot,
                         "tables": len(toc.tables),
                         "raw_data_bytes": sum(r.raw_size for r in records)},
            tools={"pg_dump": tools.version},
        )

    # -- restore ------------------------------------------------------------------------------

    def restore(self, request: RestoreRequest, chain: ChainReader) -> None:
        from safehold.engines.postgres.archive import Archives
        from safehold.engines.postgres.restore import restore_database
        from safehold.engines.postgres.selective import restore_tables

        manifest = request.chain[-1]
        if method_of(manifest) == "physical":
            raise UnsupportedError(
                f"backup {manifest.backup_id} is a physical base backup: it restores into a new"
                " data directory (safehold restore --data-dir DIR), not into a database")
        if len(request.chain) != 1 or manifest.type != "full":
            raise UnsupportedError("PostgreSQL restores take one full backup; this chain has"
                                   f" {len(request.chain)} backups ending in a {manifest.type}")
        toc = Toc.parse(b"".join(chain.open(manifest, TOC_OBJECT)))
        # One maintenance connection from the first question to the swap: a whole restore holds
        # its lock on it (.restore), and a connection less is 5-10 ms less of start-up.
        admin = admin_connection(self.target)
        created = False
        try:
            try:
                _, major = server_version(admin)
                with admin.cursor() as cur:
                    cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                    superuser = bool(cur.fetchone()[0])
                    if request.include:
                        created = _ensure_database(cur, self.target, toc)
            except psycopg2.Error as exc:
                raise from_psycopg(exc, self.target, "preparing the restore") from None
            dumped_by = int(manifest.tools.get("pg_dump", "0").split(".")[0])
            tools = find_tools(max(major, dumped_by), self.target.sslmode,
                               archive_compression(toc))
            if not superuser:
                log.warning("%s is not a superuser: restored objects will be owned by it"
                            " (pg_restore --no-owner)", self.target.user)
            archives = Archives(self.target, tools, manifest, chain, no_owner=not superuser,
                                server_major=major)
            try:
                if request.include:
                    restore_tables(archives, toc, request.include, request.conflict,
                                   server_major=major)
                else:
                    restore_database(archives, toc, request.conflict, self.jobs, admin)
            except BaseException:
                if created:  # a failed restore leaves nothing, not even the database it made
                    archives.procs.stop()
                    _drop_created(self.target)
                raise
            finally:
                archives.procs.close()
        finally:
            admin.close()


# What a backup's toc.json may say pg_dump compressed its archives with: a --compress spec
# Safehold writes (the backup's codec, when pg_dump took it).
_PG_DUMP_COMPRESSION = re.compile(r"(?:gzip|lz4|zstd)(?::-?[0-9]{1,2})?")


def archive_compression(toc: Toc) -> str:
    """How pg_dump compressed the backup's archives ("none" when the pipeline did); a backup's
    archives are all compressed alike. Anything else is refused (IntegrityError), before it
    reaches a tool probe or an error that would ask for client tools of a codec that does
    not exist: an unencrypted backup's toc.json is protected by nothing but the storage."""
    said = [meta.get("compression", "none") if isinstance(meta, dict) else None
            for meta in toc.objects.values()]
    bad = sorted({repr(c) for c in said if not isinstance(c, str)
                  or (c != "none" and not _PG_DUMP_COMPRESSION.fullmatch(c))})
    used = {c for c in said if isinstance(c, str) and c != "none"}
    if bad or len(used) > 1:
        raise IntegrityError(
            f"the backup's toc.json says its archives were compressed with"
            f" {', '.join(bad or sorted(map(repr, used)))}: not one of pg_dump's gzip, lz4 or"
            " zstd (with a level), the same for every archive, as Safehold writes it; the"
            " backup is damaged or was not written by Safehold")
    return next(iter(used), "none")


def _drop_created(target: PgTarget) -> None:
    try:
        admin = admin_connection(target)
        try:
            with admin.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(target.database)))
        finally:
            admin.close()
    except (psycopg2.Error, EngineError) as exc:
        log.warning("could not drop database %s, created by the failed restore: %s; drop it"
                    " by hand", target.database, exc)


def _ensure_database(cur: psycopg2.extensions.cursor, target: PgTarget, toc: Toc) -> bool:
    """Create the target database of a selective restore when it does not exist yet; whether
    it was created."""
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,))
    if cur.fetchone() is None:
        db = toc.database
        log.info("creating database %s", target.database)
        cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING %s LC_COLLATE %s"
                            " LC_CTYPE %s").format(sql.Identifier(target.database)),
                    (db["encoding"], db["collate"], db["ctype"]))
        return True
    return False
