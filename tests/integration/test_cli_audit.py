"""The audit log through the real CLI: events of real SQLite backups, restores, key rotations
and prunes on local and S3 repositories; a tampered record, a truncated file, a rewritten
history and concurrent writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from click.testing import CliRunner

from safehold.cli.errors import Exit
from safehold.cli.main import cli
from safehold.codecs import crypto
from safehold.pipeline.logarchive import LogArchive
from safehold.pipeline.walarchive import ArchiveSink
from safehold.repository.audit import record_hash
from safehold.repository.repo import Repository
from safehold.storage.local import LocalStorage
from tests.infra.faults import FaultProxy
from tests.infra.objectstores import MotoS3
from tests.infra.postgres import Postgres
from tests.integration.cli_helpers import make_db, run, run_json
from tests.unit.test_wal_archive import segment as wal_segment


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_NO_ENCRYPTION": "",
            "SAFEHOLD_AUDIT__FILE": str(tmp_path / "audit.jsonl"),
            "SAFEHOLD_AUDIT__REPOSITORY": ""}


class Keyed(NamedTuple):
    db: Path  # a SQLite database of 100 rows
    repo_dir: Path
    repo: str
    key: Path
    env: dict[str, str]  # env with the key


@pytest.fixture
def keyed_repo(tmp_path: Path, env: dict[str, str]) -> Keyed:
    """A database, a repository still to be made, and a generated key in the environment."""
    db, repo_dir, key = tmp_path / "app.db", tmp_path / "repo", tmp_path / "k"
    make_db(db, rows=100)
    run("keys", "generate", "--out", str(key), env=env)
    return Keyed(db, repo_dir, f"file://{repo_dir}", key, {**env, "SAFEHOLD_KEY_FILE": str(key)})


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def verify(env: dict[str, str], *args: str) -> Any:
    return run("audit", "verify", *args, env=env, ok=False)


def scenario(tmp_path: Path, env: dict[str, str], repo: str) -> dict[str, Any]:
    """Key, backups, restore, rotation, prune: the heads the last result printed."""
    db = tmp_path / "app.db"
    make_db(db, rows=100)
    old, new = tmp_path / "k1", tmp_path / "k2"
    run("keys", "generate", "--out", str(old), env=env)
    run("keys", "generate", "--out", str(new), env=env)
    keyed = {**env, "SAFEHOLD_KEY_FILE": str(old)}
    for _ in range(2):
        run("backup", "-t", f"sqlite://{db}", "-r", repo, env=keyed)
    run("restore", "-r", repo, "-b", "latest", "-t", f"sqlite://{tmp_path}/copy.db", "--yes",
        env=keyed)
    run("keys", "rotate", "-r", repo, "--new-key-file", str(new), env=keyed)
    return run_json("prune", "-r", repo, "-t", "app", "--keep-last", "1",
                    env={**env, "SAFEHOLD_KEY_FILE": str(new)})["audit_head"]


def test_events_reach_both_copies_and_verify(tmp_path: Path, env: dict[str, str]) -> None:
    repo = tmp_path / "repo"
    heads = scenario(tmp_path, env, f"file://{repo}")
    local = records(tmp_path / "audit.jsonl")
    actions = [r["action"] for r in local]
    # the key is recorded when it unwraps the data key, before the restore completes
    assert actions == ["key.generated", "key.generated", "key.used", "restore", "key.rotated",
                       "key.retired", "delete", "prune"]
    restore = local[3]
    assert restore["outcome"] == "success" and restore["what"]["target"].endswith("copy.db")
    assert set(restore["who"]) >= {"user", "host", "pid"} and restore["time"].endswith("Z")
    assert restore["where"]["repository"] == f"file://{repo}"
    assert local[2]["what"] == {"key_id": restore["what"]["key_ids"][0], "purpose": "restore",
                                "target": "app", "backup_id": restore["what"]["backup_id"]}
    assert heads["local"] == local[-1]["hash"]
    # the repository holds the events that concern it, chained on their own
    stored = sorted((repo / "_audit").glob("0*.json"))
    assert [json.loads(p.read_text())["action"] for p in stored] == actions[2:]
    assert heads["repository"] == json.loads(stored[-1].read_text())["hash"]
    # `_audit` is no target
    assert run_json("list", "-r", f"file://{repo}", env=env)["backups"]
    assert "_audit" not in run("list", "-r", f"file://{repo}", env=env).stdout
    ok = json.loads(verify(env, "--head", heads["local"], "-o", "json").stdout)
    assert ok["ok"] and ok["records"] == 8 and ok["expected_head_found"]
    ok = json.loads(verify(env, "-r", f"file://{repo}", "--head", heads["repository"],
                           "-o", "json").stdout)
    assert ok["ok"] and ok["records"] == 6


def test_tampered_truncated_and_rewritten_histories_are_detected(
        tmp_path: Path, env: dict[str, str]) -> None:
    repo = tmp_path / "repo"
    heads = scenario(tmp_path, env, f"file://{repo}")
    path = tmp_path / "audit.jsonl"
    pristine = path.read_text()
    lines = pristine.splitlines(keepends=True)

    # an edited record: its hash no longer matches (line 3: the restore)
    edited = json.loads(lines[2])
    edited["what"]["target"] = "sqlite:///elsewhere.db"
    path.write_text("".join([*lines[:2], json.dumps(edited) + "\n", *lines[3:]]))
    bad = verify(env)
    assert bad.exit_code == Exit.CORRUPT and f"{path}:3: its content does not match" in \
        bad.output

    # a record removed from the middle
    path.write_text("".join([*lines[:2], *lines[3:]]))
    bad = verify(env)
    assert bad.exit_code == Exit.CORRUPT and f"{path}:3" in bad.output and "prev" in bad.output

    # cut short at a record boundary: consistent in itself, but the later head is missing
    path.write_text("".join(lines[:-2]))
    assert verify(env).exit_code == 0
    bad = verify(env, "--head", heads["local"])
    assert bad.exit_code == Exit.CORRUPT and "cut short or rewritten" in bad.output

    # cut in the middle of a line
    path.write_text(pristine[:-40])
    bad = verify(env)
    assert bad.exit_code == Exit.CORRUPT and f"{path}:8: not a JSON record" in bad.output

    # rewritten wholesale with every hash recomputed: only the later head tells
    prev = "0" * 64
    forged = []
    for line in lines:
        record = json.loads(line)
        if record["action"] == "delete":
            record["what"]["backup_id"] = "20000101T000000.000000Z"
        record["prev"] = prev
        record["hash"] = record_hash(record)
        prev = record["hash"]
        forged.append(json.dumps(record) + "\n")
    path.write_text("".join(forged))
    assert verify(env).exit_code == 0
    assert verify(env, "--head", heads["local"]).exit_code == Exit.CORRUPT

    # the whole file removed
    path.unlink()
    assert verify(env).exit_code == Exit.NOT_FOUND
    assert verify(env, "--head", heads["local"]).exit_code == Exit.CORRUPT

    # the repository's copy: a record deleted, the newest ones removed
    stored = sorted((repo / "_audit").glob("0*.json"))
    stored[1].unlink()
    bad = verify(env, "-r", f"file://{repo}")
    assert bad.exit_code == Exit.CORRUPT and "sequence number" in bad.output
    path.write_text(pristine)
    for p in stored[2:]:
        p.unlink()
    stored[1].write_text(json.dumps(json.loads(pristine.splitlines()[3])))  # a local record
    bad = verify(env, "-r", f"file://{repo}", "--head", heads["repository"])
    assert bad.exit_code == Exit.CORRUPT and "cut short" in bad.output


def test_refused_tamper_and_wrong_keys_are_audited(tmp_path: Path, env: dict[str, str]) -> None:
    db = tmp_path / "app.db"
    make_db(db, rows=100)
    repo = tmp_path / "repo"
    key, other = tmp_path / "k", tmp_path / "other"
    run("keys", "generate", "--out", str(key), env=env)
    run("keys", "generate", "--out", str(other), env=env)
    backup_id = run_json("backup", "-t", f"sqlite://{db}", "-r", f"file://{repo}",
                         env={**env, "SAFEHOLD_KEY_FILE": str(key)})["backup_id"]
    wrong = run("restore", "-r", f"file://{repo}", "-b", "latest", "-t",
                f"sqlite://{tmp_path}/copy.db", "--yes",
                env={**env, "SAFEHOLD_KEY_FILE": str(other)}, ok=False)
    assert wrong.exit_code == Exit.KEY
    manifest = repo / "app" / backup_id / "manifest.json"
    manifest.write_bytes(
        manifest.read_bytes().replace(b'"server_version": "', b'"server_version": "9', 1))
    tampered = run("restore", "-r", f"file://{repo}", "-b", backup_id, "-t",
                   f"sqlite://{tmp_path}/copy.db", "--yes",
                   env={**env, "SAFEHOLD_KEY_FILE": str(key)}, ok=False)
    assert tampered.exit_code == Exit.CORRUPT
    last = records(tmp_path / "audit.jsonl")[-2:]
    assert [(r["action"], r["outcome"]) for r in last] == [("auth.failure", "refused"),
                                                            ("tamper.refused", "refused")]
    assert last[0]["what"]["error_class"] and last[0]["what"]["command"] == "restore"
    in_repo = [json.loads(p.read_text()) for p in sorted((repo / "_audit").glob("0*.json"))]
    assert [r["action"] for r in in_repo] == ["auth.failure", "tamper.refused"]
    assert verify(env).exit_code == 0


def test_every_read_that_unwraps_a_data_key_records_key_used(tmp_path: Path,
                                                             env: dict[str, str],
                                                             keyed_repo: Keyed) -> None:
    """`cat`, `verify` and `wal fetch` decrypt: each run records `key.used` once per key, however
    many backups, objects and log segments it opened, in both copies."""
    db, repo_dir, repo, key, keyed = keyed_repo
    ids = [run_json("backup", "-t", f"sqlite://{db}", "-r", repo, env=keyed)["backup_id"]
           for _ in range(2)]
    kek = crypto.load_key_file(key)
    sink = ArchiveSink(LogArchive(Repository(LocalStorage(repo_dir)), "pg", kek=kek))
    for n in (3, 4):  # WAL segments as `wal stream` stores them
        sink.put(wal_segment(n))
    path = tmp_path / "audit.jsonl"
    before = len(records(path))
    assert [r["action"] for r in records(path)] == ["key.generated"]  # backups use no key

    obj = run_json("show", "-r", repo, "-t", "app", "-b", ids[0], env=keyed)["objects"][0]
    assert len(records(path)) == before  # show reads manifests only
    cat = CliRunner().invoke(cli, ["cat", "-r", repo, "-t", "app", "-b", ids[0], obj["name"]],
                             env=keyed)
    assert cat.exit_code == 0 and len(cat.stdout_bytes) == obj["raw_size"]
    verified = run_json("verify", "-r", repo, env=keyed)
    assert verified["ok"] and verified["backups"] == 2 and verified["checked"] > 4
    dest = tmp_path / "RECOVERYXLOG"
    run("wal", "fetch", "-r", repo, "--name", "pg", wal_segment(4).name, str(dest), env=keyed)
    assert dest.read_bytes() == wal_segment(4).data

    new = records(path)[before:]
    assert [(r["action"], r["outcome"], r["what"]["purpose"]) for r in new] == [
        ("key.used", "success", "cat"), ("key.used", "success", "verify"),
        ("key.used", "success", "wal fetch")]
    assert {r["what"]["key_id"] for r in new} == {kek.key_id}
    assert new[0]["what"]["backup_id"] == ids[0] and new[0]["what"]["target"] == "app"
    assert new[1]["what"]["backup_id"] == ids[0]  # the first data key the verify unwrapped
    assert new[2]["what"] == {"key_id": kek.key_id, "purpose": "wal fetch", "target": "pg",
                              "segment": f"pg/wal/00000001/{wal_segment(4).name}"}
    for r in new:
        assert set(r["who"]) >= {"user", "host", "pid"} and r["time"].endswith("Z")
        assert r["where"]["repository"] == repo and r["where"]["command"]
    assert verified["audit_head"]["local"] == new[1]["hash"]
    stored = [json.loads(p.read_text()) for p in sorted((repo_dir / "_audit").glob("0*.json"))]
    assert [(r["action"], r["what"]["purpose"]) for r in stored] == [
        ("key.used", "cat"), ("key.used", "verify"), ("key.used", "wal fetch")]
    assert verified["audit_head"]["repository"] == stored[1]["hash"]

    # a failed unwrap is no use: a wrong key is an auth.failure, and no key.used
    other = tmp_path / "other"
    run("keys", "generate", "--out", str(other), env=env)
    wrong = run("verify", "-r", repo, env={**env, "SAFEHOLD_KEY_FILE": str(other)}, ok=False)
    assert wrong.exit_code != 0
    assert "key.used" not in [r["action"] for r in records(path)[before + 4:]]


def test_every_result_of_a_command_that_opens_a_repository_carries_the_audit_head(
        tmp_path: Path, env: dict[str, str], keyed_repo: Keyed) -> None:
    """A plain backup, list, show, stats, verify, cat, prune and an error print the latest
    hashes (JSON: `audit_head`; text: stderr), whether or not they recorded an event; a history
    cut short afterwards is detected against any of them."""
    db, repo_dir, repo, _, keyed = keyed_repo
    backup_id = run_json("backup", "-t", f"sqlite://{db}", "-r", repo, env=keyed)["backup_id"]
    run("verify", "-r", repo, env=keyed)  # key.used: the repository's log has a record now

    def heads() -> dict[str, str]:
        newest = sorted((repo_dir / "_audit").glob("0*.json"))[-1]
        return {"local": records(tmp_path / "audit.jsonl")[-1]["hash"],
                "repository": json.loads(newest.read_text())["hash"]}

    def lines() -> str:
        return "".join(f"audit head ({k}): {v}\n" for k, v in sorted(heads().items()))

    before = heads()
    plain = run("backup", "-t", f"sqlite://{db}", "-r", repo, env=keyed)  # records nothing
    assert heads() == before and plain.stderr.endswith(lines()), plain.stderr
    listed = run_json("list", "-r", repo, env=env)
    assert listed["audit_head"] == before and len(listed["backups"]) == 2
    for args in (["list"], ["show", "-t", "app"], ["stats"], ["verify"],
                 ["cat", "-t", "app", "-b", backup_id, "pagemap"],
                 ["prune", "-t", "app", "--keep-last", "5"]):
        result = run(*args, "-r", repo, env=keyed)
        assert result.stderr.endswith(lines()), (args, result.stderr)
        if args[0] != "cat":  # stdout is the object
            doc = json.loads(run(*args, "-r", repo, "-o", "json", env=keyed).stdout)
            assert doc["audit_head"] == heads(), args
    error = run("show", "-r", repo, "-t", "app", "-b", "20000101T000000.000000Z", "-o", "json",
                env=env, ok=False)
    assert error.exit_code == Exit.NOT_FOUND
    last = json.loads(error.stdout)["audit_head"]
    assert last == heads()
    assert run("show", "-r", repo, "-t", "nosuch", env=env, ok=False).stderr.endswith(lines())
    assert "audit head" not in run("config", "show", env=env).stderr  # no repository

    # the repository's newest records removed: the head the last (failed) run printed tells
    for path in sorted((repo_dir / "_audit").glob("0*.json"))[1:]:
        path.unlink()
    assert verify(env, "-r", repo, "--head", listed["audit_head"]["repository"]).exit_code == 0
    bad = verify(env, "-r", repo, "--head", last["repository"])
    assert bad.exit_code == Exit.CORRUPT and "cut short" in bad.output


def test_an_audit_log_the_run_cannot_use_never_fails_it(tmp_path: Path,
                                                        env: dict[str, str]) -> None:
    """A restore_command runs as the database server's OS user, which may not read or write
    the audit file: the run logs that and goes on (here the file is a directory)."""
    db, repo = tmp_path / "app.db", f"file://{tmp_path}/repo"
    make_db(db, rows=50)
    key = tmp_path / "k"
    run("keys", "generate", "--out", str(key), env=env)
    unusable = {**env, "SAFEHOLD_KEY_FILE": str(key), "SAFEHOLD_AUDIT__FILE": str(tmp_path)}
    run("backup", "-t", f"sqlite://{db}", "-r", repo, env=unusable)
    verified = run("verify", "-r", repo, env=unusable)  # key.used: local append fails
    assert "could not append key.used to the audit log" in verified.stderr
    assert "audit head (repository)" in verified.stderr
    assert "audit head (local)" not in verified.stderr
    assert run_json("list", "-r", repo, env=unusable)["audit_head"]["local"] is None


def test_a_database_that_refuses_the_password_is_an_auth_failure(
        pg18: Postgres, tmp_path: Path, env: dict[str, str]) -> None:
    """A real PostgreSQL refusing a wrong password: exit 6, and `auth.failure` in the audit log
    naming the command and the server's refusal (never the password)."""
    url = f"postgresql://{pg18.user}@{pg18.host}:{pg18.port}/postgres"
    wrong = {**env, "SAFEHOLD_PASSWORD": "not-the-password", "SAFEHOLD_NO_ENCRYPTION": "1"}
    refused = run("backup", "-t", url, "-r", f"file://{tmp_path}/repo", env=wrong, ok=False)
    assert refused.exit_code == Exit.DATABASE, refused.output
    [last] = records(tmp_path / "audit.jsonl")
    assert (last["action"], last["outcome"]) == ("auth.failure", "refused")
    assert last["what"]["command"] == "backup" and last["what"]["error_class"]
    assert "password authentication failed" in last["what"]["error"]
    assert "not-the-password" not in json.dumps(last)
    # the right password is no auth failure
    right = {**wrong, "SAFEHOLD_PASSWORD": pg18.password}
    run("backup", "-t", url, "-r", f"file://{tmp_path}/repo", env=right)
    assert [r["action"] for r in records(tmp_path / "audit.jsonl")] == ["auth.failure"]


