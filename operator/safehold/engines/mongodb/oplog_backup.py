"""Incremental and differential MongoDB backups: the oplog since the parent.

An incremental stores the database's oplog entries after its parent's position (a full's
``replay_from``: see :mod:`.oplog`) up to the newest entry now; a differential those after the
chain's full's. One object, ``oplog.bson`` (raw entries back to back), so its size follows
what was written since, not the database's size.

Refused before anything is stored, with what to do: a server without an oplog, another replica
set than the parent's, a parent with no recorded oplog position, an oplog that wrapped past the
parent's position (:class:`~.oplog.OplogUnavailable`), an oplog behind the parent (reset).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymongo
from pymongo import MongoClient

from safehold.engines.base import BackupOutcome, BackupRequest, BackupSink
from safehold.engines.mongodb import oplog, privileges
from safehold.engines.recovery import BrokenChain

OBJECT = "oplog.bson"


def backup(client: MongoClient[Any], database: str, request: BackupRequest,
           sink: BackupSink) -> BackupOutcome:
    if not request.chain:
        raise BrokenChain(f"a {request.type} backup needs a parent: take a full backup first")
    parent = request.chain[0] if request.type == "differential" else request.chain[-1]
    pos = parent.end_position or {}
    if not pos.get("oplog_ts") or not pos.get("set"):
        raise BrokenChain(
            f"backup {parent.backup_id} recorded no oplog position (the server had no oplog,"
            " or it was empty or unreadable when the backup ran): an incremental cannot start"
            " from it; take a full backup with the oplog in place")
    version, _ = privileges.server_version(client)
    set_name = oplog.replica_set(client)
    if set_name != pos["set"]:
        raise BrokenChain(
            f"the server belongs to replica set {set_name!r}, but {parent.backup_id} was"
            f" taken from {pos['set']!r}: this is another oplog; take a full backup")
    start = oplog.replay_start(pos)
    parent_end = oplog.parse_ts(pos["oplog_ts"])
    now = oplog.newest(client)
    if now is None or now < parent_end:
        raise BrokenChain(
            f"the oplog ends at {oplog.ts_text(now) if now else 'nothing'}, before"
            f" {pos['oplog_ts']} where {parent.backup_id} ended: the oplog was reset or"
            " recreated; take a full backup")
    oplog.check_kept(client, start, f"backup {parent.backup_id}")
    counter = [0]
    record = sink.put(OBJECT, _entries(client, database, start, now, counter), meta={
        "kind": "oplog", "from": oplog.ts_text(start), "to": oplog.ts_text(now)})
    # The server may have dropped entries while they were read: check again afterwards.
    oplog.check_kept(client, start, f"backup {parent.backup_id}")
    return BackupOutcome(
        server_version=version, start_position=oplog.position(start, set_name),
        end_position=oplog.position(now, set_name),
        engine_meta={"database": database, "oplog_entries": counter[0],
                     "oplog_bytes": record.raw_size, "log_from": oplog.ts_text(start),
                     "log_to": oplog.ts_text(now)},
        tools={"pymongo": pymongo.version})


def _entries(client: MongoClient[Any], database: str, after: Any, until: Any,
             counter: list[int]) -> Iterator[bytes]:
    batch: list[bytes] = []
    for entry in oplog.entries_since(client, after, until=until):
        if oplog.belongs(entry, database):
            batch.append(bytes(entry.raw))
            counter[0] += 1
        if len(batch) >= 1000:
            yield b"".join(batch)
            batch = []
    if batch:
        yield b"".join(batch)
