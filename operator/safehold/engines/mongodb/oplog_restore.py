"""Restore a MongoDB chain (full + incrementals/differential) and replay the oplog, to the
chain's end or to a point in time (:mod:`safehold.engines.recovery`).

Order, so that nothing is changed before everything has been checked: the chain's links are
checked (:func:`.oplog_plan.check_chain`), the pieces from the full's replay point to the target
are planned (a gap or a target outside the window is refused), decoded into a private local
file (every frame, MAC and hash checked) and scanned for entries that cannot be rewritten into
the destination (:func:`.oplog_replay.check`). Only then is the full staged (as a full restore
stages it), the oplog replayed into the staging collections, and every collection renamed into
place; a failure on the way drops the staging collections and leaves the destination as it was.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bson.timestamp import Timestamp

from safehold.engines.base import ChainReader, RestoreRequest, UnsupportedError
from safehold.engines.mongodb import layout, oplog, oplog_plan, oplog_replay
from safehold.engines.mongodb.conn import MongoTarget, guard
from safehold.engines.mongodb.restore import Restorer
from safehold.engines.recovery import BrokenChain

log = logging.getLogger("safehold.engines.mongodb")


def restore(client: Any, target: MongoTarget, request: RestoreRequest, reader: ChainReader,
            *, jobs: int) -> None:
    chain = list(request.chain)
    if request.include:
        raise UnsupportedError("replaying the oplog restores the whole database: restore"
                               " --include works with a full backup alone")
    oplog_plan.check_chain(chain)
    full = chain[0]
    start = full.end_position or {}
    if not start.get("oplog_ts") or not start.get("set"):
        raise BrokenChain(f"backup {full.backup_id} recorded no oplog position (no oplog, or"
                          " it was empty, when it ran): no oplog can be replayed onto it")
    source = str(full.engine_meta.get("database") or target.database)
    pieces = [p for m in chain[1:] for p in oplog_plan.backup_pieces(m, reader)]
    if request.recovery is not None:
        pieces += list(request.recovery.logs)
        limit = oplog_plan.limit(request.recovery.to)
        need = Timestamp(limit.time, 0)
    else:
        limit = need = oplog.parse_ts((chain[-1].end_position or {})["oplog_ts"])
    for piece in pieces:
        theirs = str(piece.meta.get("set") or "")
        if theirs and theirs != start["set"]:
            raise BrokenChain(f"{piece.source} holds oplog of replica set {theirs!r}, but"
                              f" {full.backup_id} is of {start['set']!r}: not one oplog")
    planned = oplog_plan.plan(start, pieces, need, limit)
    toc = layout.Toc.parse(b"".join(reader.open(full, layout.TOC)), layout.TOC)
    db = client[target.database]
    with tempfile.TemporaryDirectory(prefix="safehold-oplog-") as tmp:
        path = Path(tmp) / "oplog.bson"
        with path.open("wb") as out:
            for piece in planned:  # every byte authenticated before the first write
                for block in piece.open():
                    out.write(block)
        operations = oplog_replay.check(_entries(path), source, target.database,
                                        oplog.replay_start(start), limit)
        entries = toc.select(None)
        replayer = oplog_replay.Replayer(
            db, source, oplog.replay_start(start), limit,
            staged=[e.name for e in entries if e.type == "collection"])

        def replay() -> tuple[set[str], set[str]]:
            with guard(target):
                replayer.apply_all(_entries(path))
            return replayer.touched, replayer.dropped

        Restorer(db, target, full, reader, jobs=jobs).run(entries, request.conflict,
                                                         replay=replay)
    log.info("replayed %d oplog operations (of %d in %d pieces) of %s into %s, up to %s",
             replayer.count, operations, len(planned), source, target.database,
             oplog.ts_time(replayer.applied).isoformat())


def _entries(path: Path) -> Iterator[Any]:
    with path.open("rb") as f:
        yield from oplog.split(iter(lambda: f.read(1 << 20), b""), "the replayed oplog")