ACCESS_DENIED = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                 b"<Message>Access Denied</Message></Error>")


def test_storage_that_denies_access_is_an_auth_failure(
        s3_server: MotoS3, s3_bucket: str, tmp_path: Path, env: dict[str, str]) -> None:
    """S3 answering 403 AccessDenied (moto behind a fault proxy that denies the repository's
    objects, not its audit log): exit 7, the fix named, and `auth.failure` in both copies."""
    db = tmp_path / "app.db"
    make_db(db, rows=50)
    with FaultProxy(s3_server.endpoint) as proxy:
        repo = f"s3://{s3_bucket}/repo?endpoint={proxy.endpoint}"
        s3 = {**env, **{k: v for k, v in s3_server.env().items() if k != "AWS_ENDPOINT_URL"},
              "SAFEHOLD_NO_ENCRYPTION": "1"}
        run("backup", "-t", f"sqlite://{db}", "-r", repo, env=s3)
        proxy.fail(nth=1, status=403, body=ACCESS_DENIED, times=1000,
                   when=lambda r: "_audit" not in r.target)
        denied = run("list", "-r", repo, env=s3, ok=False)
        assert denied.exit_code == Exit.STORAGE, denied.output
        assert "access denied (403): check the credentials and the bucket policy" in denied.output
        assert proxy.faults() and {r.fault for r in proxy.faults()} == {"503"}
        proxy.clear()
        [local] = records(tmp_path / "audit.jsonl")
        assert (local["action"], local["outcome"]) == ("auth.failure", "refused")
        assert local["what"]["error_class"] == "StorageAuthError"
        assert local["what"]["command"] == "list"
        stored = json.loads(run("audit", "verify", "-r", repo, "-o", "json", env=s3).stdout)
        assert stored["ok"] and stored["records"] == 1 and stored["head"] == local["hash"]
        # a storage failure that is no refusal (a 503 retried to the end) is not audited
        proxy.fail(nth=1, status=503, times=1000, when=lambda r: "_audit" not in r.target)
        busy = run("list", "-r", repo, env={**s3, "AWS_MAX_ATTEMPTS": "1"}, ok=False)
        assert busy.exit_code == Exit.STORAGE
        assert len(records(tmp_path / "audit.jsonl")) == 1


