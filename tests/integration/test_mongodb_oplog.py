"""MongoDB oplog incrementals, differentials, the oplog streamer and point-in-time restore,
against a real FerretDB with its basic oplog (one server per test: the oplog is server-wide).

FerretDB logs inserts, updates (as ``$set`` of the whole document) and deletes; it does not log
collection create/drop and has no applyOps (docs/testing.md). What only a real replica set can
prove is in tests/integration/test_mongodb_oplog_replset.py (marked ``replset``).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bson.timestamp import Timestamp

from safehold.cli.errors import Exit
from tests.infra.ferretdb import FERRETDB_VERSION, FerretDB
from tests.infra.procs import serve, unavailable
from tests.integration.cli_helpers import run, run_json

DB = "app"


@pytest.fixture
def server() -> Iterator[FerretDB]:
    """FerretDB as replica set rs0 with a capped local.oplog.rs (which it then writes)."""
    fdb = FerretDB(repl_set_name="rs0")
    if not fdb.binary:
        unavailable(f"FerretDB {FERRETDB_VERSION}",
                    "binary not built (scripts/infra/30-ferretdb.sh)")
    for started in serve(fdb, f"FerretDB {FERRETDB_VERSION}"):
        client = started.client()
        client["local"].create_collection("oplog.rs", capped=True, size=64 << 20)
        client.close()
        yield started


@pytest.fixture
def client(server: FerretDB) -> Iterator[Any]:
    c = server.client(tz_aware=True)
    yield c
    c.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "safehold.yaml"
    cfg.write_text("{}\n")
    key = tmp_path / "key"
    key.write_text("a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=\n")
    return {"SAFEHOLD_CONFIG": str(cfg), "SAFEHOLD_KEY_FILE": str(key), "SAFEHOLD_KEY": "",
            "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_PASSWORD": ""}


def url(server: FerretDB, db: str) -> str:
    return f"mongodb://127.0.0.1:{server.port}/{db}?directConnection=true"


def state(client: Any, db: str) -> dict[str, list[Any]]:
    """Every collection of ``db`` with its documents, sorted by _id."""
    return {name: sorted(client[db][name].find(), key=lambda d: repr(d["_id"]))
            for name in sorted(client[db].list_collection_names())}


def backup(server: FerretDB, repo: str, env: dict[str, str], kind: str) -> dict[str, Any]:
    out: dict[str, Any] = run_json("backup", "-t", url(server, DB), "-r", repo, "--type", kind,
                                   env=env)
    return out


def restore(server: FerretDB, repo: str, into: str, env: dict[str, str], *args: str,
            ok: bool = True) -> Any:
    return run("restore", "-r", repo, "--from", DB, "-t", url(server, into), "-y", *args,
               env=env, ok=ok)


def mark(client: Any, marks: list[tuple[str, dict[str, list[Any]]]]) -> None:
    """A target time with >= 1 s to the writes either side (oplog times are whole seconds)."""
    time.sleep(1.2)
    marks.append((datetime.now(UTC).isoformat(), state(client, DB)))
    time.sleep(1.2)


def oplog_stream(server: FerretDB, repo: str, env: dict[str, str], *args: str
                 ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "safehold.cli", "oplog", "stream", "-t", url(server, DB),
         "-r", repo, "--name", DB, "--poll", "0.1", *args],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def segments(repo_dir: Path) -> list[tuple[str, str, str]]:
    """(name, start, end) of the archived oplog segments, in log order."""
    import json

    out = []
    for rec in sorted((repo_dir / DB / "_logs" / "oplog").glob("*/*/segment.json")):
        body = json.loads(rec.read_text())
        out.append((body["name"], body["start"]["oplog_ts"], body["end"]["oplog_ts"]))
    return out


def ts_key(text: str) -> tuple[int, int]:
    a, b = text.split(":")
    return int(a), int(b)


def test_point_in_time_restore_to_five_times(
        server: FerretDB, client: Any, tmp_path: Path, env: dict[str, str]) -> None:
    repo = (tmp_path / "repo").as_uri()
    t = client[DB].t
    marks: list[tuple[str, dict[str, list[Any]]]] = []
    t.insert_many([{"_id": i, "batch": "w0", "v": i} for i in range(1, 101)])
    client[DB].big.insert_many([{"_id": i, "pad": os.urandom(200)} for i in range(2000)])
    full = backup(server, repo, env, "full")
    assert full["end_position"]["oplog_ts"] and full["end_position"]["set"] == "rs0"
    checked = run_json("check", "-t", url(server, DB), env=env)
    assert "oplog of replica set 'rs0' is readable" in checked["notes"][0], checked
    mark(client, marks)  # 0: the full alone
    t.insert_many([{"_id": i, "batch": "w1", "v": i} for i in range(101, 111)])
    t.update_many({"_id": {"$lte": 5}}, {"$inc": {"v": 1000}})
    t.replace_one({"_id": 6}, {"only": "replaced"})  # fields dropped by a replacement...
    t.update_one({"_id": 7}, {"$unset": {"v": ""}})  # ...and by $unset stay dropped
    t.delete_one({"_id": 50})
    client["other"].x.insert_one({"_id": 1, "not": "replayed"})
    mark(client, marks)  # 1: inside the first incremental
    inc1 = backup(server, repo, env, "incremental")
    client[DB].n.insert_many([{"_id": f"k{i}"} for i in range(3)])  # a collection the full lacks
    t.delete_many({"batch": "w1", "_id": {"$gt": 105}})
    mark(client, marks)  # 2: inside the second incremental
    inc2 = backup(server, repo, env, "incremental")
    t.update_many({"_id": {"$gte": 90}}, {"$set": {"late": True}})
    mark(client, marks)  # 3: inside the differential
    diff = backup(server, repo, env, "differential")
    t.insert_one({"_id": 999, "batch": "after"})
    mark(client, marks)  # 4: only in the archive
    t.insert_one({"_id": 1000, "batch": "after mark 4"})  # the window ends at the last entry
    run("oplog", "stream", "-t", url(server, DB), "-r", repo, "--name", DB, "--once", env=env)
    assert inc1["parent_id"] == full["backup_id"] and inc2["parent_id"] == inc1["backup_id"]
    assert diff["parent_id"] == full["backup_id"]
    assert inc1["stored_bytes"] * 3 < full["stored_bytes"], (inc1, full)

    plan = run_json("restore", "-r", repo, "--from", DB, "-t", url(server, "nowhere"),
                    "--to-time", marks[2][0], "--dry-run", env=env)
    # inc2 ends at the newest oplog entry when it ran, before mark 2: it is part of the way
    assert [c["type"] for c in plan["chain"]] == ["full", "incremental", "incremental"]
    # the oplog from the full's replay point: the differential's reaches furthest in one piece
    assert [p["source"] for p in plan["logs"]] == [f"backup {diff['backup_id']}"]
    text = run("restore", "-r", repo, "--from", DB, "-t", url(server, "nowhere"),
               "--to-time", marks[2][0], "--dry-run", env=env).output
    end = plan["logs"][0]["end"]["oplog_ts"]
    assert f"  log          oplog.bson {full['end_position']['replay_from']}..{end}" in text, text
    assert "nowhere" not in client.list_database_names()  # --dry-run changed nothing
    for i, (when, expected) in enumerate(marks):
        into = f"p{i}_{uuid.uuid4().hex[:6]}"  # another name: namespaces are rewritten
        # what an interrupted restore left behind does not leak into the new collection
        client[into]["n__safehold_restore"].insert_one({"_id": "stale"})
        restore(server, repo, into, env, "--to-time", when)
        if "n" not in expected:  # the replay never touched n: its leftover stays (as ever)
            client[into].drop_collection("n__safehold_restore")
        assert state(client, into) == expected, f"restore to mark {i} ({when})"
        client.drop_database(into)
    # a restore of the chain's end (no time) replays the incrementals
    into = f"c_{uuid.uuid4().hex[:6]}"
    restore(server, repo, into, env, "-b", inc2["backup_id"])
    assert state(client, into) == marks[2][1]
    restore(server, repo, into, env, "-b", diff["backup_id"])  # full + differential
    assert state(client, into) == marks[3][1]
    assert client["other"].x.count_documents({}) == 1  # never replayed elsewhere
    early = restore(server, repo, "nowhere", env, "--to-time", "2020-01-01T00:00:00Z", ok=False)
    assert early.exit_code == Exit.USAGE and "recoverable window" in early.output, early.output
    late = restore(server, repo, "nowhere", env, "--to-time", "2099-01-01T00:00:00Z", ok=False)
    assert late.exit_code == Exit.USAGE and "recoverable window" in late.output, late.output
    assert "nowhere" not in client.list_database_names()
    listed = run("list", "-r", repo, "-t", DB, env=env).output
    assert f"{DB}: recoverable window (point-in-time) " in listed, listed


def wait_for(what: str, check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_streamer_killed_mid_batch_resumes_without_a_gap(
        server: FerretDB, client: Any, tmp_path: Path, env: dict[str, str]) -> None:
    repo_dir = tmp_path / "repo"
    repo = repo_dir.as_uri()
    t = client[DB].t
    t.insert_one({"_id": 0})
    backup(server, repo, env, "full")
    proc = oplog_stream(server, repo, env, "--max-entries", "3")
    try:
        for i in range(1, 41):  # one by one: many small batches to be cut
            t.insert_one({"_id": i, "v": i})
        wait_for("a first segment", lambda: segments(repo_dir))
    finally:
        proc.kill()  # SIGKILL: whatever was gathered and not archived is lost here
        proc.wait()
    t.update_many({}, {"$set": {"while": "stopped"}})  # written while no streamer runs
    proc = oplog_stream(server, repo, env)
    try:
        t.insert_one({"_id": 1000})
        marks: list[tuple[str, dict[str, list[Any]]]] = []
        mark(client, marks)
        t.insert_one({"_id": 1001})  # the window ends at the newest archived entry
        wait_for("the last write archived", lambda: any(
            ts_key(end) >= ts_key(last_ts(client)) for _, _, end in segments(repo_dir)))
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        proc.kill()
    assert proc.returncode == int(Exit.TERMINATED), out
    segs = segments(repo_dir)
    for (_, _, end), (name, start, _) in itertools.pairwise(segs):
        assert start == end, f"gap in the archive before {name}: {segs}"
    into = f"a_{uuid.uuid4().hex[:6]}"
    restore(server, repo, into, env, "--to-time", marks[0][0])
    assert state(client, into) == marks[0][1]


def last_ts(client: Any) -> str:
    ts = client["local"]["oplog.rs"].find_one({}, sort=[("$natural", -1)])["ts"]
    return f"{ts.time}:{ts.inc}"


def test_wrapped_oplog_is_reported_and_refused(
        server: FerretDB, client: Any, tmp_path: Path, env: dict[str, str]) -> None:
    repo_dir = tmp_path / "repo"
    repo = repo_dir.as_uri()
    t = client[DB].t
    t.insert_many([{"_id": i} for i in range(10)])
    full = backup(server, repo, env, "full")
    marks: list[tuple[str, dict[str, list[Any]]]] = []
    mark(client, marks)
    t.insert_many([{"_id": i} for i in range(10, 20)])
    # the oplog wraps: its oldest entries (up to some after the full) are overwritten
    cut = client["local"]["oplog.rs"].find({}, sort=[("$natural", -1)]).skip(3).limit(1)[0]["ts"]
    client["local"]["oplog.rs"].delete_many({"ts": {"$lte": cut}})
    refused = run("backup", "-t", url(server, DB), "-r", repo, "--type", "incremental",
                  env=env, ok=False)
    assert refused.exit_code == Exit.DATABASE, refused.output
    assert "oplog wrapped" in refused.output and "--type full" in refused.output
    assert full["end_position"]["replay_from"] in refused.output  # names where the gap begins
    mark(client, marks)
    t.insert_one({"_id": 100})  # the window ends at the newest archived entry
    stream = run("oplog", "stream", "-t", url(server, DB), "-r", repo, "--name", DB, "--once",
                 env=env)
    assert "GAP in the oplog archive" in stream.output, stream.output
    after = restore(server, repo, "nowhere", env, "--to-time", marks[1][0], ok=False)
    assert after.exit_code == Exit.CORRUPT and "gap in the oplog" in after.output, after.output
    assert "nowhere" not in client.list_database_names()
    # the full's own time needs no oplog: it restores although the gap follows it (mark 0,
    # later, is inside the lost stretch: nothing proves it held no changes)
    into = f"b_{uuid.uuid4().hex[:6]}"
    restore(server, repo, into, env, "--to-time", full["end_position"]["time"])
    assert state(client, into) == marks[0][1]


def test_unreplayable_entries_and_missing_oplogs_are_refused_before_any_change(
        server: FerretDB, client: Any, tmp_path: Path, env: dict[str, str]) -> None:
    repo = (tmp_path / "repo").as_uri()
    t = client[DB].t
    t.insert_many([{"_id": i} for i in range(5)])
    backup(server, repo, env, "full")
    newest = client["local"]["oplog.rs"].find_one({}, sort=[("$natural", -1)])["ts"]
    client["local"]["oplog.rs"].insert_one({  # what a real server logs for a rename
        "op": "c", "ns": f"{DB}.$cmd", "ts": Timestamp(newest.time, newest.inc + 1), "v": 2,
        "o": {"renameCollection": f"{DB}.t", "to": "other.t"}})
    inc = backup(server, repo, env, "incremental")
    client["dest"].keep.insert_one({"_id": "untouched"})
    refused = restore(server, repo, "dest", env, "--to-time", inc["end_position"]["time"],
                      ok=False)
    assert refused.exit_code == Exit.UNSUPPORTED, refused.output
    assert "'renameCollection' cannot be rewritten" in refused.output
    assert state(client, "dest") == {"keep": [{"_id": "untouched"}]}
    assert "t__safehold_restore" not in client["dest"].list_collection_names()


def test_a_server_without_an_oplog_refuses_incrementals(tmp_path: Path,
                                                         env: dict[str, str]) -> None:
    fdb = FerretDB()  # standalone: no replica set, no oplog
    if not fdb.binary:
        unavailable(f"FerretDB {FERRETDB_VERSION}", "binary not built")
    for server in serve(fdb, f"FerretDB {FERRETDB_VERSION}"):
        c = server.client()
        c[DB].t.insert_one({"_id": 1})
        c.close()
        repo = (tmp_path / "repo").as_uri()
        full = backup(server, repo, env, "full")
        assert not full.get("end_position")
        refused = run("backup", "-t", url(server, DB), "-r", repo, "--type", "incremental",
                      env=env, ok=False)
        assert refused.exit_code == Exit.CORRUPT, refused.output
        assert "recorded no oplog position" in refused.output
        checked = run_json("check", "-t", url(server, DB), env=env)
        assert checked["ok"] and "only full backups, no point in time: the server is not a" \
            " replica set member" in checked["notes"][0], checked
        stream = run("oplog", "stream", "-t", url(server, DB), "-r", repo, "--once", env=env,
                     ok=False)
        assert stream.exit_code == Exit.DATABASE and "not a replica set member" in stream.output
