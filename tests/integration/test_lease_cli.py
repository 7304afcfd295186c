"""Two real `safehold` processes writing one target: the target's lease keeps them apart.

The first backup is held mid-run deterministically: the test takes an EXCLUSIVE lock on the
SQLite source, so the backup (which takes its lease before it reads the database) waits for
the database while holding the lease, until the test commits.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from safehold.cli.errors import Exit
from safehold.repository.lease import LeaseRecord
from tests.infra.portable import posix_only, sqlite_url
from tests.integration.cli_helpers import make_db, run, run_json

ID_A = "20270115T080000.000000Z"
ID_B = "20270115T090000.000000Z"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A SQLite database, a local repository and an environment with a key and no user config."""
    db = tmp_path / "app.db"
    make_db(db, rows=500)
    (tmp_path / "safehold.yaml").write_text("{}\n")
    key = tmp_path / "key"
    run("keys", "generate", "--out", str(key))
    env = {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": str(key),
           "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_LOCK_WAIT": "",
           "SAFEHOLD_LEASE_TTL": ""}
    return db, tmp_path / "repo", env


def safehold(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "safehold.cli", "--log-format", "text", *args],
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"safehold did not finish in {timeout}s:\n{out}{err}") from None
    return proc.returncode, out + err


@contextmanager
def database_locked(db: Path) -> Iterator[sqlite3.Connection]:
    """Hold an EXCLUSIVE lock on ``db``: readers (a backup's snapshot) wait until it ends."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")
        conn.close()


def lease_of(repo: Path) -> LeaseRecord | None:
    try:
        return LeaseRecord.model_validate_json((repo / "app" / "lease.json").read_bytes())
    except FileNotFoundError:
        return None


def wait_for_lease(repo: Path, proc: subprocess.Popen[str]) -> LeaseRecord:
    """The lease record once ``proc`` holds it (fails if ``proc`` ends first)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        record = lease_of(repo)
        if record is not None and record.holder.pid == proc.pid and not record.released:
            return record
        if proc.poll() is not None:
            raise AssertionError(f"the backup ended before it held the lease:\n{finish(proc)}")
        time.sleep(0.05)
    raise AssertionError("the backup never took the lease")


def backup_args(db: Path, repo: Path, *extra: str) -> list[str]:
    return ["backup", "-t", sqlite_url(db), "-r", repo.as_uri(), *extra]


def test_a_second_writer_fails_naming_the_holder_or_waits_and_succeeds(setup) -> None:
    db, repo, env = setup
    with database_locked(db):
        first = safehold(*backup_args(db, repo, "--backup-id", ID_A), env=env)
        held = wait_for_lease(repo, first)
        assert (held.holder.operation, held.holder.backup_id) == ("backup", ID_A)
        assert f"--backup-id {ID_A}" in held.holder.command

        # the same backup id again, at once: refused, naming the holder
        code, out = finish(safehold(*backup_args(db, repo, "--backup-id", ID_A), env=env))
        assert code == Exit.LOCKED, out
        assert f"safehold backup of backup {ID_A} (pid {first.pid} on host" in out
        assert "target 'app'" in out and "expires at" in out and "--lock-wait" in out

        # prune of that target: refused too (it would delete the running backup's objects)
        code, out = finish(safehold("prune", "-r", repo.as_uri(), "-t", "app", "--keep-last",
                                    "1", env=env))
        assert code == Exit.LOCKED, out
        assert f"pid {first.pid}" in out

        # a bad --lock-wait is a usage error, before anything is locked
        code, out = finish(safehold(*backup_args(db, repo, "--lock-wait", "soon"), env=env))
        assert code == Exit.USAGE and "is not a duration" in out, out

        # another backup that may wait: it waits (and says so) until the first is done
        second = safehold(*backup_args(db, repo, "--backup-id", ID_B, "--lock-wait", "5m"),
                          env=env)
        assert second.stderr is not None
        waiting = second.stderr.readline()
        while waiting and "waiting up to" not in waiting:
            waiting = second.stderr.readline()
        assert f"pid {first.pid}" in waiting, waiting
        assert lease_of(repo) is not None and lease_of(repo).holder.pid == first.pid  # type: ignore[union-attr]
    # the database is free: the first backup completes and releases, then the second runs
    code, out = finish(first)
    assert code == 0, out
    code, out = finish(second)
    assert code == 0, out
    assert complete_backups(repo, env) == [ID_A, ID_B]
    final = lease_of(repo)
    assert final is not None and final.released and final.holder.pid == second.pid


def complete_backups(repo: Path, env: dict[str, str]) -> list[str]:
    rows = run_json("list", "-r", repo.as_uri(), env=env)["backups"]
    return sorted(r["backup_id"] for r in rows if r["type"] != "incomplete")