WRITER = """
import sys
from pathlib import Path
from safehold.cli.audit import append_local, event
from safehold.repository.audit import append_to_repository
from safehold.storage.base import open_storage
path, url, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
storage = open_storage(url)
for i in range(n):
    body = event("test.concurrent", "success", index=i)
    append_local(path, body)
    append_to_repository(storage, body)
"""


@pytest.mark.parametrize("store", ["local", "s3"])
def test_concurrent_writers_never_fork_the_chain(tmp_path: Path, env: dict[str, str],
                                                 store: str, request: pytest.FixtureRequest
                                                 ) -> None:
    if store == "s3":
        server: MotoS3 = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        url = f"s3://{bucket}/repo?endpoint={server.endpoint}"
        child_env = {**os.environ, **{k: v for k, v in server.env().items()
                                      if k != "AWS_ENDPOINT_URL"}}
    else:
        url = f"file://{tmp_path}/repo"
        child_env = dict(os.environ)
    path = tmp_path / "audit.jsonl"
    writers, each = 4, 10
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), url, str(each)],
                              env=child_env, stderr=subprocess.PIPE, text=True)
             for _ in range(writers)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    local = json.loads(verify(env, "--file", str(path), "-o", "json").stdout)
    assert local["ok"] and local["records"] == writers * each, local
    stored = json.loads(run("audit", "verify", "-r", url, "-o", "json",
                            env={**env, **{k: v for k, v in child_env.items()
                                           if k.startswith("AWS_")}}, ok=False).stdout)
    assert stored["ok"] and stored["records"] == writers * each, stored


