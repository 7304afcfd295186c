"""One consistent snapshot shared by several connections (as mydumper and mariadb-backup do).

InnoDB gives each transaction its own read view; views started while no transaction can commit
see the same data. So: one connection takes the global read lock (``FLUSH TABLES WITH READ
LOCK``: no commit can happen meanwhile), every connection starts ``START TRANSACTION WITH
CONSISTENT SNAPSHOT``, the binlog position is read, and the lock is released — typically held
for milliseconds. The connections then read different tables in parallel, all as of the same
instant. On MariaDB each connection reports the binlog position of its snapshot
(``binlog_snapshot_file/position``): they must agree, which is checked.

The lock is not always to be had: it needs the RELOAD privilege, and ``FLUSH TABLES WITH READ
LOCK`` waits for running statements (a long SELECT, a ``LOCK TABLES``) — while it waits, every
writer on the server waits behind it. So it waits at most ``lock_wait`` seconds (the target's
``lock-wait`` parameter), then the statement is killed and the backup falls back, with a
warning, to one connection's snapshot (no lock at all on MariaDB), as it does without RELOAD.

Who reads the rows. A transactional table with a one-column integer primary key is read by
a PyMySQL connection in key-range chunks, one result value per chunk
(:func:`.rows.chunked_statements`): the cheapest way for the client, whatever the
``reader``. Any other table is read row by row, by whom the target's ``reader`` parameter
says: ``client``, ``mariadb`` client sessions (:mod:`.clientread`, C speed), which join the
snapshot exactly as the connections do, one beside each; ``driver``, the PyMySQL connections
themselves. ``auto`` (the default) picks the
client when it is installed and the server is MariaDB (the only server the client sessions are
tested against here), else the driver. ``conns[0]`` also takes the lock and reads the catalog.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from safehold.engines.base import EngineError, PermissionDenied
from safehold.engines.common import read_ahead
from safehold.engines.mysql.catalog import Table
from safehold.engines.mysql.clientread import ClientMissing, ClientSession, find_client
from safehold.engines.mysql.conn import Conn, Target, connect, run
from safehold.engines.mysql.rows import (
    RowStats,
    chunk_limit,
    chunked_statements,
    insert_statements,
)
from safehold.engines.mysql.server import ServerInfo

log = logging.getLogger(__name__)
_BEGIN = "START TRANSACTION WITH CONSISTENT SNAPSHOT"


class SnapshotMismatch(EngineError):
    """The connections' snapshots are not at one binlog position (must not happen)."""


class Reader(Protocol):
    """Reads whole tables, one at a time, inside the snapshot."""

    def statements(self, table: Table, stats: RowStats) -> Iterator[bytes]: ...


@dataclass
class DriverReader:
    """Rows read by PyMySQL on one of the snapshot's connections (in key-range chunks where a
    table has a one-column integer primary key: :func:`.rows.chunked_statements`)."""

    conn: Conn
    limit: int | None = None  # the connection's chunk_limit, once asked

    def statements(self, table: Table, stats: RowStats) -> Iterator[bytes]:
        if not table.chunkable:
            return insert_statements(self.conn, table, stats)
        return self.chunks(table, stats)

    def chunks(self, table: Table, stats: RowStats) -> Iterator[bytes]:
        """A chunkable table's key-range chunks, read on a thread of their own one ahead: the
        server renders the next chunk while the last one is stored (each chunk is a query and
        its answer, not a stream)."""
        if self.limit is None:
            self.limit = chunk_limit(self.conn)
        return read_ahead(chunked_statements(self.conn, table, stats, self.limit),
                          name="safehold-mysql-chunks", depth=1)


@dataclass
class ClientReader:
    """A ``mariadb`` client session and a PyMySQL connection, both in the snapshot: a table
    that is :attr:`.Table.chunkable` is read by the connection in key-range chunks
    (:meth:`DriverReader.chunks`: one result value per chunk; the client would write it out a
    character at a time), any other by the client, row by row."""

    driver: DriverReader
    session: ClientSession

    def statements(self, table: Table, stats: RowStats) -> Iterator[bytes]:
        if not table.chunkable:
            return self.session.statements(table, stats)
        return self.driver.chunks(table, stats)


