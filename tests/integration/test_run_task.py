"""`safehold run-task`, the runner Jobs' entry point, run for real as a child process.

Each test hands the runner a task as a Job would (JSON in SAFEHOLD_TASK, secrets by reference:
an env variable, a mounted key directory) and reads the result from the termination-message
file: SQLite and PostgreSQL backups and restores into the S3 emulator and a local repository,
checks, plans, verify, delete (refused while a backup depends on it), key rotation, bad tasks
and SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safehold.api.errors import Exit
from safehold.api.result import TERMINATION_MESSAGE_LIMIT, TaskResult
from safehold.codecs import crypto
from tests.infra.objectstores import MotoS3
from tests.infra.postgres import PASSWORD, Postgres
from tests.integration import pg_data
from tests.integration.cli_helpers import dump, make_db
from tests.integration.stage_helpers import check_figures, pg_streams


class Runner:
    """Runs `safehold run-task` like a Job: task in the environment, result in a file."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp = tmp_path
        (tmp_path / "safehold.yaml").write_text("{}\n")
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("SAFEHOLD_", "AWS_", "PG"))}
        self.env = {**keep, "SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), **env}
        self.runs = 0

    def start(self, task: dict[str, Any], **env: str) -> tuple[subprocess.Popen[str], Path]:
        self.runs += 1
        result = self.tmp / f"result-{self.runs}.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "safehold.cli", "run-task", "--result-file", str(result)],
            env={**self.env, "SAFEHOLD_TASK": json.dumps(task), **env}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return proc, result

    def __call__(self, task: dict[str, Any], *, code: int = 0,
                 **env: str) -> tuple[TaskResult, str]:
        """Run ``task``; its result (parsed from the file) and stderr. Asserts the exit code."""
        proc, result = self.start(task, **env)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}:\n{err}"
        text = result.read_text()
        assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
        parsed = TaskResult.from_termination_message(text)
        assert parsed.exit_code == code
        return parsed, err


def key_dir(path: Path, *names: str, active: str | None = None) -> Path:
    """A directory laid out like a mounted key Secret (one file per key, raw bytes)."""
    path.mkdir(exist_ok=True)
    for name in names:
        (path / name).write_bytes(crypto.generate_key())
    if active:
        (path / "active").write_text(active)
    return path


def key_id(path: Path) -> str:
    return crypto.load_key_file(path).key_id