@posix_only("SIGKILL of the lease holder")
def test_a_killed_holders_lease_expires_and_the_next_backup_takes_over(setup) -> None:
    db, repo, env = setup
    short = {**env, "SAFEHOLD_LEASE_TTL": "3"}
    with database_locked(db):
        victim = safehold(*backup_args(db, repo, "--backup-id", ID_A), env=short)
        held = wait_for_lease(repo, victim)
        victim.send_signal(signal.SIGKILL)
        assert finish(victim)[0] == -signal.SIGKILL
    left = lease_of(repo)
    assert left is not None and left.holder.pid == victim.pid and not left.released
    assert left.expires_at > held.taken_at  # nobody released it: only expiry frees it

    code, out = finish(safehold(*backup_args(db, repo, "--backup-id", ID_B, "--lock-wait", "2m"),
                                env=short))
    assert code == 0, out
    assert "took over the expired lease of target 'app'" in out
    assert f"pid {victim.pid}" in out
    final = lease_of(repo)
    assert final is not None and final.released and final.holder.backup_id == ID_B
    assert final.taken_at >= left.expires_at  # taken only once the dead holder's lease expired
    assert complete_backups(repo, env) == [ID_B]


@posix_only("SIGSTOP and SIGCONT freeze and resume the holder")
def test_a_backup_that_loses_its_lease_stops_before_its_manifest(setup) -> None:
    """A holder frozen past its TTL (SIGSTOP: a paused VM or a stalled node) finds, once it
    runs again, that its lease was taken over; it exits 11 without writing a manifest."""
    db, repo, env = setup
    short = {**env, "SAFEHOLD_LEASE_TTL": "2"}
    with database_locked(db):
        frozen = safehold(*backup_args(db, repo, "--backup-id", ID_A), env=short)
        wait_for_lease(repo, frozen)
        frozen.send_signal(signal.SIGSTOP)
    try:
        code, out = finish(safehold(*backup_args(db, repo, "--backup-id", ID_B,
                                                 "--lock-wait", "2m"), env=short))
    finally:
        frozen.send_signal(signal.SIGCONT)
    assert code == 0, out
    assert "took over the expired lease" in out and f"pid {frozen.pid}" in out
    code, out = finish(frozen)
    assert code == Exit.LOCKED, out
    assert "lost the lease of target 'app'" in out
    assert not (repo / "app" / ID_A / "manifest.json").exists()
    assert complete_backups(repo, env) == [ID_B]
    final = lease_of(repo)  # the loser's release left the winner's record alone
    assert final is not None and final.holder.backup_id == ID_B and final.released


def test_writers_of_different_targets_do_not_wait_for_each_other(setup, tmp_path: Path) -> None:
    db, repo, env = setup
    other = tmp_path / "other.db"
    make_db(other, rows=10)
    with database_locked(db):
        first = safehold(*backup_args(db, repo), env=env)
        wait_for_lease(repo, first)
        code, out = finish(safehold(*backup_args(other, repo), env=env))
        assert code == 0, out
    assert finish(first)[0] == 0


def test_key_rotation_waits_for_every_target(setup, tmp_path: Path) -> None:
    db, repo, env = setup
    run("backup", "-t", sqlite_url(db), "-r", repo.as_uri(), env=env)
    new_key = tmp_path / "new-key"
    run("keys", "generate", "--out", str(new_key))
    with database_locked(db):
        holder = safehold(*backup_args(db, repo), env=env)
        wait_for_lease(repo, holder)
        code, out = finish(safehold("keys", "rotate", "-r", repo.as_uri(), "--new-key-file",
                                    str(new_key), env=env))
        assert code == Exit.LOCKED, out
        assert f"pid {holder.pid}" in out
    assert finish(holder)[0] == 0
    code, out = finish(safehold("keys", "rotate", "-r", repo.as_uri(), "--new-key-file",
                                str(new_key), env=env))  # now it goes through
    assert code == 0, out


def test_runner_jobs_take_the_same_lease(setup, tmp_path: Path) -> None:
    """`safehold run-task` (the operator's Jobs) waits for, or fails on, the lease the CLI holds:
    one lock for the whole product."""
    from tests.integration.test_run_task import Runner, key_dir

    db, repo, env = setup
    runner = Runner(tmp_path, {})
    task = {"kind": "backup", "target": "app", "type": "full", "backupId": ID_B,
            "repository": {"url": repo.as_uri()},
            "database": {"engine": "sqlite", "url": sqlite_url(db)},
            "encryption": {"mode": "keys", "keyDir": str(key_dir(tmp_path / "keys", "k1"))}}
    with database_locked(db):
        cli = safehold(*backup_args(db, repo, "--backup-id", ID_A), env=env)
        wait_for_lease(repo, cli)
        refused, _ = runner(task, code=Exit.LOCKED, SAFEHOLD_LOCK_WAIT="0")
        assert refused.error is not None and refused.error.error_class == "LeaseHeld"
        assert f"pid {cli.pid}" in refused.error.message
        job, _ = runner.start(task)  # the default for Jobs: wait (2 TTLs) for the lease
        assert job.stderr is not None
        line = job.stderr.readline()
        while line and "waiting up to" not in line:
            line = job.stderr.readline()
        assert f"pid {cli.pid}" in line, line
    assert finish(cli)[0] == 0
    code, out = finish(job)
    assert code == 0, out
    assert complete_backups(repo, env) == [ID_A, ID_B]
    final = lease_of(repo)
    assert final is not None and final.holder.command == "safehold run-task backup"