def test_operator_jobs_audit_into_the_repository(tmp_path: Path) -> None:
    """`run-task` (the operator's Jobs): re-wrap, restore and delete reach the repository's
    audit log, and each result carries the head."""
    from tests.integration.test_run_task import Runner, key_dir, local_backup

    runner = Runner(tmp_path, {})
    db, repo = tmp_path / "app.db", tmp_path / "repo"
    make_db(db, rows=100)
    keys = key_dir(tmp_path / "keys", "k1")
    first = local_backup(runner, repo, db, "full", keys)
    assert first.audit_head is None  # a backup is no audit event
    key_dir(keys, "k2", active="k2")
    rotated, _ = runner({"kind": "rewrap", "repository": {"url": repo.as_uri()},
                         "encryption": {"mode": "keys", "keyDir": str(keys)}})
    restored, _ = runner({"kind": "restore", "source": "app", "backupId": first.backup_id,
                          "repository": {"url": repo.as_uri()},
                          "database": {"engine": "sqlite", "url": f"sqlite://{tmp_path}/o.db"},
                          "encryption": {"mode": "keys", "keyDir": str(keys)}})
    second = local_backup(runner, repo, db, "full", keys)
    deleted, _ = runner({"kind": "delete", "target": "app", "repository": {"url": repo.as_uri()},
                         "backupIds": [first.backup_id]})
    verified, _ = runner({"kind": "verify", "target": "app", "repository": {"url": repo.as_uri()},
                          "encryption": {"mode": "keys", "keyDir": str(keys)}})
    stored = [json.loads(p.read_text()) for p in sorted((repo / "_audit").glob("0*.json"))]
    assert [(r["action"], r["what"].get("backup_id")) for r in stored] == [
        ("key.rotated", None), ("key.retired", None), ("restore", first.backup_id),
        ("key.used", first.backup_id), ("delete", first.backup_id),
        ("key.used", second.backup_id)]
    assert stored[3]["what"]["key_id"] == restored.key_id and second.ok
    assert stored[5]["what"]["purpose"] == "run-task verify" and verified.ok
    assert rotated.audit_head == {"repository": stored[1]["hash"]}
    assert restored.audit_head == {"repository": stored[3]["hash"]}
    assert deleted.audit_head == {"repository": stored[4]["hash"]}
    assert verified.audit_head == {"repository": stored[5]["hash"]}
    env = {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml")}
    (tmp_path / "safehold.yaml").write_text("{}\n")
    assert verify(env, "-r", repo.as_uri(), "--head", stored[5]["hash"]).exit_code == 0
