"""MongoDB (FerretDB here): verify before apply (see atomic_helpers). Whole and selective
restores stage every collection and rename only once all are loaded and verified."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import bson
import pytest

from tests.integration import atomic_helpers
from tests.integration.atomic_helpers import (
    Repo,
    backup,
    cli_env,
    damage,
    dumps,
    largest,
    restore_fails,
)

fault = atomic_helpers.fault  # fixtures
repo = atomic_helpers.repo


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "",
            "SAFEHOLD_NO_ENCRYPTION": "1", "SAFEHOLD_PASSWORD": ""}


def url(server: Any, db: str) -> str:
    return f"mongodb://127.0.0.1:{server.port}/{db}?directConnection=true"


def fill(db: Any) -> None:
    big = db["big"]
    for start in range(0, 12000, 4000):
        big.insert_many([{"_id": i, "kind": i % 2,
                          "v": hashlib.md5(str(i).encode()).hexdigest() * 2}
                         for i in range(start, start + 4000)])
    big.create_index("v", name="big_v")
    db["other"].insert_many([{"_id": i, "note": f"n{i}"} for i in range(300)])


def change(db: Any) -> None:
    for i in (0, 10, 5000):  # few and by _id: FerretDB updates document by document
        db["big"].update_one({"_id": i}, {"$set": {"v": "changed"}})
    db["big"].delete_many({"_id": {"$in": list(range(11900, 12000))}})
    db["other"].insert_one({"_id": 1000, "note": "after the backup"})
    db["other"].create_index("note", name="other_note")


def snapshot(db: Any) -> str:
    state: dict[str, Any] = {"collections": sorted(db.list_collection_names())}
    for name in state["collections"]:
        docs = [bson.encode(d) for d in db[name].find({}, sort=[("_id", 1)])]
        state[name] = {
            "count": len(docs),
            "sha": hashlib.sha256(b"".join(docs)).hexdigest(),
            "indexes": sorted((i["name"], sorted(i["key"].items()))
                              for i in db[name].list_indexes()),
            "options": db[name].options(),
        }
    return dumps(state)


@pytest.mark.parametrize("include", [["big"], None], ids=["selective", "whole"])
def test_a_failing_stream_changes_nothing(mongo_server: Any, mongo_db: Any, repo: Repo,
                                          fault: str, include: list[str] | None,
                                          env: dict[str, str], tmp_path: Path) -> None:
    fill(mongo_db)
    target = url(mongo_server, mongo_db.name)
    env = cli_env(env, repo, fault, tmp_path)
    manifest = backup(target, repo, env, fault)
    change(mongo_db)
    before = snapshot(mongo_db)
    damage(repo, manifest, largest(manifest, lambda n: n.endswith(".bson")), fault)
    restore_fails(target, repo, env, fault, include)
    assert snapshot(mongo_db) == before
