"""Fixtures: a real MongoDB wire-protocol server (FerretDB on SQLite) and fresh databases on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.infra.ferretdb import FERRETDB_VERSION, FerretDB
from tests.infra.procs import serve, unavailable


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[FerretDB]:
    """One FerretDB for the whole session (start-up ~0.1 s; tests isolate by database)."""
    server = FerretDB()
    if not server.binary:
        unavailable(
            f"FerretDB {FERRETDB_VERSION}",
            "binary not built (scripts/infra/30-ferretdb.sh)",
        )
    yield from serve(server, f"FerretDB {FERRETDB_VERSION}")


@pytest.fixture
def mongo_db(mongo_server: FerretDB, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh, uniquely named pymongo Database, dropped after the test."""
    client = mongo_server.client()
    # Short, test-derived and unique: FerretDB/SQLite keep database names as file names.
    stem = "".join(c if c.isalnum() else "_" for c in request.node.name)[:30]
    name = f"t_{stem}_{uuid.uuid4().hex[:8]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()