@dataclass
class Snapshot:
    """Sessions inside one snapshot: ``conns`` (PyMySQL; ``conns[0]`` reads the catalog) and,
    when the client reads the rows, as many ``sessions``, paired with them."""

    conns: list[Conn]
    position: dict[str, str] | None
    sessions: list[ClientSession] = field(default_factory=list)
    lock_seconds: float | None = None  # how long the global read lock was held
    fallback: str | None = None  # why one connection was used instead of several
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def readers(self) -> list[Reader]:
        """Who reads the rows: the client sessions with the connections, else the
        connections."""
        if self.sessions:
            return [ClientReader(DriverReader(c), s)
                    for c, s in zip(self.conns, self.sessions, strict=True)]
        return [DriverReader(conn) for conn in self.conns]

    def finish(self) -> None:
        """End every session's transaction (the backup has read all it needs)."""
        for conn in self.conns:
            run(conn, "COMMIT")
        for session in self.sessions:
            session.finish()

    def abort(self) -> None:
        """Stop the client sessions now (a table failed: the others need not finish)."""
        for session in self.sessions:
            session.abort()

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.close()
        for session in self.sessions:
            session.close()

    def meta(self) -> dict[str, Any]:
        """What the manifest records about how the snapshot was taken."""
        out: dict[str, Any] = {"snapshot_connections": len(self.readers),
                               "reader": "client" if self.sessions else "driver"}
        if self.lock_seconds is not None:
            out["lock_seconds"] = round(self.lock_seconds, 4)
        if self.fallback:
            out["snapshot_fallback"] = self.fallback
        return out


def client_for(target: Target, info: ServerInfo) -> str | None:
    """The ``mariadb`` client that reads the rows, or None for the driver (see the module)."""
    if target.reader == "driver":
        return None
    path = find_client()
    if target.reader == "client" and path is None:
        raise ClientMissing("reader=client, but no mariadb client is on PATH; install it"
                            " (Debian: mariadb-client) or drop reader= from the target URL")
    if target.reader == "auto" and info.flavor != "mariadb":
        return None
    return path


def open_snapshot(target: Target, info: ServerInfo, jobs: int) -> Snapshot:
    """``jobs`` readers in one snapshot, or one when the lock cannot be had."""
    client = client_for(target, info)
    if jobs > 1 and target.lock_wait > 0:
        # conns[0] takes the lock, conns[1] watches it; with the client, each connection
        # has a client session beside it
        taken = Snapshot([_session(target) for _ in range(jobs)], None)
        try:
            taken.sessions = [ClientSession(target, client) for _ in range(jobs)] if client \
                else []
            return _locked(taken, info, target.lock_wait)
        except _NoLock as exc:
            taken.close()
            log.warning("%s: backing up on one connection (one snapshot, no parallel reads)",
                        exc)
            snap = _single(target, info, client)
            snap.fallback = str(exc)
            return snap
        except BaseException:
            taken.close()
            raise
    return _single(target, info, client)


class _NoLock(Exception):
    """The global read lock could not be had (the message says why)."""


