"""The MongoDB engine against a real wire-protocol server (FerretDB, see docs/testing.md).

FerretDB has no oplog, snapshot reads, authentication or ``renameCollection(dropTarget)``, so
these tests cover the per-collection consistency mode and the drop + rename swap; the snapshot
mode and the ``dropTarget`` swap need a real mongod replica set, which cannot run here.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bson
import pytest
from bson.json_util import CANONICAL_JSON_OPTIONS, loads
from pymongo.errors import AutoReconnect, OperationFailure, ServerSelectionTimeoutError

from safehold.cli.errors import Exit
from safehold.engines.base import (
    AuthenticationFailed,
    ConnectionOptions,
    ConnectTimeout,
    DatabaseMissing,
    HostUnreachable,
    PermissionDenied,
    UnsupportedError,
    open_engine,
)
from safehold.engines.mongodb import MongoEngine
from safehold.engines.mongodb.conn import MongoTarget, classify
from safehold.engines.mongodb.layout import escape
from safehold.engines.mongodb.restore import documents
from safehold.pipeline.backup import BackupOptions, run_backup
from safehold.repository.repo import Repository
from safehold.storage.local import LocalStorage
from tests.integration import mongo_helpers as mh
from tests.integration.cli_helpers import kill_cli_when, run, run_json
from tests.integration.engine_helpers import check_concurrent_puts


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_NO_ENCRYPTION": "1",  # no key here: unencrypted by explicit choice
            "SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_PASSWORD": ""}


@pytest.fixture
def other_db(mongo_server: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A second fresh database name (restore destinations), dropped afterwards."""
    client = mongo_server.client()
    names: list[str] = []

    def make() -> Any:
        names.append(f"r_{os.urandom(4).hex()}")
        return client[names[-1]]

    yield make
    for name in names:
        client.drop_database(name)
    client.close()


def url(server: Any, db: str) -> str:
    return f"mongodb://127.0.0.1:{server.port}/{db}?directConnection=true"


def repo_url(tmp_path: Path) -> str:
    return (tmp_path / "repo").as_uri()


# -- backup while writing, restore whole and selective -------------------------------------------

