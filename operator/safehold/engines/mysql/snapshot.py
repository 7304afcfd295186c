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
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from safehold.engines.base import EngineError, PermissionDenied
from safehold.engines.mysql.conn import Conn, Target, connect, run
from safehold.engines.mysql.server import ServerInfo

log = logging.getLogger(__name__)


class SnapshotMismatch(EngineError):
    """The connections' snapshots are not at one binlog position (must not happen)."""


@dataclass
class Snapshot:
    """Connections inside one snapshot; ``conns[0]`` reads the catalog."""

    conns: list[Conn]
    position: dict[str, str] | None
    lock_seconds: float | None = None  # how long the global read lock was held
    fallback: str | None = None  # why one connection was used instead of several
    facts: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.close()

    def meta(self) -> dict[str, Any]:
        """What the manifest records about how the snapshot was taken."""
        out: dict[str, Any] = {"snapshot_connections": len(self.conns)}
        if self.lock_seconds is not None:
            out["lock_seconds"] = round(self.lock_seconds, 4)
        if self.fallback:
            out["snapshot_fallback"] = self.fallback
        return out


def open_snapshot(target: Target, info: ServerInfo, jobs: int) -> Snapshot:
    """``jobs`` connections in one snapshot, or one connection when the lock cannot be had."""
    if jobs > 1 and target.lock_wait > 0:
        conns = [_session(target) for _ in range(jobs)]
        try:
            return _locked(conns, info, target.lock_wait)
        except _NoLock as exc:
            for conn in conns:
                with contextlib.suppress(Exception):
                    conn.close()
            log.warning("%s: backing up on one connection (one snapshot, no parallel reads)",
                        exc)
            snap = _single(target, info)
            snap.fallback = str(exc)
            return snap
        except BaseException:
            for conn in conns:
                with contextlib.suppress(Exception):
                    conn.close()
            raise
    return _single(target, info)


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


def _single(target: Target, info: ServerInfo) -> Snapshot:
    conn = _session(target)
    try:
        position = _single_position(conn, info)
    except BaseException:
        conn.close()
        raise
    return Snapshot([conn], position)


def _single_position(conn: Conn, info: ServerInfo) -> dict[str, str] | None:
    """One connection's snapshot; its binlog position (None when binlog is off/unknown)."""
    if info.flavor == "mariadb":
        run(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
        return _mariadb_position(conn)
    try:
        run(conn, "FLUSH TABLES WITH READ LOCK")
    except PermissionDenied:
        log.warning("no RELOAD privilege: MySQL gives no lock-free binlog position for a"
                    " snapshot, so this backup records none")
        run(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
        return None
    try:
        run(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
        return _mysql_position(conn, info)
    finally:
        run(conn, "UNLOCK TABLES")


def _mariadb_position(conn: Conn) -> dict[str, str] | None:
    status = {k.lower(): v for k, v in run(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'")}
    file, pos = status.get("binlog_snapshot_file"), status.get("binlog_snapshot_position")
    if not file or pos is None:
        log.warning("the binary log is off: the backup records no binlog position")
        return None
    gtid = run(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, int(pos)))[0][0]
    return {"binlog_file": file, "binlog_pos": str(pos), "gtid": gtid or ""}


def _mysql_position(conn: Conn, info: ServerInfo) -> dict[str, str] | None:
    rows = run(conn, "SHOW BINARY LOG STATUS" if info.at_least(8, 4) else "SHOW MASTER STATUS")
    gtid = run(conn, "SELECT @@GLOBAL.gtid_executed")[0][0]
    if not rows:
        return None
    return {"binlog_file": rows[0][0], "binlog_pos": str(rows[0][1]), "gtid": gtid or ""}


def _locked(conns: list[Conn], info: ServerInfo, wait: float) -> Snapshot:
    """Every connection's snapshot started under the global read lock, taken on conns[0]."""
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
    try:
        for conn in conns:
            run(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
        if info.flavor == "mariadb":
            position = _mariadb_position(lock_conn)
            _check_same_position(conns, position)
        else:
            position = _mysql_position(lock_conn, info)
    finally:
        run(lock_conn, "UNLOCK TABLES")
    held = time.perf_counter() - locked_at
    log.info("consistent snapshot on %d connections; global read lock held %.3fs",
             len(conns), held)
    return Snapshot(conns, position, lock_seconds=held)


def _check_same_position(conns: list[Conn], position: dict[str, str] | None) -> None:
    if position is None:
        return
    for i, conn in enumerate(conns[1:], 1):
        status = {k.lower(): v for k, v in run(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'")}
        theirs = (status.get("binlog_snapshot_file"), str(status.get("binlog_snapshot_position")))
        if theirs != (position["binlog_file"], position["binlog_pos"]):
            raise SnapshotMismatch(
                f"connection {i}'s snapshot is at {theirs[0]}:{theirs[1]}, not at"
                f" {position['binlog_file']}:{position['binlog_pos']} as the first one: the"
                " global read lock did not hold off commits; report this as a bug")