@pytest.fixture
def s3_repo(s3_server: MotoS3, s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/backups?endpoint={s3_server.endpoint}"


@pytest.fixture
def s3_runner(tmp_path: Path, s3_server: MotoS3) -> Runner:
    creds = {k: v for k, v in s3_server.env().items() if k != "AWS_ENDPOINT_URL"}
    return Runner(tmp_path, creds)  # as envFrom of the credentials Secret


# --------------------------------------------------------------------------- SQLite on S3


def test_sqlite_backup_chain_and_restore_on_s3(tmp_path: Path, s3_runner: Runner,
                                               s3_repo: str) -> None:
    db = tmp_path / "app.db"
    make_db(db, rows=3000)
    keys = key_dir(tmp_path / "keys", "old", "new", active="new")
    encryption = {"mode": "keys", "keyDir": str(keys)}
    backup = {"kind": "backup", "target": "shop.app", "repository": {"url": s3_repo},
              "database": {"engine": "sqlite", "url": f"sqlite://{db}"},
              "encryption": encryption, "backupId": "20261202T120000.000000Z"}
    full, _ = s3_runner(backup)
    assert (full.kind, full.phase, full.type) == ("backup", "Completed", "full")
    assert full.backup_id == full.chain_id == "20261202T120000.000000Z"
    assert full.chain == [full.backup_id] and full.parent_id is None
    assert full.raw_bytes and full.stored_bytes and full.compression_ratio
    assert full.raw_bytes > full.stored_bytes and full.throughput_bytes_per_second
    assert full.key_id == key_id(keys / "new") and full.encryption == "aes-256-gcm"
    assert full.location is not None and full.location.endswith(
        "/shop.app/20261202T120000.000000Z") and full.location.startswith("s3://")
    assert set(full.stage_seconds) >= {"open", "backup"} and full.objects
    assert full.started_at is not None and full.finished_at is not None

    # a retried Job after the backup completed reports it instead of failing
    again, _ = s3_runner(backup)
    assert again.backup_id == full.backup_id and again.stored_bytes == full.stored_bytes
    assert any("already complete" in n for n in again.notes)
    # with the stage timings the first run measured, read back from the manifest
    assert full.pipeline is not None and full.pipeline.bottleneck is not None
    assert again.pipeline is not None and again.pipeline.bottleneck == full.pipeline.bottleneck
    assert again.pipeline.stage_seconds == pytest.approx(full.pipeline.stage_seconds, abs=1e-3)

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE t1 SET name = 'changed' WHERE id < 100")
    incr, _ = s3_runner({**backup, "type": "incremental",
                         "backupId": "20261202T130000.000000Z"})
    assert (incr.type, incr.parent_id, incr.chain_id) == ("incremental", full.backup_id,
                                                          full.backup_id)
    assert incr.chain == [full.backup_id, incr.backup_id]
    assert incr.stored_bytes is not None and incr.stored_bytes < full.stored_bytes

    out = tmp_path / "restored.db"
    restore = {"kind": "restore", "source": "shop.app", "repository": {"url": s3_repo},
               "database": {"engine": "sqlite", "url": f"sqlite://{out}"},
               "encryption": encryption}
    plan, _ = s3_runner({**restore, "planOnly": True})
    assert plan.plan_only and plan.chain == incr.chain and plan.backup_id == incr.backup_id
    assert plan.restored_to is not None and not out.exists()  # a plan writes nothing

    done, _ = s3_runner(restore)
    assert (done.phase, done.backup_id, done.chain) == ("Completed", incr.backup_id, incr.chain)
    assert "restore" in done.stage_seconds
    assert dump(out) == dump(db)

    verified, _ = s3_runner({"kind": "verify", "repository": {"url": s3_repo},
                             "target": "shop.app", "encryption": encryption})
    assert verified.phase == "Completed" and verified.checked == (full.objects or 0) + (
        incr.objects or 0)


def test_restore_without_the_key_fails_before_touching_the_database(
        tmp_path: Path, s3_runner: Runner, s3_repo: str) -> None:
    db = tmp_path / "app.db"
    make_db(db, rows=200)
    keys = key_dir(tmp_path / "keys", "k1")
    s3_runner({"kind": "backup", "target": "app", "repository": {"url": s3_repo},
               "database": {"engine": "sqlite", "url": f"sqlite://{db}"},
               "encryption": {"mode": "keys", "keyDir": str(keys)}})
    other = key_dir(tmp_path / "other", "k2")
    out = tmp_path / "out.db"
    failed, err = s3_runner({"kind": "restore", "source": "app", "repository": {"url": s3_repo},
                             "database": {"engine": "sqlite", "url": f"sqlite://{out}"},
                             "encryption": {"mode": "keys", "keyDir": str(other)}},
                            code=Exit.KEY)
    assert failed.phase == "Failed" and failed.error is not None
    assert failed.error.exit_code == Exit.KEY and not out.exists()
    assert failed.error.message in err


def test_restore_of_a_named_backup_of_a_target_without_backups_names_the_id(
        tmp_path: Path, s3_runner: Runner, s3_repo: str) -> None:
    wanted = "20261201T020000.000000Z"
    failed, _ = s3_runner({"kind": "restore", "source": "db", "backupId": wanted,
                           "repository": {"url": s3_repo},
                           "database": {"engine": "sqlite",
                                        "url": f"sqlite://{tmp_path / 'out.db'}"},
                           "encryption": {"mode": "none"}}, code=Exit.NOT_FOUND)
    assert failed.error is not None and failed.error.error_class == "BackupNotFound"
    assert failed.error.message.startswith(
        f"no backup '{wanted}': target 'db' has no backups in s3://"), failed.error.message


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_db(pg18: Postgres) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg18.psql(f'CREATE DATABASE "{name}"')
    yield name
    pg18.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg18.psql(f'DROP DATABASE IF EXISTS "{name}_copy" WITH (FORCE)')


def pg_database(pg: Postgres, db: str) -> dict[str, Any]:
    return {"engine": "postgresql", "url": f"postgresql://{pg.user}@{pg.host}:{pg.port}/{db}",
            "passwordFrom": {"env": "DB_PASSWORD"}}


def test_postgresql_backup_and_restore_into_a_new_database(
        pg18: Postgres, pg_db: str, tmp_path: Path, s3_runner: Runner, s3_repo: str) -> None:
    pg_data.build(pg18, pg_db)
    source = pg_data.fingerprint(pg18, pg_db)
    keys = key_dir(tmp_path / "keys", "k1")
    encryption = {"mode": "keys", "keyDir": str(keys)}

    checked, _ = s3_runner({"kind": "check", "database": pg_database(pg18, pg_db),
                            "repository": {"url": s3_repo}}, DB_PASSWORD=PASSWORD)
    assert checked.phase == "Completed" and checked.server_version
    assert checked.server_version.startswith("18")

    result, _ = s3_runner({"kind": "backup", "target": pg_db, "repository": {"url": s3_repo},
                             "database": {**pg_database(pg18, pg_db), "jobs": 2},
                             "encryption": encryption}, DB_PASSWORD=PASSWORD)
    assert result.phase == "Completed" and result.end_position
    assert result.end_position.get("lsn") and result.server_version
    assert result.pipeline is not None  # where the time went, as the CLI reports it
    check_figures(result.pipeline.model_dump(), "backup", streams=pg_streams(2))

    copy = f"{pg_db}_copy"
    restored, _ = s3_runner({"kind": "restore", "source": pg_db, "backupId": result.backup_id,
                             "repository": {"url": s3_repo},
                             "database": pg_database(pg18, copy), "encryption": encryption},
                            DB_PASSWORD=PASSWORD)
    assert restored.phase == "Completed" and restored.backup_id == result.backup_id
    assert pg_data.fingerprint(pg18, copy) == source
    assert restored.pipeline is not None
    check_figures(restored.pipeline.model_dump(), "restore", streams=pg_streams(2))

    # conflictPolicy fail (the Restore default) refuses to overwrite the copy
    refused, _ = s3_runner({"kind": "restore", "source": pg_db, "repository": {"url": s3_repo},
                            "database": pg_database(pg18, copy), "encryption": encryption},
                           code=Exit.CONFLICT, DB_PASSWORD=PASSWORD)
    assert refused.error is not None and refused.error.exit_code == Exit.CONFLICT


def test_check_with_a_wrong_password_names_it_and_never_echoes_it(
        pg18: Postgres, pg_db: str, tmp_path: Path) -> None:
    secret = "wr0ng-Passw0rd-zebra"
    runner = Runner(tmp_path, {})
    failed, err = runner({"kind": "check", "database": pg_database(pg18, pg_db)},
                         code=Exit.DATABASE, DB_PASSWORD=secret)
    assert failed.error is not None and failed.error.error_class == "AuthenticationFailed"
    assert "password" in failed.error.message
    text = failed.to_json()
    assert secret not in text and secret not in err
    assert "--password-file" in failed.error.message  # no origin in the task: CLI advice

    # the operator's task says where its user set the password: the advice names that Secret
    origin = "the BackupTarget's connection.passwordSecretRef (Secret orders-db, key password)"
    wired, err = runner({"kind": "check", "database": {**pg_database(pg18, pg_db),
                                                       "passwordOrigin": origin}},
                        code=Exit.DATABASE, DB_PASSWORD=secret)
    assert wired.error is not None and wired.error.error_class == "AuthenticationFailed"
    assert f"check the user and password ({origin})" in wired.error.message
    assert "--password-file" not in wired.error.message
    assert secret not in wired.to_json() and secret not in err

    missing, _ = runner({"kind": "check", "database": pg_database(pg18, pg_db)},
                        code=Exit.USAGE)
    assert missing.error is not None and "DB_PASSWORD" in missing.error.message


# --------------------------------------------------------------------------- local repository


def local_backup(runner: Runner, repo: Path, db: Path, backup_type: str,
                 keys: Path) -> TaskResult:
    result, _ = runner({"kind": "backup", "target": "app", "type": backup_type,
                        "repository": {"url": repo.as_uri()},
                        "database": {"engine": "sqlite", "url": f"sqlite://{db}"},
                        "encryption": {"mode": "keys", "keyDir": str(keys)}})
    return result


def test_delete_is_refused_while_a_kept_backup_depends_on_it(tmp_path: Path) -> None:
    runner = Runner(tmp_path, {})
    db, repo = tmp_path / "app.db", tmp_path / "repo"
    make_db(db, rows=200)
    keys = key_dir(tmp_path / "keys", "k1")
    full = local_backup(runner, repo, db, "full", keys)
    incr = local_backup(runner, repo, db, "incremental", keys)
    assert incr.parent_id == full.backup_id
    delete = {"kind": "delete", "target": "app", "repository": {"url": repo.as_uri()}}

    refused, _ = runner({**delete, "backupIds": [full.backup_id]}, code=Exit.CONFLICT)
    assert refused.error is not None and refused.error.error_class == "DependentBackups"
    assert incr.backup_id in refused.error.message and refused.error.hint
    assert (repo / "app" / str(full.backup_id) / "manifest.json").exists()

    done, _ = runner({**delete, "backupIds": [full.backup_id, incr.backup_id]})
    assert done.deleted == [incr.backup_id, full.backup_id]  # the dependent one first
    assert done.freed_bytes and not (repo / "app" / str(full.backup_id)).exists()
    # a retried delete Job finds nothing left and succeeds
    again, _ = runner({**delete, "backupIds": [full.backup_id]})
    assert again.deleted == [] and "already gone" in again.notes[0]


def test_rewrap_rotates_to_the_active_key_and_old_backups_still_restore(tmp_path: Path) -> None:
    runner = Runner(tmp_path, {})
    db, repo = tmp_path / "app.db", tmp_path / "repo"
    make_db(db, rows=300)
    keys = key_dir(tmp_path / "keys", "k1")
    old = local_backup(runner, repo, db, "full", keys)
    # rotation: add a key and mark it active, then re-wrap
    key_dir(keys, "k2", active="k2")
    rotated, _ = runner({"kind": "rewrap", "repository": {"url": repo.as_uri()},
                         "encryption": {"mode": "keys", "keyDir": str(keys)}})
    assert rotated.rewrapped == 1 and rotated.active_key_id == key_id(keys / "k2")
    assert rotated.retired_key_ids == [key_id(keys / "k1")]
    # retire k1: the old backup restores with k2 alone
    (keys / "k1").unlink()
    (keys / "active").unlink()
    out = tmp_path / "out.db"
    done, _ = runner({"kind": "restore", "source": "app", "backupId": old.backup_id,
                      "repository": {"url": repo.as_uri()},
                      "database": {"engine": "sqlite", "url": f"sqlite://{out}"},
                      "encryption": {"mode": "keys", "keyDir": str(keys)}})
    assert done.key_id == key_id(keys / "k2") and dump(out) == dump(db)


def test_unencrypted_target_is_bound_to_its_namespace(tmp_path: Path) -> None:
    """encryption none is an explicit choice; the namespace is recorded, and the same target
    name from another namespace is refused (it would mix two databases' chains)."""
    runner = Runner(tmp_path, {})
    db, repo = tmp_path / "app.db", tmp_path / "repo"
    make_db(db, rows=50)
    task = {"kind": "backup", "target": "app", "namespace": "shop",
            "repository": {"url": repo.as_uri()},
            "database": {"engine": "sqlite", "url": f"sqlite://{db}"},
            "encryption": {"mode": "none"}}
    plain, _ = runner(task)
    assert plain.encryption == "none" and plain.key_id is None
    manifest = json.loads((repo / "app" / str(plain.backup_id) / "manifest.json").read_text())
    assert manifest["namespace"] == "shop"
    other, _ = runner({**task, "namespace": "staging"}, code=Exit.USAGE)
    assert other.error is not None and other.error.error_class == "PolicyConflict"
    assert "shop/app" in other.error.message


def test_ambiguous_key_secret_is_refused(tmp_path: Path) -> None:
    runner = Runner(tmp_path, {})
    db = tmp_path / "app.db"
    make_db(db, rows=10)
    keys = key_dir(tmp_path / "keys", "a", "b")  # two keys and no `active`
    failed, _ = runner({"kind": "backup", "target": "app",
                        "repository": {"url": (tmp_path / "repo").as_uri()},
                        "database": {"engine": "sqlite", "url": f"sqlite://{db}"},
                        "encryption": {"mode": "keys", "keyDir": str(keys)}}, code=Exit.KEY)
    assert failed.error is not None and "active" in failed.error.message
    assert not (tmp_path / "repo").exists() or not list((tmp_path / "repo").rglob("manifest*"))


# --------------------------------------------------------------------------- bad tasks, SIGTERM


def test_bad_tasks_fail_with_a_usage_result(tmp_path: Path) -> None:
    runner = Runner(tmp_path, {})
    leaky = {"kind": "check", "database": {"engine": "postgresql",
                                           "url": "postgresql://u:s3cr3t-x@db/x"}}
    failed, err = runner(leaky, code=Exit.USAGE)
    assert failed.kind == "check" and failed.error is not None
    assert "never hold secrets" in failed.error.message
    assert "s3cr3t-x" not in failed.to_json() and "s3cr3t-x" not in err

    garbage, _ = runner({"kind": "format-disk"}, code=Exit.USAGE)
    assert garbage.kind is None and garbage.error is not None
    assert "kind" in garbage.error.message

    proc = subprocess.run([sys.executable, "-m", "safehold.cli", "run-task", "--result-file",
                           str(tmp_path / "r.json")], env=runner.env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == Exit.USAGE and "SAFEHOLD_TASK" in proc.stderr
    assert "SAFEHOLD_TASK" in json.loads((tmp_path / "r.json").read_text())["error"]["message"]


def test_sigterm_still_writes_a_result(tmp_path: Path) -> None:
    """Kubernetes stops a Pod with SIGTERM: the runner reports Terminated, exit 143."""
    fifo = tmp_path / "password"
    os.mkfifo(fifo)  # reading it blocks until a writer comes: the runner is caught mid-task
    runner = Runner(tmp_path, {})
    proc, result = runner.start({"kind": "check", "database": {
        "engine": "postgresql", "url": "postgresql://u@127.0.0.1:1/x",
        "passwordFrom": {"file": str(fifo)}}})

    def blocked() -> bool:  # asleep in the kernel, opening a FIFO that has no writer
        try:
            return Path(f"/proc/{proc.pid}/wchan").read_text() in (
                "wait_for_partner", "fifo_open", "pipe_wait")
        except OSError:
            return False

    deadline = time.monotonic() + 60
    while not blocked() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert blocked(), f"the runner never reached the secret file (exit {proc.poll()})"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == Exit.TERMINATED, err
    reported = TaskResult.from_termination_message(result.read_text())
    assert reported.error is not None and reported.error.error_class == "Terminated"
    assert reported.error.transient and "SIGTERM" in reported.error.message
