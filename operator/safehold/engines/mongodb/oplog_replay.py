"""Replaying oplog entries into a restore's staging collections (see :mod:`.restore`).

Every entry is applied per operation, through ordinary commands (no ``applyOps``: FerretDB
lacks it, and a restore user needs no cluster privilege), so every write lands in the
destination database whatever the entry's namespace said: ``<source>.<coll>`` becomes the
staging collection of ``<coll>`` in the destination. Entries of other databases are skipped.

* ``i``: an upsert replacing the document by ``_id`` (idempotent, as oplog application is);
* ``u``: a replacement document, or ``$set``/``$unset`` (oplog v1), or a ``$v: 2`` diff of
  fields and sub-documents; FerretDB logs every update as ``$set`` of the *whole* document
  including ``_id`` (which no MongoDB update may set), so such an entry replaces the document;
* ``d``: a delete by ``_id``; ``n``: nothing;
* ``c``: ``create``, ``drop``, ``createIndexes``, ``dropIndexes`` of the database's collections,
  and ``applyOps`` (transactions) made of the above.

Anything else (array diffs, ``renameCollection``, ``dropDatabase``, ``collMod``, commands on
another database ...) cannot be rewritten safely: :func:`check` refuses it, naming the entry,
before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo.database import Database

from safehold.engines.base import UnsupportedError
from safehold.engines.mongodb import layout, names, oplog

log = logging.getLogger("safehold.engines.mongodb")
COMMANDS = ("create", "drop", "createIndexes", "dropIndexes", "applyOps")
_SCRATCH = "a scratch replica set (mongorestore --oplogReplay)"


def _coll(ns: str, source: str) -> str:
    return ns[len(source) + 1:]


def _diff(diff: Mapping[str, Any], prefix: str, sets: dict[str, Any], unsets: dict[str, Any],
          where: str) -> None:
    """A ``$v: 2`` update diff as ``$set``/``$unset`` paths (sub-documents recursively)."""
    for key, value in diff.items():
        if key in ("u", "i"):
            for field, v in value.items():
                sets[prefix + field] = v
        elif key == "d":
            for field in value:
                unsets[prefix + field] = ""
        elif key.startswith("s") and len(key) > 1:
            if value.get("a") is True:
                raise UnsupportedError(f"{where}: an update of an array element (oplog diff"
                                       f" of {prefix + key[1:]!r}) cannot be replayed here;"
                                       f" restore onto {_SCRATCH}")
            _diff(value, f"{prefix}{key[1:]}.", sets, unsets, where)
        else:
            raise UnsupportedError(f"{where}: unknown oplog update diff field {key!r}")


def update_of(o: Mapping[str, Any], where: str) -> tuple[str, Mapping[str, Any]]:
    """("replace", document) or ("update", update operators) for an ``u`` entry's ``o``."""
    keys = [k for k in o if k != "$v"]
    if o.get("$v") == 2 and keys == ["diff"]:  # checked first: "diff" has no '$'
        sets: dict[str, Any] = {}
        unsets: dict[str, Any] = {}
        _diff(o["diff"], "", sets, unsets, where)
        return "update", {**({"$set": sets} if sets else {}),
                          **({"$unset": unsets} if unsets else {})}
    if keys and not any(k.startswith("$") for k in keys):
        return "replace", o
    ops = {k: o[k] for k in keys}
    if set(ops) == {"$set"} and "_id" in ops["$set"]:  # FerretDB: the whole new document
        return "replace", ops["$set"]
    unknown = sorted(set(ops) - {"$set", "$unset"})
    if unknown or not ops:
        raise UnsupportedError(f"{where}: update operators {unknown or 'none'} cannot be"
                               " replayed here")
    return "update", ops


def _flatten(entry: Mapping[str, Any], source: str) -> Iterator[Mapping[str, Any]]:
    """The entry, or the operations inside an ``applyOps`` (a transaction), of ``source``."""
    o = entry.get("o") or {}
    if entry.get("op") == "c" and "applyOps" in o:
        for inner in o["applyOps"]:
            yield from _flatten(inner, source)
    elif str(entry.get("ns") or "").startswith(source + "."):
        yield entry


def _label(entry: Mapping[str, Any]) -> str:
    ts = entry.get("ts")
    at = oplog.ts_text(ts) if isinstance(ts, Timestamp) else "?"
    return f"oplog entry {at} ({entry.get('op')} on {entry.get('ns')})"


