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
