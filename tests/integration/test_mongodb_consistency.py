"""The MongoDB engine claims only the consistency the server really gives, and says why.

FerretDB accepts ``readConcern: {level: snapshot, atClusterTime: T}`` and ignores it; once a
``local.oplog.rs`` exists (FerretDB writes one when it is created, for oplog tailers) it looks
like a replica set member with snapshot reads. Each test starts its own FerretDB, since the
oplog changes what every backup on that server sees.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson.timestamp import Timestamp
from pymongo.errors import OperationFailure

from safehold.engines.mongodb import consistency
from safehold.repository.repo import Repository
from safehold.storage.local import LocalStorage
from tests.infra.ferretdb import FERRETDB_VERSION, FerretDB
from tests.infra.procs import serve, unavailable
from tests.integration.cli_helpers import run


def ferretdb(repl_set_name: str | None) -> Iterator[FerretDB]:
    server = FerretDB(repl_set_name=repl_set_name)
    if not server.binary:
        unavailable(f"FerretDB {FERRETDB_VERSION}",
                    "binary not built (scripts/infra/30-ferretdb.sh)")
    yield from serve(server, f"FerretDB {FERRETDB_VERSION}")


@pytest.fixture
def replica_ferretdb() -> Iterator[FerretDB]:
    """FerretDB advertising a replica set name, with an oplog: it looks like a member."""
    yield from ferretdb("rs0")


@pytest.fixture
def standalone_ferretdb() -> Iterator[FerretDB]:
    yield from ferretdb(None)


def with_oplog_and_data(server: FerretDB) -> None:
    client = server.client()
    try:
        client["local"].create_collection("oplog.rs", capped=True, size=1 << 20)
        client["app"]["orders"].insert_many([{"n": i} for i in range(50)])
        client["app"]["lines"].insert_many([{"n": i} for i in range(50)])
        assert client["local"]["oplog.rs"].count_documents({}) > 0  # FerretDB writes to it
    finally:
        client.close()


def backup(server: FerretDB, tmp_path: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(engine_meta, stderr, prelude.json) of a backup of database ``app``."""
    (tmp_path / "safehold.yaml").write_text("{}\n")
    env = {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
           "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_PASSWORD": ""}
    repo = (tmp_path / "repo").as_uri()
    result = run("backup", "-t", f"mongodb://127.0.0.1:{server.port}/app?directConnection=true",
                 "-r", repo, "--no-encryption", "-c", "none", "--output", "json", env=env)
    backup_id = json.loads(result.stdout)["backup_id"]
    manifest = Repository(LocalStorage(tmp_path / "repo")).resolve("app", backup_id)
    prelude = run("cat", "-r", repo, "-t", "app", "-b", backup_id, "prelude.json", env=env)
    return manifest.engine_meta, result.stderr, json.loads(prelude.stdout)


def test_ferretdb_with_an_oplog_is_not_reported_as_a_snapshot(
        replica_ferretdb: FerretDB, tmp_path: Path) -> None:
    with_oplog_and_data(replica_ferretdb)
    meta, stderr, prelude = backup(replica_ferretdb, tmp_path)
    assert meta["consistency"] == "oplog-range"
    reason = meta["consistency_reason"]
    assert "FerretDB" in reason and "ignores" in reason
    assert prelude["consistency"] == "oplog-range" and prelude["consistency_reason"] == reason
    assert prelude["start_position"] and prelude["end_position"]  # the bounds it does have
    assert "oplog-range consistent only" in stderr and reason in stderr


def test_an_oplog_on_a_server_outside_a_replica_set_is_not_trusted(
        standalone_ferretdb: FerretDB, tmp_path: Path) -> None:
    with_oplog_and_data(standalone_ferretdb)
    meta, stderr, prelude = backup(standalone_ferretdb, tmp_path)
    assert meta["consistency"] == "per-collection"
    assert "not a replica set member" in meta["consistency_reason"]
    assert prelude["start_position"] is None and prelude["end_position"] is None
    assert "per-collection consistent only" in stderr


def test_the_probe_sees_that_atclustertime_is_ignored(replica_ferretdb: FerretDB) -> None:
    """Without looking at FerretDB's name: a read at 1970 that succeeds is a read concern
    the server ignores."""
    with_oplog_and_data(replica_ferretdb)
    client = replica_ferretdb.client()
    try:
        start = consistency.oplog_time(client)
        assert start is not None
        refusal = consistency._snapshot_refusal(client["app"], "orders", start)
    finally:
        client.close()
    assert refusal is not None and "accepted a snapshot read at 1970-01-01" in refusal


class HonouringServer:
    """Stands in for a mongod replica set member (none can run here): it refuses snapshot
    reads before its history with SnapshotTooOld, as mongod does."""

    name = "app"

    def __init__(self, code: int) -> None:
        self.code = code

    def command(self, cmd: dict[str, Any], **_: Any) -> dict[str, Any]:
        if cmd["readConcern"]["atClusterTime"] == consistency.ANCIENT:
            raise OperationFailure("Read timestamp is older than the oldest available",
                                   code=self.code)
        return {"cursor": {"firstBatch": [], "id": 0}}


@pytest.mark.parametrize(("code", "honoured"), [(239, True), (246, True), (2, False)])
def test_only_a_refusal_for_lack_of_history_proves_snapshot_reads(code: int,
                                                                   honoured: bool) -> None:
    refusal = consistency._snapshot_refusal(HonouringServer(code),  # type: ignore[arg-type]
                                            "orders", Timestamp(1_800_000_000, 1))
    assert (refusal is None) == honoured