def check(entries: Iterable[RawBSONDocument], source: str, dest: str,
          after: Timestamp | None = None, limit: Timestamp | None = None) -> int:
    """Refuse, before any write, what cannot be replayed into ``dest`` (of the entries after
    ``after`` up to ``limit``: what the replay will apply); the number of operations."""
    count = 0
    for outer in entries:
        ts = oplog.entry_ts(outer)
        if (after is not None and ts <= after) or (limit is not None and ts > limit):
            continue
        for entry in _flatten(outer, source):
            where = _label(outer)
            op, ns = entry.get("op"), str(entry.get("ns"))
            if op == "n":
                continue
            if op == "c":
                cmd = next(iter(entry.get("o") or {}), None)
                if cmd not in COMMANDS or ns != f"{source}.$cmd":
                    raise UnsupportedError(
                        f"{where}: the command {cmd!r} cannot be rewritten into database"
                        f" {dest!r} safely (only {', '.join(COMMANDS)} are replayed); restore"
                        f" onto {_SCRATCH}, or to a time before it")
                names.collection(dest, str(entry["o"][cmd]), suffix=layout.STAGING_SUFFIX)
            elif op in ("i", "u", "d"):
                names.collection(dest, _coll(ns, source), suffix=layout.STAGING_SUFFIX)
                if op == "u":
                    update_of(entry["o"], where)
            else:
                raise UnsupportedError(f"{where}: unknown oplog operation {op!r}")
            count += 1
    return count


class Replayer:
    """Applies entries of ``source`` after ``after`` up to ``limit`` into ``db`` (each
    collection's staging collection), remembering what it touched and dropped."""

    def __init__(self, db: Database[Any], source: str, after: Timestamp, limit: Timestamp,
                 staged: Iterable[str] = ()) -> None:
        self.db, self.source = db, source
        self.applied, self.limit = after, limit
        self.touched: set[str] = set()
        self.dropped: set[str] = set()
        self._known = set(staged)  # staged from the full: the rest starts empty
        self.count = 0

    def _target(self, name: str) -> Any:
        if name not in self._known:  # a leftover of an interrupted restore must not leak in
            self.db.drop_collection(name + layout.STAGING_SUFFIX)
            self._known.add(name)
        self.touched.add(name)
        self.dropped.discard(name)
        return self.db[name + layout.STAGING_SUFFIX]

    def apply_all(self, entries: Iterable[RawBSONDocument]) -> None:
        for outer in entries:
            ts = oplog.entry_ts(outer)
            if ts <= self.applied:
                continue  # overlapping pieces: already applied
            if ts > self.limit:
                return
            for entry in _flatten(outer, self.source):
                self._apply(entry, _label(outer))
            self.applied = ts

    def _apply(self, entry: Mapping[str, Any], where: str) -> None:
        op = entry.get("op")
        o = entry.get("o") or {}
        if op == "n":
            return
        self.count += 1
        if op == "c":
            self._command(o)
            return
        coll = self._target(_coll(str(entry["ns"]), self.source))
        if op == "i":
            coll.replace_one({"_id": o["_id"]}, o, upsert=True)
        elif op == "d":
            coll.delete_one({"_id": o["_id"]})
        elif op == "u":
            kind, change = update_of(o, where)
            key = {"_id": (entry.get("o2") or {})["_id"]}
            if kind == "replace":
                coll.replace_one(key, change, upsert=True)
            else:
                coll.update_one(key, change)

    def _command(self, o: Mapping[str, Any]) -> None:
        cmd = next(iter(o))
        name = str(o[cmd])
        staging = name + layout.STAGING_SUFFIX
        if cmd == "drop":
            self.db.drop_collection(staging)
            self.touched.discard(name)
            self.dropped.add(name)
        elif cmd == "create":
            self._target(name)
            if staging not in self.db.list_collection_names(filter={"name": staging}):
                options = {k: v for k, v in o.items() if k not in ("create", "idIndex")}
                self.db.command({"create": staging, **options})
        elif cmd == "createIndexes" and "indexes" not in o:  # logged one index per entry
            self._target(name)
            spec = {k: v for k, v in o.items() if k != cmd}
            self.db.command({cmd: staging, "indexes": [spec]})
        else:  # createIndexes, dropIndexes: the same command on the staging collection
            self._target(name)
            self.db.command({cmd: staging, **{k: v for k, v in o.items() if k != cmd}})
