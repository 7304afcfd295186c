"""A MongoDB backup's toc.json and collection metadata read back: what Safehold writes
round-trips; anything else is an IntegrityError (exit 4) naming the file and the value, never a
crash later in the restore nor a database error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from bson import json_util

from safehold.api.errors import IntegrityError
from safehold.cli.errors import Exit
from safehold.engines.mongodb.layout import FORMAT, CollectionMetadata, Toc, TocEntry


def written() -> Toc:
    return Toc(database="shop", collections=(
        TocEntry(name="orders", type="collection", metadata="orders.metadata.json",
                 data="orders.bson", documents=3, bytes=8192),
        TocEntry(name="recent", type="view", metadata="recent.metadata.json", data=None),
    ))


def _doc(**changes: Any) -> dict[str, Any]:
    doc = json.loads(written().to_json())
    doc.update(changes)
    return doc


def _entry(**changes: Any) -> dict[str, Any]:
    doc = _doc()
    doc["collections"][0].update(changes)
    return doc


def test_what_safehold_writes_round_trips() -> None:
    assert Toc.parse(written().to_json(), "toc.json") == written()


@pytest.mark.parametrize(("doc", "named"), [
    (b"\xff\xfe not json", "toc.json"),
    (b"[1, 2, 3]", "format 'list'"),
    (b"{}", "format None"),
    (_doc(format=FORMAT + 1), "a newer Safehold"),
    (_doc(collections="orders"), "toc.collections is a str, not a list"),
    (_doc(collections=[{"name": "orders"}]), "toc.collections[0] lacks its field 'type'"),
    (_entry(bytes="8192"), "toc.collections[0].bytes is '8192', not a count"),
    (_entry(documents=-1), "toc.collections[0].documents is -1"),
    (_entry(documents=True), "toc.collections[0].documents is True"),
    (_entry(data=7), "toc.collections[0].data is 7, not a string"),
    (_entry(surprise=1), "toc.collections[0] has a field Safehold never writes: 'surprise'"),
    (_doc(database=None), "toc.database is None, not a string"),
    (_doc(surprise=1), "toc has a field Safehold never writes"),
])
def test_anything_else_is_damage_naming_the_value(doc: bytes | dict[str, Any],
                                                  named: str) -> None:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(IntegrityError) as caught:
        Toc.parse(data, "toc.json")
    message = str(caught.value)
    assert message.startswith("toc.json is not a Safehold MongoDB table of contents"), message
    assert named in message and "damaged" in message
    assert caught.value.exit_code == Exit.CORRUPT


def test_collection_metadata_that_mongodump_would_not_write_is_damage() -> None:
    good = json_util.dumps({"collectionName": "orders", "type": "collection", "options": {},
                            "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]}).encode()
    assert CollectionMetadata.parse(good, "orders.metadata.json").name == "orders"
    for bad in (b"not json", b"[]", json_util.dumps({"indexes": []}).encode(),
                json_util.dumps({"collectionName": "orders", "indexes": ["a"]}).encode()):
        with pytest.raises(IntegrityError, match=r"orders\.metadata\.json is not a mongodump"):
            CollectionMetadata.parse(bad, "orders.metadata.json")
