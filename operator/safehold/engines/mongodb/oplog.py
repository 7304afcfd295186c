"""The MongoDB oplog as Safehold stores it: positions, reading entries since one, wrap checks.

A position is ``{"oplog_ts": "SECONDS:INC", "time": ISO, "set": REPLICA_SET}``: an oplog
timestamp (everything up to and including it is covered), its time (oplog times are whole
seconds) and the replica set the timestamp belongs to (the log archive's stream). A full backup
adds ``"replay_from"``: the oplog timestamp when its read began. Unless the server gave a
snapshot, the dump saw each collection at its own moment between ``replay_from`` and
``oplog_ts``, so incrementals and point-in-time restores replay the oplog from ``replay_from``
(entries are idempotent: inserts are upserts, updates carry whole values, deletes by ``_id``),
which makes the result consistent at ``oplog_ts`` -- mongodump ``--oplog``'s rule.

Pieces (an incremental's object, an archived segment) are raw BSON oplog entries back to back,
only those of the target's database (plus ``admin.$cmd`` applyOps, whose inner operations are
filtered at replay). A piece's ``start`` is the position it continues from (exclusive), its
``end`` the last entry it read (of any database: positions are the server's).

The oplog is a capped collection: once it wraps, entries after a position are gone. Before
reading "since P" the entry at or before P must still be there, else the gap is reported
(:class:`OplogUnavailable`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from safehold.engines.base import EngineError
from safehold.engines.mongodb.conn import UNAUTHORIZED

RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
OPLOG = "oplog.rs"
MAX_INC = 2**32 - 1


class OplogUnavailable(EngineError):
    """The server has no oplog to read (not a replica set member, no local.oplog.rs, no
    privilege), or it no longer holds the entries a backup or the archive continues from."""


def ts_text(ts: Timestamp) -> str:
    return f"{ts.time}:{ts.inc}"


def parse_ts(text: str) -> Timestamp:
    seconds, sep, inc = str(text).partition(":")
    if not sep or not seconds.isdigit() or not inc.isdigit():
        raise ValueError(f"invalid oplog timestamp {text!r}: expected SECONDS:INCREMENT")
    return Timestamp(int(seconds), int(inc))


def ts_time(ts: Timestamp) -> datetime:
    return datetime.fromtimestamp(ts.time, UTC)


def before(ts: Timestamp) -> Timestamp:
    """The timestamp right before ``ts`` (a piece that begins with the entry at ``ts``)."""
    if ts.inc > 0:
        return Timestamp(ts.time, ts.inc - 1)
    return Timestamp(ts.time - 1, MAX_INC)


def position(ts: Timestamp, replica_set: str, **extra: str) -> dict[str, str]:
    return {"oplog_ts": ts_text(ts), "time": ts_time(ts).isoformat(), "set": replica_set,
            **extra}


def replay_start(pos: Mapping[str, str]) -> Timestamp:
    """Where the oplog must be replayed from for a backup ending at ``pos``."""
    return parse_ts(pos.get("replay_from") or pos["oplog_ts"])


def entry_ts(entry: Mapping[str, Any]) -> Timestamp:
    ts = entry.get("ts")
    if not isinstance(ts, Timestamp):
        raise EngineError("an oplog entry has no timestamp: the log is damaged")
    return ts


def set_name(client: MongoClient[Any]) -> str | None:
    """The replica set the server belongs to (``hello``; ``isMaster`` before 4.4.2)."""
    try:
        hello = client.admin.command("hello")
    except OperationFailure:
        hello = client.admin.command("isMaster")
    name = hello.get("setName")
    return str(name) if name else None


def replica_set(client: MongoClient[Any]) -> str:
    """The replica set's name, or OplogUnavailable naming why there is no oplog."""
    name = set_name(client)
    if not name:
        raise OplogUnavailable(
            "the server is not a replica set member, so it keeps no oplog: MongoDB incremental"
            " backups and point-in-time restore need one (run mongod with --replSet; a"
            " single-member replica set is enough; FerretDB: --repl-set-name and a capped"
            " local.oplog.rs)")
    try:
        exists = client["local"].list_collection_names(filter={"name": OPLOG})
    except OperationFailure as exc:
        if exc.code == UNAUTHORIZED:
            raise OplogUnavailable("the user may not read local.oplog.rs: grant the 'backup'"
                                   " role (or read on the local database)") from None
        raise
    if not exists:
        raise OplogUnavailable(f"replica set {name!r} has no local.oplog.rs (FerretDB creates"
                               " none by itself: create it as a capped collection)")
    return str(name)


def newest(client: MongoClient[Any]) -> Timestamp | None:
    last = client["local"][OPLOG].find_one({}, {"ts": 1}, sort=[("$natural", -1)])
    return entry_ts(last) if last else None


def oldest(client: MongoClient[Any]) -> Timestamp | None:
    first = client["local"][OPLOG].find_one({}, {"ts": 1}, sort=[("$natural", 1)])
    return entry_ts(first) if first else None


def check_kept(client: MongoClient[Any], after: Timestamp, what: str) -> Timestamp | None:
    """Raise OplogUnavailable when entries after ``after`` may have been overwritten (the
    oplog's oldest entry is newer); return the oldest entry's timestamp."""
    first = oldest(client)
    if first is not None and first > after:
        raise OplogUnavailable(
            f"the oplog wrapped: {what} continues after {ts_text(after)}"
            f" ({ts_time(after).isoformat()}), but the oldest entry the server still has is"
            f" {ts_text(first)} ({ts_time(first).isoformat()}); the changes in between are"
            " lost. Take a full backup (--type full) to start a new chain, and run `safehold"
            " oplog stream` (or back up more often) so the oplog cannot outrun the archive")
    return first


def belongs(entry: RawBSONDocument, database: str) -> bool:
    """Whether an entry can concern ``database`` (its namespace, or an admin applyOps)."""
    ns = entry.get("ns") or ""
    if ns.startswith(database + "."):
        return True
    return ns == "admin.$cmd" and "applyOps" in (entry.get("o") or {})


def entries_since(client: MongoClient[Any], after: Timestamp, *, until: Timestamp | None = None,
                  batch_size: int = 1000) -> Iterator[RawBSONDocument]:
    """Every oplog entry after ``after`` (up to ``until``), in log order, undecoded."""
    query: dict[str, Any] = {"ts": {"$gt": after}}
    if until is not None:
        query["ts"]["$lte"] = until
    coll = client["local"].get_collection(OPLOG, codec_options=RAW)
    yield from coll.find(query, sort=[("$natural", 1)], batch_size=batch_size)


def split(blocks: Iterator[bytes], source: str) -> Iterator[RawBSONDocument]:
    """The entries of a stored piece (raw BSON back to back)."""
    from safehold.engines.mongodb.restore import documents

    for doc in documents(blocks, source):
        yield RawBSONDocument(doc, RAW)