def _session(target: Target) -> Conn:
    conn = connect(target, streaming=True)
    try:
        run(conn, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    except BaseException:
        conn.close()
        raise
    return conn


def _single(target: Target, info: ServerInfo, client: str | None) -> Snapshot:
    """One reader's snapshot: the connection's, or a client session's beside it (the
    connection then only reads the catalog)."""
    snap = Snapshot([_session(target)], None)
    try:
        if client:
            snap.sessions = [ClientSession(target, client)]
        snap.position = _single_position(snap, info)
    except BaseException:
        snap.close()
        raise
    return snap


def _single_position(snap: Snapshot, info: ServerInfo) -> dict[str, str] | None:
    """The reader's snapshot; its binlog position (None when binlog is off/unknown)."""
    conn = snap.conns[0]
    reader: Conn | ClientSession = snap.sessions[0] if snap.sessions else conn
    if info.flavor == "mariadb":
        _begin(reader)
        return _with_gtid(_mariadb_coordinates(_snapshot_status(reader)), conn)
    try:
        run(conn, "FLUSH TABLES WITH READ LOCK")
    except PermissionDenied:
        log.warning("no RELOAD privilege: MySQL gives no lock-free binlog position for a"
                    " snapshot, so this backup records none")
        _begin(reader)
        return None
    try:
        _begin(reader)
        return _mysql_position(conn, info)
    finally:
        run(conn, "UNLOCK TABLES")


def _begin(reader: Conn | ClientSession) -> None:
    if isinstance(reader, ClientSession):
        reader.query(_BEGIN.encode())
    else:
        run(reader, _BEGIN)


def _snapshot_status(reader: Conn | ClientSession) -> dict[str, str]:
    """MariaDB's binlog_snapshot_file/position of ``reader``'s snapshot."""
    if isinstance(reader, ClientSession):
        return reader.status("binlog_snapshot_%")
    return {str(k).lower(): str(v)
            for k, v in run(reader, "SHOW STATUS LIKE 'binlog_snapshot_%'")}


def _mariadb_coordinates(status: dict[str, str]) -> dict[str, str] | None:
    """The binlog file and offset of a snapshot's ``status`` (None: the binary log is off)."""
    file, pos = status.get("binlog_snapshot_file"), status.get("binlog_snapshot_position")
    if not file or pos is None:
        log.warning("the binary log is off: the backup records no binlog position")
        return None
    return {"binlog_file": file, "binlog_pos": str(pos)}


def _with_gtid(position: dict[str, str] | None, conn: Conn) -> dict[str, str] | None:
    """``position`` with its GTID position, for a snapshot taken without the global read lock.
    BINLOG_GTID_POS reads the binlog file from its start to the offset (a second per few
    hundred MB), so under the lock :func:`_locked` reads ``@@gtid_binlog_pos`` instead: it
    held the lock, and every writer of the server, that long."""
    if position is None:
        return None
    gtid = run(conn, "SELECT BINLOG_GTID_POS(%s, %s)",
               (position["binlog_file"], int(position["binlog_pos"])))[0][0]
    return {**position, "gtid": gtid or ""}


def _mysql_position(conn: Conn, info: ServerInfo) -> dict[str, str] | None:
    rows = run(conn, "SHOW BINARY LOG STATUS" if info.at_least(8, 4) else "SHOW MASTER STATUS")
    gtid = run(conn, "SELECT @@GLOBAL.gtid_executed")[0][0]
    if not rows:
        return None
    return {"binlog_file": rows[0][0], "binlog_pos": str(rows[0][1]), "gtid": gtid or ""}


def _locked(snap: Snapshot, info: ServerInfo, wait: float) -> Snapshot:
    """Every session's snapshot started under the global read lock, taken on conns[0]."""
    conns = snap.conns
    lock_conn, watcher = conns[0], conns[1]
    guard = threading.Lock()
    state = {"waiting": True, "killed": False}

    def give_up() -> None:  # on the timer's thread, while conns[0] waits for the lock
        with guard:
            if not state["waiting"]:
                return
            state["killed"] = True
            with contextlib.suppress(Exception):
                run(watcher, f"KILL QUERY {int(lock_conn.thread_id())}")

    timer = threading.Timer(wait, give_up)
    timer.daemon = True
    timer.start()
    error: EngineError | None = None
    try:
        run(lock_conn, "FLUSH TABLES WITH READ LOCK")
    except PermissionDenied as exc:
        error = exc
    except EngineError as exc:
        error = exc
    finally:
        with guard:
            state["waiting"] = False
        timer.cancel()
        timer.join()
    if state["killed"]:  # even if the lock came in the same instant: the session may be hit
        with contextlib.suppress(Exception):
            run(lock_conn, "UNLOCK TABLES")
        raise _NoLock(f"the global read lock was not granted within {wait:g}s (long-running"
                      " statements or LOCK TABLES hold tables open; raise lock-wait= in the"
                      " target URL to wait longer)")
    if isinstance(error, PermissionDenied):
        raise _NoLock("no RELOAD privilege for the global read lock that shares one snapshot"
                      " between connections (GRANT RELOAD ON *.* to the backup user)")
    if error is not None:
        raise error
    locked_at = time.perf_counter()
    readers: list[Conn | ClientSession] = [*conns, *snap.sessions]
    try:
        for reader in readers:
            _begin(reader)
        if info.flavor == "mariadb":
            position = _mariadb_coordinates(_snapshot_status(lock_conn))
            _check_same_position(readers, position)
            if position is not None:  # nothing commits under the lock: the binlog's end
                # GTID is the snapshot's, and reading it costs nothing (see _with_gtid)
                gtid = run(lock_conn, "SELECT @@GLOBAL.gtid_binlog_pos")[0][0]
                position["gtid"] = gtid or ""
        else:
            position = _mysql_position(lock_conn, info)
    finally:
        run(lock_conn, "UNLOCK TABLES")
    held = time.perf_counter() - locked_at
    log.info("consistent snapshot on %d %s; global read lock held %.3fs", len(snap.readers),
             "client sessions" if snap.sessions else "connections", held)
    snap.position, snap.lock_seconds = position, held
    return snap


def _check_same_position(readers: list[Conn | ClientSession],
                         position: dict[str, str] | None) -> None:
    if position is None:
        return
    for i, reader in enumerate(readers[1:], 1):
        status = _snapshot_status(reader)
        theirs = (status.get("binlog_snapshot_file"), str(status.get("binlog_snapshot_position")))
        if theirs != (position["binlog_file"], position["binlog_pos"]):
            raise SnapshotMismatch(
                f"connection {i}'s snapshot is at {theirs[0]}:{theirs[1]}, not at"
                f" {position['binlog_file']}:{position['binlog_pos']} as the first one: the"
                " global read lock did not hold off commits; report this as a bug")