def test_backup_while_writing_then_restore_whole_and_selective(
        mongo_server: Any, mongo_db: Any, other_db: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    mh.populate(mongo_db)
    repo = repo_url(tmp_path)
    before = mh.snapshot(mongo_db, skip=("live",))
    live_before = set(mh.raw_documents(mongo_db, "live"))
    writer = mh.Writer(mongo_db)
    writer.start()
    assert writer.ready.wait(10), "the writer never got going"
    try:
        b = run_json("backup", "-t", url(mongo_server, mongo_db.name), "-r", repo,
                     "--name", "app", "--jobs", "3", env=env)
    finally:
        writer.stop.set()
        writer.join(10)
    assert writer.error is None
    live_after = mh.raw_documents(mongo_db, "live")
    assert len(live_after) > len(live_before) + 20  # it really wrote during the backup
    manifest = Repository(LocalStorage(tmp_path / "repo")).resolve("app", b["backup_id"])
    assert manifest.engine_meta["consistency"] == "per-collection"
    assert manifest.start_position is None  # FerretDB has no oplog
    assert sorted(manifest.engine_meta["collections"]) == sorted([*before, "live"])
    assert run_json("verify", "-r", repo, env=env)["ok"] is True

    whole = other_db()
    run("restore", "-r", repo, "--from", "app", "-b", "latest", "-t",
        url(mongo_server, whole.name), env=env)
    assert mh.snapshot(whole, skip=("live",)) == before
    restored_live = mh.raw_documents(whole, "live")
    assert live_before <= set(restored_live)  # all that existed when the backup started
    assert all(live_after[k] == raw for k, raw in restored_live.items())  # nothing invented
    for name in ("users", "events", "many"):
        assert mh.indexes(whole, name) == mh.indexes(mongo_db, name)
    assert mh.options(whole, "capped_log") == mh.options(mongo_db, "capped_log")
    assert not [n for n in whole.list_collection_names() if "safehold" in n]

    chosen = other_db()
    run("restore", "-r", repo, "--from", "app", "-b", "latest", "-t",
        url(mongo_server, chosen.name), "--include", f"users,blobs,{mh.UNICODE_NAME}", env=env)
    assert sorted(chosen.list_collection_names()) == sorted(["users", "blobs", mh.UNICODE_NAME])
    assert mh.snapshot(chosen) == {k: before[k] for k in ("users", "blobs", mh.UNICODE_NAME)}
    assert mh.indexes(chosen, "users") == mh.indexes(mongo_db, "users")


def test_replace_and_conflict_fail_on_an_existing_database(
        mongo_server: Any, mongo_db: Any, tmp_path: Path, env: dict[str, str]) -> None:
    mongo_db.a.insert_many([{"_id": i, "v": "old"} for i in range(100)])
    mongo_db.b.insert_many([{"_id": i} for i in range(5)])
    repo, target = repo_url(tmp_path), url(mongo_server, mongo_db.name)
    run("backup", "-t", target, "-r", repo, "--name", "app", env=env)
    mongo_db.a.update_many({}, {"$set": {"v": "new"}})
    mongo_db.a.insert_one({"_id": 1000})
    mongo_db.c.insert_one({"_id": "not in the backup"})
    changed = mh.snapshot(mongo_db)

    result = run("restore", "-r", repo, "--from", "app", "-b", "latest", "-t", target,
                 "--conflict", "fail", env=env, ok=False)
    assert result.exit_code == Exit.CONFLICT, result.output
    assert "'a', 'b'" in result.output and "--conflict replace" in result.output
    assert mh.snapshot(mongo_db) == changed

    run("restore", "-r", repo, "--from", "app", "-b", "latest", "-t", target, "--yes", env=env)
    assert mongo_db.a.count_documents({"v": "old"}) == 100
    assert mongo_db.a.count_documents({}) == 100
    assert mh.collection_digest(mongo_db, "c") == changed["c"]  # not in the backup: left alone

    result = run("restore", "-r", repo, "--from", "app", "-b", "latest", "-t", target,
                 "--include", "a,nope", "--yes", env=env, ok=False)
    assert result.exit_code == Exit.USAGE and "no collection 'nope'" in result.output


def test_check_and_selective_backup(mongo_server: Any, mongo_db: Any, tmp_path: Path,
                                    env: dict[str, str]) -> None:
    missing = run("check", "-t", url(mongo_server, "t_no_such_db"), env=env, ok=False)
    assert missing.exit_code == Exit.DATABASE and "does not exist" in missing.output
    mongo_db.a.insert_many([{"_id": i} for i in range(3)])
    mongo_db.b.insert_one({"_id": "only"})
    report = run_json("check", "-t", url(mongo_server, mongo_db.name), "--purpose", "restore",
                      env=env)
    assert report["ok"] is True and "FerretDB" in report["server_version"]

    engine = open_engine(url(mongo_server, mongo_db.name))
    repo = Repository(LocalStorage(tmp_path / "repo"))
    manifest = run_backup(engine, repo, BackupOptions(target="sel", include=["b"],
                                                      no_encryption=True), None)
    assert manifest.engine_meta["collections"] == ["b"] and manifest.include == ("b",)
    assert {o.name for o in manifest.objects} == {
        f"{mongo_db.name}/b.bson", f"{mongo_db.name}/b.metadata.json", "toc.json",
        "prelude.json"}
    with pytest.raises(DatabaseMissing, match="no collection 'zz'"):
        run_backup(engine, repo, BackupOptions(target="sel", include=["zz"], no_encryption=True),
                   None)


# -- the stored objects are mongodump's layout -------------------------------------------------

def test_objects_are_mongodump_layout(mongo_server: Any, mongo_db: Any, tmp_path: Path,
                                      env: dict[str, str]) -> None:
    mh.populate(mongo_db, rows=50)
    repo = repo_url(tmp_path)
    b = run_json("backup", "-t", url(mongo_server, mongo_db.name), "-r", repo, "-c", "none",
                 "--no-encryption", "--name", "app", env=env)
    manifest = Repository(LocalStorage(tmp_path / "repo")).resolve("app", b["backup_id"])
    dump = tmp_path / "dump"
    for record in manifest.objects:
        out = dump / record.name
        out.parent.mkdir(parents=True, exist_ok=True)
        cat = run("cat", "-r", repo, "-t", "app", "-b", b["backup_id"], record.name, env=env)
        out.write_bytes(cat.stdout_bytes)
    db_dir = dump / mongo_db.name
    names = sorted(mongo_db.list_collection_names())
    assert sorted(p.name for p in db_dir.glob("*.bson")) == sorted(
        f"{quote(n, safe='$&+:=@')}.bson" for n in names)
    assert (db_dir / "%C3%BCn%C3%AF%20c%C3%B4de%3Bx.bson").exists()  # Go url.PathEscape
    for name in names:
        raws = [bson.encode(d) for d in bson.decode_file_iter(
            (db_dir / f"{escape(name)}.bson").open("rb"))]
        assert len(raws) == mongo_db[name].count_documents({})
        assert sorted(raws) == sorted(mh.raw_documents(mongo_db, name).values())
        text = (db_dir / f"{escape(name)}.metadata.json").read_text()
        meta = json.loads(text)
        assert list(meta) == [*(["options"] if meta.get("options") else []), "indexes", "uuid",
                              "collectionName", "type"]
        assert meta["collectionName"] == name and meta["type"] == "collection"
        assert len(meta["uuid"]) == 32 and int(meta["uuid"], 16) >= 0
        assert meta["indexes"][0] == {"v": {"$numberInt": "2"},
                                      "key": {"_id": {"$numberInt": "1"}}, "name": "_id_"}
        parsed = loads(text, json_options=CANONICAL_JSON_OPTIONS)
        assert [i["name"] for i in parsed["indexes"]] == [
            i["name"] for i in mongo_db[name].list_indexes()]
    capped = json.loads((db_dir / "capped_log.metadata.json").read_text())
    assert capped["options"]["capped"] is True
    toc = json.loads((dump / "toc.json").read_text())
    assert toc["database"] == mongo_db.name and len(toc["collections"]) == len(names)
    prelude = json.loads((dump / "prelude.json").read_text())
    assert prelude["consistency"] == "per-collection"
    assert "FerretDB" in prelude["server_version"]
    assert prelude["ServerVersion"] == "7.0.42"  # mongodump's prelude fields come first
    assert list(prelude)[:2] == ["ServerVersion", "ToolVersion"]


def test_bson_stream_split_at_any_chunk_boundary() -> None:
    docs = [bson.encode({"_id": i, "pad": "x" * (i * 37 % 500)}) for i in range(300)]
    stream = b"".join(docs)
    for size in (1, 3, 4, 5, 777, len(stream)):
        blocks = [stream[i:i + size] for i in range(0, len(stream), size)]
        assert list(documents(blocks, "t.bson")) == docs
    with pytest.raises(Exception, match="truncated"):
        list(documents([stream[:-3]], "t.bson"))
    with pytest.raises(Exception, match="invalid BSON document length"):
        list(documents([b"\x01\x00\x00\x00" + stream], "t.bson"))


def test_object_writer_accepts_concurrent_puts(tmp_path: Path) -> None:
    """The engine calls BackupSink.put from --jobs threads; the real writer must cope."""
    check_concurrent_puts(tmp_path, {f"db/c{i}.bson": os.urandom(200_000 + i) for i in range(12)},
                          piece=10_000, data_key=os.urandom(32))


# -- failures ------------------------------------------------------------------------------------

def test_unreachable_host_fails_fast_with_database_exit_code(tmp_path: Path,
                                                             env: dict[str, str]) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = run("backup", "-t", f"mongodb://127.0.0.1:{port}/app", "-r", repo_url(tmp_path),
                 "--connect-timeout", "0.5", env=env, ok=False)
    assert result.exit_code == Exit.DATABASE, result.output
    assert "unreachable" in result.output and "Connection refused" in result.output
    assert time.monotonic() - started < 10
    engine = open_engine(f"mongodb://127.0.0.1:{port}/app",
                         ConnectionOptions(connect_timeout=0.3))
    with pytest.raises(HostUnreachable) as exc:
        engine.check("backup")
    assert exc.value.transient


def test_refused_login_is_authentication_failed_without_the_password(
        mongo_server: Any, mongo_db: Any, tmp_path: Path, env: dict[str, str]) -> None:
    """FerretDB (SQLite backend) answers any SCRAM attempt with code 18, as mongod does for a
    wrong password, so the real error path is exercised."""
    secret = "s3cr:t/p@ss"
    (tmp_path / "pw").write_text(secret + "\n")
    target = f"mongodb://bob@127.0.0.1:{mongo_server.port}/{mongo_db.name}?directConnection=true"
    result = run("check", "-t", target, "--password-file", str(tmp_path / "pw"), env=env,
                 ok=False)
    assert result.exit_code == Exit.DATABASE
    assert "authentication as 'bob' failed" in result.output and secret not in result.output
    in_uri = (f"mongodb://bob:{quote(secret, safe='')}@127.0.0.1:{mongo_server.port}/"
              f"{mongo_db.name}?directConnection=true")
    engine = MongoEngine.from_url(in_uri, ConnectionOptions(connect_timeout=2))
    assert secret not in repr(engine.target) and quote(secret, safe="") not in engine.target.uri
    with pytest.raises(AuthenticationFailed) as exc:
        engine.check("backup")
    assert secret not in str(exc.value) and quote(secret, safe="") not in str(exc.value)
    assert not exc.value.transient


@pytest.mark.parametrize(("error", "kind"), [
    (OperationFailure("Authentication failed.", 18), AuthenticationFailed),
    (OperationFailure("not authorized on app to execute command { find: \"x\" }", 13),
     PermissionDenied),
    (OperationFailure("ns does not exist", 26), DatabaseMissing),
    (OperationFailure("no such command: 'applyOps'", 59), UnsupportedError),
    (ServerSelectionTimeoutError("h:1: [Errno 111] Connection refused, Timeout: 1.0s, ..."),
     HostUnreachable),
    (ServerSelectionTimeoutError("h:1: timed out, Timeout: 1.0s"), ConnectTimeout),
    (AutoReconnect("connection closed"), HostUnreachable),
])
def test_driver_errors_are_classified(error: Exception, kind: type) -> None:
    target = MongoTarget.parse("mongodb://u:pw@h:1/app")
    classified = classify(error, target)  # type: ignore[arg-type]
    assert type(classified) is kind
    assert "pw" not in str(classified).replace("password", "")


@pytest.mark.parametrize(("uri", "problem"), [
    ("mongodb://h:1/", "names no database"),
    ("mongodb://h:1/app?bogusOption=1", "bogusoption"),
    ("mongodb://bob@h:1/app", "has no password"),
    ("mongodb+srv://h.example.com:27017/app", "without a port"),
    ("mongodb://bob:hunter2@h:1/app?tlsCAFile=/nonexistent/ca.pem", "not readable"),
    ("postgresql://h/app", "not a mongodb uri"),
])
def test_bad_uris_are_refused_before_connecting(uri: str, problem: str) -> None:
    with pytest.raises(ValueError) as exc:
        MongoTarget.parse(uri)
    assert problem in str(exc.value).lower()
    assert "hunter2" not in str(exc.value)


def test_password_from_options_wins_and_x509_needs_none() -> None:
    t = MongoTarget.parse("mongodb://bob:old@h:1/app?authSource=admin", "new")
    assert (t.username, t.password, t.uri) == ("bob", "new", "mongodb://h:1/app?authSource=admin")
    assert MongoTarget.parse("mongodb://CN%3Dbob@h/app?authMechanism=MONGODB-X509"
                             "&tls=true").password is None


def test_restore_killed_midway_leaves_existing_collections(
        mongo_server: Any, mongo_db: Any, other_db: Any, tmp_path: Path, env: dict[str, str]
) -> None:
    source = other_db()
    source.bulk.insert_many([{"_id": i, "pad": os.urandom(300)} for i in range(40_000)])
    source.small.insert_many([{"_id": i} for i in range(10)])
    repo = repo_url(tmp_path)
    run("backup", "-t", url(mongo_server, source.name), "-r", repo, "--name", "src", env=env)
    mongo_db.bulk.insert_many([{"_id": i, "existing": True} for i in range(500)])
    mongo_db.small.insert_one({"_id": "existing"})
    mongo_db.bulk.create_index("existing")
    existing = mh.snapshot(mongo_db)

    kill_cli_when(
        ["--log-level", "warning", "restore", "-r", repo, "--from", "src", "-b", "latest",
         "-t", url(mongo_server, mongo_db.name), "--yes", "--jobs", "1"], env,
        lambda: any(n.endswith("__safehold_restore") and mongo_db[n].estimated_document_count()
                    for n in mongo_db.list_collection_names()), timeout=60)
    assert mh.snapshot(mongo_db, skip=("bulk__safehold_restore", "small__safehold_restore")
                       ) == existing
    assert mh.indexes(mongo_db, "bulk")[1][0] == "existing_1"

    # a backup taken now skips the leftover, and the next restore clears it
    b = run_json("backup", "-t", url(mongo_server, mongo_db.name), "-r", repo, "--name",
                 "leftover", env=env)
    manifest = Repository(LocalStorage(tmp_path / "repo")).resolve("leftover", b["backup_id"])
    assert sorted(manifest.engine_meta["collections"]) == ["bulk", "small"]
    assert manifest.engine_meta["skipped"]
    run("restore", "-r", repo, "--from", "src", "-b", "latest", "-t",
        url(mongo_server, mongo_db.name), "--yes", env=env)
    assert mh.snapshot(mongo_db) == mh.snapshot(source)
