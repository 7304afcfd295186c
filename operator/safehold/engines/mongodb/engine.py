"""The MongoDB engine: ``mongodb://[user@]host[:port]/database[?options]`` (or ``mongodb+srv://``).

A full backup is a logical dump of one database in mongodump's layout (:mod:`.layout`, written
by :mod:`.dump`); a restore stages each collection and renames it into place (:mod:`.restore`).
Connection, TLS, passwords and error classification live in :mod:`.conn`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import pymongo
from bson.timestamp import Timestamp
from pymongo import MongoClient

from safehold import __version__
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
    RestoreRequest,
    UnsupportedError,
)
from safehold.engines.common import retry_transient
from safehold.engines.mongodb import (
    consistency,
    dump,
    layout,
    oplog,
    oplog_backup,
    oplog_plan,
    oplog_restore,
    privileges,
)
from safehold.engines.mongodb.conn import MongoTarget, guard, make_client
from safehold.engines.mongodb.restore import Restorer
from safehold.engines.recovery import LogPiece, RecoveryTarget

log = logging.getLogger("safehold.engines.mongodb")
DEFAULT_JOBS = 2


def _oplog_note(client: MongoClient[Any]) -> str:
    """Whether incrementals and point in time are possible (a note: fulls work either way)."""
    try:
        name = oplog.replica_set(client)
    except oplog.OplogUnavailable as exc:
        return f"only full backups, no point in time: {exc}"
    return (f"the oplog of replica set {name!r} is readable: incremental and differential"
            " backups, `safehold oplog stream` and point-in-time restore are possible")


class MongoEngine:
    """One database on a MongoDB server (or anything speaking its wire protocol, 4.4+).

    ``batch_size`` is the number of documents per ``find``/``getMore`` batch.
    """

    name: ClassVar[str] = "mongodb"
    capabilities: ClassVar[Capabilities] = Capabilities(
        backup_types=("full", "incremental", "differential"), selective_restore=True,
        point_in_time=True)
    log_kind: ClassVar[str] = "oplog"  # point in time: engines/recovery.py, oplog*.py

    def __init__(self, target: MongoTarget, options: ConnectionOptions, *,
                 batch_size: int = 1000) -> None:
        self.target = target
        self.options = options
        self.jobs = options.jobs or DEFAULT_JOBS
        self.batch_size = batch_size

    @classmethod
    def from_url(cls, url: str, options: ConnectionOptions) -> MongoEngine:
        return cls(MongoTarget.parse(url, options.password), options)

    def _connect(self) -> MongoClient[Any]:
        """A client whose server answered ``ping`` (retried while the failure is transient);
        use it in a ``with`` block, which closes it."""
        def attempt() -> MongoClient[Any]:
            client = make_client(self.target, self.options)
            try:
                with guard(self.target):
                    client.admin.command("ping")
            except BaseException:
                client.close()
                raise
            return client

        return retry_transient(attempt, what=f"connection to {self.target.hosts}")

    def connect(self) -> MongoClient[Any]:
        """A connected client (``safehold oplog stream``); close it with ``with``."""
        return self._connect()

    # -- checks -------------------------------------------------------------------------------

    def check(self, purpose: Literal["backup", "restore"]) -> CheckReport:
        """Ping, server version (4.4+), and the privileges ``purpose`` needs where the server
        reports them. Unreachable servers and refused logins raise their classified error."""
        with self._connect() as client, guard(self.target):
            version, problems = privileges.server_version(client)
            problems += privileges.missing(client, self.target.database, purpose)
            notes: list[str] = []
            if purpose == "backup":
                try:
                    dump.listing(client[self.target.database], None)
                except DatabaseMissing as exc:
                    problems.append(str(exc))
                notes.append(_oplog_note(client))
        return CheckReport(ok=not problems, server_version=version, problems=tuple(problems),
                           notes=tuple(notes))

    def estimate_size(self) -> int | None:
        """The database's uncompressed data size (``dbStats.dataSize``); None when empty."""
        with self._connect() as client, guard(self.target):
            stats = client[self.target.database].command("dbStats")
        return int(stats.get("dataSize") or 0) or None

    def require_database(self) -> None:
        """MongoDB creates a database when it is first written: one that does not exist is
        an empty one, and backing it up is not an error."""

    # -- backup -------------------------------------------------------------------------------

    def backup(self, request: BackupRequest, sink: BackupSink, chain: ChainReader
               ) -> BackupOutcome:
        """Dump every collection and view of the database (or ``request.include``'s)."""
        if request.type != "full":
            with self._connect() as client, guard(self.target):
                return oplog_backup.backup(client, self.target.database, request, sink)
        with self._connect() as client:
            db = client[self.target.database]
            with guard(self.target):
                version, _ = privileges.server_version(client)
                set_name = oplog.set_name(client)
                infos, skipped = dump.listing(db, request.include)
                probe = next((i["name"] for i in infos if i.get("type") != "view"), None)
                point = consistency.choose_read_point(client, db, probe)
            entries = dump.dump_all(db, self.target, infos, point, sink, jobs=self.jobs,
                                    batch_size=self.batch_size)
            with guard(self.target):
                end = consistency.oplog_time(client) if point.start is not None else None
        start_pos = consistency.position(point.start)
        end_pos = start_pos if point.consistency == "snapshot" else consistency.position(end)
        if point.start is not None and set_name:  # the oplog position chains build on
            start_pos = oplog.position(point.start, set_name)
            end_pos = oplog.position(point.start if point.consistency == "snapshot" or end is None
                                     else end, set_name,
                                     replay_from=oplog.ts_text(point.start))
        toc = layout.Toc(database=db.name, collections=tuple(entries))
        names = [e.name for e in entries]
        sink.put(layout.TOC, [toc.to_json()], meta={"tables": names})
        prelude = layout.Prelude(database=db.name, server_version=version,
                                 consistency=point.consistency,
                                 consistency_reason=point.reason, tool_version=__version__,
                                 start_position=start_pos, end_position=end_pos,
                                 skipped=skipped)
        sink.put(layout.PRELUDE, [prelude.to_json()])
        return BackupOutcome(
            server_version=version, start_position=start_pos, end_position=end_pos,
            engine_meta={"database": db.name, "consistency": point.consistency,
                         "consistency_reason": point.reason,
                         "collections": names, "skipped": skipped,
                         "layout": "mongodump", "format": layout.FORMAT},
            tools={"pymongo": pymongo.version})

    # -- restore ------------------------------------------------------------------------------

    def restore(self, request: RestoreRequest, chain: ChainReader) -> None:
        """Restore ``request.chain[-1]`` (a full backup) into the URI's database, whole or the
        collections in ``request.include``."""
        backup = request.chain[-1]
        if len(request.chain) > 1 or request.recovery is not None:
            with self._connect() as client:
                oplog_restore.restore(client, self.target, request, chain, jobs=self.jobs)
            return
        if backup.type != "full":
            raise UnsupportedError(f"backup {backup.backup_id} is not a full MongoDB backup")
        toc = layout.Toc.parse(b"".join(chain.open(backup, layout.TOC)), layout.TOC)
        entries = toc.select(request.include)
        with self._connect() as client:
            Restorer(client[self.target.database], self.target, backup, chain,
                     jobs=self.jobs).run(entries, request.conflict)
        log.info("restored %d collections of %s (backup %s) into %s", len(entries),
                 toc.database, backup.backup_id, self.target.database)

    # -- point in time (engines/recovery.py, oplog_plan.py) ---------------------------------------
    def reached(self, position: Mapping[str, str], to: RecoveryTarget) -> bool:
        return oplog_plan.reached(position, to)

    def plan_logs(self, start: Mapping[str, str], pieces: Sequence[LogPiece],
                  to: RecoveryTarget | None) -> list[LogPiece]:
        if to is None:
            raise UnsupportedError("name a recovery target")
        limit = oplog_plan.limit(to)
        return oplog_plan.plan(start, pieces, Timestamp(limit.time, 0), limit)

    def log_pieces(self, backups: Sequence[Manifest], reader: ChainReader) -> list[LogPiece]:
        return [p for m in backups for p in oplog_plan.backup_pieces(m, reader)]

    def archive_stream(self, position: Mapping[str, str]) -> str | None:
        return oplog_plan.stream_name(position)
