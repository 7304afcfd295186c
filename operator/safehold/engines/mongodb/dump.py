"""Full logical backup of one database: per collection, mongodump's metadata and raw BSON.

Documents are never decoded: ``find``/``getMore`` replies are read with ``RawBSONDocument`` and
each batch is written as the concatenation of its documents' bytes, which is exactly
mongodump's ``.bson`` format.

Collections are read at the consistency :mod:`.consistency` finds the server really offers
(a snapshot at one cluster time where it is honoured, else per collection).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from typing import Any

from bson.int64 import Int64
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from safehold.engines.base import BackupSink, DatabaseMissing, EngineError
from safehold.engines.common import retry_transient, run_parallel
from safehold.engines.mongodb import layout
from safehold.engines.mongodb.conn import MongoTarget, guard
from safehold.engines.mongodb.consistency import RAW, SNAPSHOT_TOO_OLD, ReadPoint

log = logging.getLogger("safehold.engines.mongodb")


def listing(db: Database[Any], include: Sequence[str] | None) -> tuple[list[dict[str, Any]],
                                                                       list[str]]:
    """(collections and views to back up, names skipped with the reason)."""
    entries, skipped = [], []
    for info in db.list_collections():
        name, kind = info["name"], info.get("type", "collection")
        if include and name not in include:
            continue
        if name.startswith("system."):
            continue  # server-managed (system.profile, system.views, system.js, buckets)
        if name.endswith(layout.STAGING_SUFFIX):
            log.warning("skipping %s.%s: left behind by an interrupted Safehold restore;"
                        " drop it once no restore is running", db.name, name)
            skipped.append(f"{name}: interrupted restore leftover")
            continue
        if kind not in ("collection", "view"):
            log.warning("skipping %s.%s: %s collections are not supported yet", db.name,
                        name, kind)
            skipped.append(f"{name}: {kind} collections are not supported")
            continue
        entries.append(dict(info))
    if include:
        missing = sorted(set(include) - {e["name"] for e in entries})
        if missing:
            raise DatabaseMissing(f"database {db.name!r} has no collection"
                                  f" {', '.join(map(repr, missing))} to back up")
    elif not entries:
        raise DatabaseMissing(
            f"database {db.name!r} does not exist or has no collections: check the database"
            " name in the target URI (MongoDB creates a database with its first collection)")
    entries.sort(key=lambda e: (e.get("type") == "view", e["name"]))
    return entries, skipped


def raw_batches(db: Database[Any], collection: str, read_concern: Mapping[str, Any] | None,
                batch_size: int, stop: threading.Event, counter: list[int]) -> Iterator[bytes]:
    """The collection's documents as mongodump's ``.bson`` bytes, one block per batch.

    ``find``/``getMore`` run in one explicit session (a cursor belongs to the session that
    opened it); natural order, as mongodump reads, which keeps capped collections' insertion
    order. The cursor is killed if the consumer stops early. ``counter[0]`` counts the
    documents. ``noCursorTimeout`` is not set: FerretDB rejects it, and batches are read back
    to back.
    """
    cmd: dict[str, Any] = {"find": collection, "batchSize": batch_size}
    if read_concern:
        cmd["readConcern"] = dict(read_concern)
    with db.client.start_session(causal_consistency=False) as session:
        reply = db.command(cmd, codec_options=RAW, session=session)["cursor"]
        batch, cursor_id = reply["firstBatch"], reply["id"]
        try:
            while True:
                if stop.is_set():
                    raise EngineError("backup cancelled: another collection failed")
                if batch:
                    counter[0] += len(batch)
                    yield b"".join(doc.raw for doc in batch)
                if not cursor_id:
                    return
                reply = db.command({"getMore": Int64(cursor_id), "collection": collection,
                                    "batchSize": batch_size}, codec_options=RAW,
                                   session=session)["cursor"]
                batch, cursor_id = reply["nextBatch"], reply["id"]
        finally:
            if cursor_id:
                with suppress(PyMongoError):  # the original error matters more
                    db.command({"killCursors": collection, "cursors": [Int64(cursor_id)]},
                               session=session)


def dump_collection(db: Database[Any], target: MongoTarget, info: Mapping[str, Any],
                    point: ReadPoint, sink: BackupSink, *, batch_size: int,
                    stop: threading.Event) -> layout.TocEntry:
    """Store one collection's metadata and documents (or a view's metadata)."""
    name, kind = info["name"], info.get("type", "collection")
    meta_name = layout.metadata_object(db.name, name)

    def put_metadata() -> None:
        with guard(target):
            indexes = [] if kind == "view" else [
                dict(i) for i in db[name].list_indexes()]
        sink.put(meta_name, [layout.metadata_json(info, indexes)],
                 meta={"collection": name, "kind": "metadata"})

    retry_transient(put_metadata, what=f"metadata of {db.name}.{name}")
    if kind == "view":
        return layout.TocEntry(name=name, type="view", metadata=meta_name, data=None)
    data_name = layout.data_object(db.name, name)
    counter = [0]

    def put_data() -> int:
        counter[0] = 0
        with guard(target):
            try:
                record = sink.put(data_name, raw_batches(db, name, point.read_concern,
                                                         batch_size, stop, counter),
                                  meta={"collection": name, "kind": "bson"})
            except OperationFailure as exc:
                if exc.code == SNAPSHOT_TOO_OLD:
                    raise EngineError(
                        f"{db.name}.{name}: the snapshot of the backup's start is no longer"
                        " available (SnapshotTooOld); the backup took longer than the server"
                        " keeps history: raise minSnapshotHistoryWindowInSeconds or use more"
                        " --jobs") from None
                raise
        return record.raw_size

    size = retry_transient(put_data, what=f"dump of {db.name}.{name}")
    log.info("dumped %s.%s: %d documents, %d bytes", db.name, name, counter[0], size)
    return layout.TocEntry(name=name, type="collection", metadata=meta_name, data=data_name,
                           documents=counter[0], bytes=size)


def dump_all(db: Database[Any], target: MongoTarget, infos: Sequence[Mapping[str, Any]],
             point: ReadPoint, sink: BackupSink, *, jobs: int, batch_size: int
             ) -> list[layout.TocEntry]:
    """Dump collections on ``jobs`` threads (BackupSink.put is safe to call concurrently for
    distinct objects). The first failure cancels the rest and is raised."""
    stop = threading.Event()
    return run_parallel(lambda info: dump_collection(db, target, info, point, sink,
                                                     batch_size=batch_size, stop=stop),
                        infos, jobs=jobs, name="safehold-mongodump", on_failure=stop.set)
