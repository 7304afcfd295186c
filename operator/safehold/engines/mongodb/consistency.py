"""Which consistency a MongoDB backup really gets, and why: decided by asking, never assumed.

Best first (recorded in ``engine_meta["consistency"]`` with ``consistency_reason``):

``snapshot``
    every collection is read at one cluster time (``readConcern: {level: snapshot,
    atClusterTime: T}``, T = the newest oplog entry when the backup starts), so the backup is
    one instant. Claimed only for a replica set member with an oplog that *honours*
    ``atClusterTime``: a read at a time long before the server's history must be refused
    (``SnapshotTooOld``). A server that answers it anyway ignores the read concern -- FerretDB
    accepts ``readConcern: snapshot`` and reads the present -- so it cannot give a snapshot.
    Snapshot history is kept for ``minSnapshotHistoryWindowInSeconds`` (300 s by default): a
    longer backup fails with ``SnapshotTooOld`` and says so.
``oplog-range``
    an oplog but no (honoured) snapshot reads: each collection is consistent on its own; the
    oplog timestamps before and after bound the changes made meanwhile.
``per-collection``
    no oplog to trust (standalone mongod, FerretDB without one, no privilege to read it, or a
    ``local.oplog.rs`` on a server that is not a replica set member, which is an ordinary
    collection): each collection is consistent on its own; writes to several collections
    during the backup may be seen for some and not others.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure

from safehold.engines.mongodb.conn import UNAUTHORIZED

log = logging.getLogger("safehold.engines.mongodb")
RAW = CodecOptions(document_class=RawBSONDocument)
SNAPSHOT_TOO_OLD, SNAPSHOT_UNAVAILABLE = 239, 246
ANCIENT = Timestamp(1, 1)  # 1970: no server keeps snapshot history from then
PROBE = "safehold_consistency_probe"  # a collection name to probe when the database has none


@dataclass(frozen=True)
class ReadPoint:
    """How collections are read, the oplog position the backup starts from, and why."""

    consistency: str  # "snapshot", "oplog-range" or "per-collection"
    start: Timestamp | None
    read_concern: Mapping[str, Any] | None = None
    reason: str = ""


def position(ts: Timestamp | None) -> dict[str, str] | None:
    return {"oplog_ts": f"{ts.time}:{ts.inc}"} if ts is not None else None


def oplog_time(client: MongoClient[Any]) -> Timestamp | None:
    """The newest oplog entry's timestamp, or None where there is no oplog (standalone,
    FerretDB) or the user may not read it."""
    local = client["local"]
    try:
        if not local.list_collection_names(filter={"name": "oplog.rs"}):
            return None
        last = local["oplog.rs"].find_one({}, {"ts": 1}, sort=[("$natural", -1)])
    except OperationFailure as exc:
        if exc.code != UNAUTHORIZED:
            raise
        log.warning("cannot read local.oplog.rs (%s): the backup records no oplog position;"
                    " grant the 'backup' role (or read on local) to record it", exc.code)
        return None
    ts = last.get("ts") if last else None
    return ts if isinstance(ts, Timestamp) else None


def _errmsg(exc: OperationFailure) -> str:
    return str((exc.details or {}).get("errmsg") or exc)


def _snapshot_refusal(db: Database[Any], collection: str, at: Timestamp) -> str | None:
    """Why a snapshot read of ``collection`` at ``at`` is not possible, or None if it is.

    Besides reading at ``at``, a read at 1970 is tried: a server that honours ``atClusterTime``
    refuses it (its history does not reach back that far); one that answers ignores it.
    """
    concern = {"level": "snapshot", "atClusterTime": at}
    try:
        db.command({"find": collection, "limit": 1, "readConcern": concern},
                   codec_options=RAW)
    except OperationFailure as exc:
        return f"snapshot reads are unavailable ({_errmsg(exc)})"
    try:
        db.command({"find": collection, "limit": 1,
                    "readConcern": {"level": "snapshot", "atClusterTime": ANCIENT}},
                   codec_options=RAW)
    except OperationFailure as exc:
        if exc.code in (SNAPSHOT_TOO_OLD, SNAPSHOT_UNAVAILABLE):
            return None  # it looked at the time: snapshot reads are real
        return f"snapshot reads could not be confirmed ({_errmsg(exc)})"
    return ("the server accepted a snapshot read at 1970-01-01, so it ignores readConcern"
            " atClusterTime and would read the present")


def choose_read_point(client: MongoClient[Any], db: Database[Any], probe: str | None
                      ) -> ReadPoint:
    """The best consistency this server really provides (see the module docstring); the
    reason is logged as a warning whenever it is less than a snapshot."""
    point = _choose(client, db, probe)
    if point.consistency == "snapshot":
        log.info("database %s: snapshot backup at %s (%s)", db.name, point.start, point.reason)
    else:
        log.warning("database %s: the backup is %s consistent only: %s", db.name,
                    point.consistency, point.reason)
    return point


def _choose(client: MongoClient[Any], db: Database[Any], probe: str | None) -> ReadPoint:
    info = client.admin.command("buildInfo")
    try:
        hello = client.admin.command("hello")
    except OperationFailure:  # before 4.4.2
        hello = client.admin.command("isMaster")
    start = oplog_time(client)
    if start is None:
        return ReadPoint("per-collection", None, reason="no readable oplog (standalone server,"
                         " FerretDB, or no privilege to read local.oplog.rs)")
    if not hello.get("setName"):
        return ReadPoint("per-collection", None, reason="the server is not a replica set"
                         " member, so local.oplog.rs is an ordinary collection, not its oplog")
    ferretdb = info.get("ferretdbVersion")
    if ferretdb:
        return ReadPoint("oplog-range", start, reason=f"FerretDB {ferretdb} accepts readConcern"
                         " snapshot but ignores it (reads see the present)")
    refusal = _snapshot_refusal(db, probe or PROBE, start)
    if refusal is not None:
        return ReadPoint("oplog-range", start, reason=refusal)
    return ReadPoint("snapshot", start, {"level": "snapshot", "atClusterTime": start},
                     reason="the server refuses snapshot reads outside its history, so it"
                     " honours atClusterTime")
