"""What only a real MongoDB replica set can prove about oplog backups and point-in-time restore
(FerretDB logs no commands, has no transactions and no snapshot reads).

Marked ``replset``: they need ``SAFEHOLD_TEST_MONGO_REPLSET`` (e.g. ``mongodb://127.0.0.1:27017``,
a single-member replica set of mongod 7, no auth), which .github/workflows/e2e-kind.yml starts
with Docker. No registry reachable on the development machine carries mongod, so there they
are skipped with that reason (docs/testing.md lists them).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from tests.integration.cli_helpers import run, run_json

pytestmark = pytest.mark.replset
URI = os.environ.get("SAFEHOLD_TEST_MONGO_REPLSET", "")


@pytest.fixture
def client() -> Iterator[Any]:
    if not URI:
        pytest.skip("SAFEHOLD_TEST_MONGO_REPLSET is not set: these need a real mongod replica"
                    " set (run by .github/workflows/e2e-kind.yml)")
    c: MongoClient[Any] = MongoClient(URI, directConnection=True, tz_aware=True)
    yield c
    c.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "safehold.yaml"
    cfg.write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(cfg), "SAFEHOLD_KEY_FILE": "", "SAFEHOLD_KEY": "",
            "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_PASSWORD": ""}


def url(db: str) -> str:
    host = URI.split("://", 1)[1].split("/", 1)[0]
    return f"mongodb://{host}/{db}?directConnection=true"


def state(client: Any, db: str) -> dict[str, Any]:
    """Documents and index keys of every collection of ``db``."""
    return {name: (sorted(client[db][name].find(), key=lambda d: repr(d["_id"])),
                   sorted(repr(i["key"]) for i in client[db][name].list_indexes()))
            for name in sorted(client[db].list_collection_names())}


def mark(client: Any, db: str, marks: list[tuple[str, Any]]) -> None:
    time.sleep(1.2)
    marks.append((datetime.now(UTC).isoformat(), state(client, db)))
    time.sleep(1.2)


def test_commands_diffs_and_transactions_replay_into_another_database(
        client: Any, tmp_path: Path, env: dict[str, str]) -> None:
    db = f"rs_{uuid.uuid4().hex[:8]}"
    repo = (tmp_path / "repo").as_uri()
    src = client[db]
    src.t.insert_many([{"_id": i, "a": {"b": i, "c": [1, 2]}, "v": i} for i in range(50)])
    full = run_json("backup", "-t", url(db), "-r", repo, "--no-encryption", env=env)
    assert full["end_position"]["oplog_ts"] == full["end_position"]["replay_from"]  # snapshot
    marks: list[tuple[str, Any]] = []
    mark(client, db, marks)
    src.t.update_many({"_id": {"$lt": 10}}, {"$set": {"a.b": -1}, "$unset": {"v": ""}})  # $v:2
    src.create_collection("made")  # logged as a command
    src.made.create_index("k", unique=True)
    src.made.insert_many([{"_id": i, "k": i} for i in range(5)])
    mark(client, db, marks)
    with client.start_session() as session, session.start_transaction():
        src.t.delete_one({"_id": 20}, session=session)
        src.made.insert_one({"_id": 9, "k": 9}, session=session)
    src.drop_collection("made")
    mark(client, db, marks)
    src.t.insert_one({"_id": "last"})
    run_json("backup", "-t", url(db), "-r", repo, "--type", "incremental", "--no-encryption",
             env=env)
    for i, (when, expected) in enumerate(marks):
        into = f"{db}_r{i}"
        run("restore", "-r", repo, "--from", db, "-t", url(into), "-y", "--to-time", when,
            env=env)
        assert state(client, into) == expected, f"restore to mark {i} ({when})"
        client.drop_database(into)
    client.drop_database(db)
