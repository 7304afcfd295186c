"""Smoke: the MongoDB wire-protocol server (FerretDB) starts and round-trips mixed BSON.

Decimal128 is left out on purpose: FerretDB v1 drops the connection on it (docs/testing.d/mongo.md).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import bson
from bson.binary import Binary
from bson.objectid import ObjectId

from tests.infra.ferretdb import FerretDB

DOCS: list[dict[str, Any]] = [
    {
        "_id": 1,
        "name": "plain",
        "n": 42,
        "big": 2**40,
        "ratio": 0.5,
        "ok": True,
        "none": None,
    },
    {
        "_id": 2,
        "name": "unicodé ✓ 日本語 🚀",
        "blob": bytes(range(256)),  # BSON binary subtype 0 (decoded back as bytes)
        "uuid": Binary(bytes(range(16)), 4),
        "oid": ObjectId("65a1b2c3d4e5f60718293a4b"),
        "when": dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC),
    },
    {
        "_id": 3,
        "name": "nested",
        "nested": {"a": [1, "two", {"three": 3.0}, None], "b": {"c": {"d": b"\x00\xff"}}},
        "empty": {"list": [], "doc": {}},
    },
]


def test_mongo_roundtrip(mongo_db: Any) -> None:
    coll = mongo_db["things"]
    coll.insert_many(DOCS)
    index = coll.create_index([("name", 1)], unique=True, name="by_name")

    opts = mongo_db.codec_options.with_options(tz_aware=True, tzinfo=dt.UTC)
    got = list(mongo_db.get_collection("things", codec_options=opts).find().sort("_id", 1))
    # Compare the exact BSON bytes too, so int32/int64/double/binary subtypes are all checked.
    assert [bson.encode(d) for d in got] == [bson.encode(d) for d in DOCS]
    assert got == DOCS

    assert "things" in mongo_db.list_collection_names()
    indexes = coll.index_information()
    assert index == "by_name"
    assert indexes["by_name"]["key"] == [("name", 1)]
    assert indexes["by_name"].get("unique") is True
    assert coll.count_documents({"nested.b.c.d": {"$exists": True}}) == 1


def test_mongo_server_version(mongo_server: FerretDB) -> None:
    client = mongo_server.client()
    try:
        info = client.admin.command("buildInfo")
    finally:
        client.close()
    stages = info.get("ferretdbFeatures", {}).get("aggregationStages", [])
    print(
        f"\nFerretDB {info.get('ferretdbVersion')} (claims MongoDB {info['version']}; "
        f"{len(stages)} aggregation stages: {', '.join(sorted(stages))})"
    )
    assert info["ok"] == 1
    assert info["version"].split(".")[0].isdigit()
    assert str(info.get("ferretdbVersion", "")).startswith("v1.")
