"""Data for the MongoDB engine tests: a mixed corpus, content checksums, a concurrent writer.

The corpus uses only what FerretDB stores faithfully (docs/testing.md: no Decimal128,
code, MinKey/MaxKey, NaN or -0.0, which crash its connection or change on the way; and no
nested arrays, which it rejects).
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
from bson.binary import Binary, UuidRepresentation
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from bson.regex import Regex
from bson.timestamp import Timestamp
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

RAW = CodecOptions(document_class=RawBSONDocument)
UNICODE_NAME = "ünï côde;x"  # ';' and ' ' are escaped in mongodump file names
MB = 2**20


def populate(db: Database[Any], rows: int = 200) -> None:
    """Twelve collections of mixed types, with unique, compound and sparse indexes."""
    base = datetime(2024, 2, 29, 12, 30, 15, 123000, tzinfo=UTC)
    db.users.insert_many([{
        "_id": ObjectId(), "email": f"user{i}@example.com", "first": f"Zoë {i}",
        "last": ["Müller", "Ørsted", "李", "O'Brien"][i % 4],
        "age": i % 90, "balance": i * 1.25, "visits": Int64(i * 10**12),
        "tags": ["a", "b", str(i)], "address": {"city": "Zürich", "zip": f"{8000 + i}",
                                                 "geo": [8.54, 47.37]},
        "nick": f"n{i}" if i % 3 == 0 else None, "active": i % 2 == 0,
        "joined": base - timedelta(days=i),
    } for i in range(rows)])
    db.users.create_index("email", unique=True)
    db.users.create_index([("last", ASCENDING), ("first", DESCENDING)], name="by_name")
    db.users.create_index("nick", sparse=True)
    db.blobs.insert_many([{"_id": i, "data": Binary(os.urandom(MB - 1024)), "i": i}
                          for i in range(3)] + [
        {"_id": 10, "data": Binary(b""), "uuid": Binary.from_uuid(
            uuid.uuid4(), UuidRepresentation.STANDARD)},
        {"_id": 11, "data": Binary(b"\x00\xff" * 100, 0x80)},
    ])
    db.events.insert_many([{"_id": i, "at": datetime(1969, 7, 20, tzinfo=UTC)
                            + timedelta(hours=i), "ts": Timestamp(1_700_000_000 + i, i),
                            "kind": ["start", "stop"][i % 2]} for i in range(rows)])
    db.events.create_index([("kind", ASCENDING), ("at", DESCENDING)])
    db.nested.insert_many([{"_id": f"n{i}", "a": {"b": {"c": {"d": [i, {"e": [{}, "x"]}, {}]}}},
                            "list": [{"k": j, "v": [j] * j} for j in range(5)]}
                           for i in range(rows)])
    db.numbers.insert_many([{"_id": i, "i32": v, "i64": Int64(v), "f": v / 3}
                            for i, v in enumerate([0, 1, -1, 2**31 - 1, -(2**31), 42])]
                           + [{"_id": 100, "big": Int64(2**63 - 1), "small": Int64(-(2**63)),
                               "huge": 1.7976931348623157e308, "tiny": 5e-324}])
    db.strings.insert_many([{"_id": i, "s": "😀 Ελληνικά 中文 " * (i + 1), "empty": "",
                             "long": "x" * 10_000} for i in range(50)])
    db.misc.insert_many([{"_id": {"tenant": i, "n": i * 2}, "re": Regex("^a.*b$", "i"),
                          "flag": i % 2 == 0, "nothing": None} for i in range(20)])
    db.many.insert_many([{"_id": i, "v": i * i} for i in range(5000)])
    db.many.create_index("v", unique=True, name="v_unique")
    db[UNICODE_NAME].insert_many([{"_id": i, "ä": "ö"} for i in range(10)])
    db.create_collection("empty")
    db.create_collection("capped_log", capped=True, size=1 << 20, max=1000)
    db.capped_log.insert_many([{"_id": i, "line": f"log {i}"} for i in range(30)])
    db.live.insert_many([{"_id": -i - 1, "seed": True} for i in range(10)])


def collection_digest(db: Database[Any], name: str) -> tuple[int, str]:
    """(count, SHA-256 of the documents' raw BSON sorted by their _id's encoding)."""
    docs = [bytes(doc.raw) for doc in db.get_collection(name, codec_options=RAW).find()]
    keyed = sorted((bson.encode({"k": bson.decode(raw)["_id"]}), raw) for raw in docs)
    digest = hashlib.sha256()
    for _, raw in keyed:
        digest.update(raw)
    return len(docs), digest.hexdigest()


def raw_documents(db: Database[Any], name: str) -> dict[bytes, bytes]:
    """_id encoding -> raw document."""
    return {bson.encode({"k": bson.decode(doc.raw)["_id"]}): bytes(doc.raw)
            for doc in db.get_collection(name, codec_options=RAW).find()}


def snapshot(db: Database[Any], skip: tuple[str, ...] = ()) -> dict[str, tuple[int, str]]:
    return {name: collection_digest(db, name) for name in sorted(db.list_collection_names())
            if name not in skip}


def indexes(db: Database[Any], name: str) -> list[tuple[Any, ...]]:
    return sorted((i["name"], tuple(i["key"].items()), bool(i.get("unique")),
                   bool(i.get("sparse"))) for i in db[name].list_indexes())


def options(db: Database[Any], name: str) -> dict[str, Any]:
    return dict(next(iter(db.list_collections(filter={"name": name})))["options"])


class Writer(threading.Thread):
    """Inserts into ``live`` until stopped: the backup runs while the database changes."""

    def __init__(self, db: Database[Any]) -> None:
        super().__init__(daemon=True)
        self.db, self.stop, self.count = db, threading.Event(), 0
        self.error: Exception | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.db.live.insert_one({"_id": self.count, "at": datetime.now(UTC),
                                         "pad": "p" * 200})
                self.count += 1
                if self.count == 20:
                    self.ready.set()
        except Exception as exc:  # surfaced by the test
            self.error = exc
            self.ready.set()
