"""A backup's toc.json read back (catalog.Toc.parse): what Safehold wrote round-trips; anything
else is an IntegrityError (exit 4) naming toc.json, never a crash reported as a bug."""

from __future__ import annotations

import json

import pytest

from safehold.api.errors import IntegrityError
from safehold.cli.errors import Exit
from safehold.engines.postgres.catalog import TOC_FORMAT, ForeignKey, Requirement, Table, Toc


def written() -> Toc:
    table = Table(oid=16384, schema="public", name="orders", kind="r", bytes=8192, rows=3,
                  object="data/0000", parts=[16390],
                  sequences=[Requirement(16385, "sequence", "public.orders_id_seq")],
                  foreign_keys=[ForeignKey(16391, "orders_customer_fk", "public.customers")])
    return Toc(database={"name": "shop", "encoding": "UTF8", "collate": "C", "ctype": "C"},
               tables=[table], sequences=[], views=[], functions=[], snapshot="00000003-1",
               objects={"data/0000": {"section": "data", "compression": "zstd:3"}})


def test_what_safehold_writes_round_trips() -> None:
    toc = written()
    assert Toc.parse(json.dumps(toc.as_json()).encode()) == toc


@pytest.mark.parametrize("data", [
    b"\xff\xfe not json",
    b"[1, 2, 3]",
    b"{}",
    json.dumps({"format": TOC_FORMAT + 1}).encode(),
    json.dumps({**written().as_json(), "tables": [{"oid": 1}]}).encode(),
    json.dumps({**written().as_json(), "tables": "orders"}).encode(),
    json.dumps({**written().as_json(), "surprise": 1}).encode(),
])
def test_anything_else_is_damage_not_a_crash(data: bytes) -> None:
    with pytest.raises(IntegrityError) as caught:
        Toc.parse(data)
    assert caught.value.exit_code == Exit.CORRUPT
    assert "toc.json is not a catalog Safehold wrote" in str(caught.value)


def forged(change: str, value: object) -> bytes:
    """What Safehold wrote with one value replaced: ``change`` is a path like
    ``tables.0.bytes``; None at the end of it removes the key instead."""
    data = written().as_json()
    *path, last = change.split(".")
    node = data
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: int | str = int(last) if isinstance(node, list) else last
    if value is None:
        del node[key]
    else:
        node[key] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize(("change", "value", "named"), [
    ("tables.0.bytes", "8192", "toc.tables[0].bytes is '8192', not a count"),
    ("tables.0.rows", -1, "toc.tables[0].rows is -1"),
    ("tables.0.oid", True, "toc.tables[0].oid is True"),  # a bool is no OID
    ("tables.0.name", 5, "toc.tables[0].name is 5, not a string"),
    ("tables.0.object", ["data/0000"], "toc.tables[0].object is ['data/0000']"),
    ("tables.0.parts", {"a": 1}, "toc.tables[0].parts is a dict, not a list"),
    ("tables.0.parts.0", 1.5, "toc.tables[0].parts[0] is 1.5"),
    ("tables.0.sequences.0.ident", None, "toc.tables[0].sequences[0] lacks its field 'ident'"),
    ("tables.0.foreign_keys.0.surprise", 1, "field Safehold never writes: 'surprise'"),
    ("tables.0", "orders", "toc.tables[0] is a str, not an object"),
    ("database.encoding", 6, "toc.database['encoding'] is 6"),
    ("objects.data/0000", "zstd", "toc.objects['data/0000'] is a str, not an object"),
    ("views", ["v", 1], "toc.views[1] is 1"),
    ("snapshot", None, None),  # a field with a default may be absent (older writers)
])
def test_a_forged_value_is_refused_by_name(change: str, value: object, named: str | None
                                           ) -> None:
    """Every value is of the kind Safehold writes, or the catalog is damage (exit 4), named:
    a string where a size belongs used to crash the restore later, reported as a bug."""
    if named is None:
        assert Toc.parse(forged(change, value)).snapshot == ""
        return
    with pytest.raises(IntegrityError) as caught:
        Toc.parse(forged(change, value))
    assert caught.value.exit_code == Exit.CORRUPT
    assert named in str(caught.value), str(caught.value)
