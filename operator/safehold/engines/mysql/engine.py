"""The MySQL/MariaDB engine: full logical backups from one consistent snapshot, restored into
any database name, whole or by table (see :mod:`.dump`, :mod:`.restore`, :mod:`.swap`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

from safehold.api.manifest import Manifest
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
)
from safehold.engines.mysql import binlog_plan, binlog_position, dump, privileges, restore
from safehold.engines.mysql.conn import Target, connect, parse_target, run
from safehold.engines.mysql.server import server_info
from safehold.engines.mysql.swap import stage_name
from safehold.engines.recovery import LogPiece, RecoveryTarget


class MySQLEngine:
    """One database on a MySQL 8.0+ or MariaDB 10.5+ server, named by
    ``mysql://user@host:port/db`` or ``mariadb://...`` (see :mod:`.conn` for the options)."""

    name: ClassVar[str] = "mysql"
    capabilities: ClassVar[Capabilities] = Capabilities(
        backup_types=("full", "incremental", "differential"), selective_restore=True,
        point_in_time=True)
    log_kind: ClassVar[str] = "binlog"  # point in time: engines/recovery.py, binlog_*.py

    def __init__(self, target: Target, *, jobs: int | None = None) -> None:
        self.target = target
        # Backups read, restores load tables on this many connections (dump.py, restore.py).
        self.jobs = jobs or min(4, os.cpu_count() or 1)

    @classmethod
    def from_url(cls, url: str, options: ConnectionOptions) -> MySQLEngine:
        return cls(parse_target(url, options), jobs=options.jobs)

    def check(self, purpose: Literal["backup", "restore"]) -> CheckReport:
        """Connect, report the version and every missing privilege (never raises for those).

        Like the other engines, a refused login or an unreachable server raises its classified
        error (AuthenticationFailed, HostUnreachable, ...), so a check Job reports the class."""
        db = self.target.database
        conn = connect(self.target, database=db if purpose == "backup" else None, attempts=1)
        try:
            info = server_info(conn)
            problems, notes = [], []
            try:
                info.require_supported()
            except EngineError as exc:
                problems.append(str(exc))
            from safehold.engines.mysql import binlog_privileges  # as binlog_backup below

            if purpose == "backup":
                problems += privileges.backup_problems(conn, db)
                if self.target.lock_wait > 0:
                    notes += privileges.backup_notes(conn)
                notes += binlog_privileges.backup_notes(conn)
            else:
                problems += privileges.restore_problems(conn, db, stage_name(db))
                notes += binlog_privileges.restore_notes(conn, db)
        except EngineError as exc:
            return CheckReport(ok=False, problems=(str(exc),))
        finally:
            with contextlib.suppress(Exception):
                conn.close()
        return CheckReport(ok=not problems, server_version=info.version,
                           problems=tuple(problems), notes=tuple(notes))

    def estimate_size(self) -> int | None:
        """Bytes of data and indexes of the database (InnoDB's estimate); None if it is absent."""
        try:
            conn = connect(self.target, database=None)
        except DatabaseMissing:
            return None
        try:
            row = run(conn, "SELECT COUNT(*), SUM(DATA_LENGTH + INDEX_LENGTH) FROM"
                      " information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                      (self.target.database,))
        finally:
            conn.close()
        return int(row[0][1] or 0) if row[0][0] else None

    def require_database(self) -> None:
        connect(self.target).close()  # DatabaseMissing names the database and the fix

    def backup(self, request: BackupRequest, sink: BackupSink, chain: ChainReader
               ) -> BackupOutcome:
        if request.include:
            raise UnsupportedError("MySQL backups hold the whole database; choose tables at"
                                   " restore time instead (restore --include)")
        if request.type != "full":
            # the binlog modules load only when used: a full backup's start-up is shorter
            from safehold.engines.mysql import binlog_backup

            return binlog_backup.backup(self.target, request, sink)
        return binlog_position.stamped(self.target, dump.backup(self.target, sink,
                                                                jobs=self.jobs))

    def restore(self, request: RestoreRequest, chain: ChainReader) -> None:
        if len(request.chain) > 1 or request.recovery is not None:
            from safehold.engines.mysql import binlog_restore

            binlog_restore.restore(self.target, request, chain, jobs=self.jobs)
        else:
            restore.restore(self.target, request, chain, jobs=self.jobs)

    # -- point in time (engines/recovery.py) ---------------------------------------------------
    def reached(self, position: Mapping[str, str], to: RecoveryTarget) -> bool:
        return binlog_plan.reached(position, to)

    def plan_logs(self, start: Mapping[str, str], pieces: Sequence[LogPiece],
                  to: RecoveryTarget | None) -> list[LogPiece]:
        if to is None:
            raise UnsupportedError("name a recovery target")
        return binlog_plan.plan(start, pieces, to)

    def log_pieces(self, backups: Sequence[Manifest], reader: ChainReader) -> list[LogPiece]:
        return [p for m in backups for p in binlog_plan.backup_pieces(m, reader)]

    def archive_stream(self, position: Mapping[str, str]) -> str | None:
        return binlog_plan.stream_name(position)
