"""Restore a chain (full + incrementals/differential) and replay the binlog, to its end or to a
point in time (:mod:`safehold.engines.recovery`).

Order, so that nothing is changed before everything has been checked: the chain's links are
checked (:func:`.binlog_plan.check_chain`), the pieces from the full's end to the target are
planned (a gap or a target outside the window is refused), decoded into local files (every
frame, MAC and hash checked), and scanned for statements that would reach beyond the
destination database (:func:`.binlog_replay.check_safe`), and the user's privileges are
checked; only then is the full restored into a scratch database, the log replayed into it, and
the result swapped into the destination atomically (:mod:`.binlog_swap`). Any failure on the way
drops the scratch database and leaves the destination as it was.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from safehold.engines.base import ChainReader, RestoreRequest, UnsupportedError
from safehold.engines.mysql import binlog_plan, binlog_privileges, binlog_replay, binlog_swap
from safehold.engines.mysql import restore as full_restore
from safehold.engines.mysql.binlog import Pos
from safehold.engines.mysql.conn import Target, connect
from safehold.engines.recovery import BrokenChain, RecoveryTarget


def restore(target: Target, request: RestoreRequest, reader: ChainReader, *, jobs: int) -> None:
    chain = list(request.chain)
    if request.include:
        raise UnsupportedError("replaying the binary log restores the whole database: restore"
                               " --include works with a full backup alone")
    binlog_plan.check_chain(chain)
    full = chain[0]
    start = full.end_position or {}
    if not start.get("binlog_file"):
        raise BrokenChain(f"backup {full.backup_id} recorded no binlog position (the binary"
                          " log was off): no log can be replayed onto it")
    source = str(full.engine_meta.get("database") or target.database)
    pieces = [p for m in chain[1:] for p in binlog_plan.backup_pieces(m, reader)]
    recovery = request.recovery
    if recovery is not None:
        pieces += list(recovery.logs)
        to = recovery.to
        stop: RecoveryTarget | None = to
    else:
        end = chain[-1].end_position or {}
        to = RecoveryTarget(position=f"{end['binlog_file']}:{end['binlog_pos']}")
        stop = None  # the pieces end there
    server = start.get("server_id")
    for piece in pieces:
        theirs = str(piece.meta.get("server_id") or "")
        if server and theirs and theirs != server:
            raise BrokenChain(f"{piece.source} holds {piece.name} of server id {theirs}, but"
                              f" {full.backup_id} is of server id {server}: not one log")
    planned = binlog_plan.plan(start, pieces, to)
    begin = Pos.from_record(start)
    # --start-position applies to the first file replayed: the full's, unless it had nothing
    # after the full's position (then the next file is replayed from its start)
    start_pos = begin.pos if planned and planned[0].name == begin.file else 4
    with tempfile.TemporaryDirectory(prefix="safehold-replay-") as tmp:
        files = binlog_replay.materialize(planned, Path(tmp))
        scratch = target.with_database(binlog_swap.scratch_name(target.database))
        if files:
            binlog_replay.check_safe(files, start_pos, stop, source, scratch.database)
        _require_replay(target)
        binlog_swap.check_conflict(target, request.conflict)
        try:
            full_restore.restore(scratch, RestoreRequest(chain=[full], conflict="replace"),
                                 reader, jobs=jobs)
            if files:
                binlog_replay.replay(scratch, files, start_pos, stop, source)
            binlog_swap.promote(target)
        except BaseException:
            with contextlib.suppress(Exception):
                binlog_swap.drop_scratch(target)
            raise

def _require_replay(target: Target) -> None:
    conn = connect(target, database=None)
    try:
        binlog_privileges.require_replay(conn, target.database)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
