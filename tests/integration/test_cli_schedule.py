"""`safehold schedule` and `safehold daemon --once` on real SQLite stores, a real SQLite database
and a local repository; the clock is pinned with SAFEHOLD_NOW (test-only)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from safehold.cli.errors import Exit
from safehold.cli.schedule_store import Owner, Store
from tests.infra.portable import linux_only, posix_only, sqlite_url
from tests.integration.cli_helpers import make_db, run, run_json


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_NO_ENCRYPTION": "1",
            "SAFEHOLD_SCHEDULE_STORE": str(tmp_path / "state" / "schedules.db")}


def at(env: dict[str, str], when: str) -> dict[str, str]:
    return {**env, "SAFEHOLD_NOW": when}


def backups(tmp_path: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    if not (tmp_path / "repo").exists():
        return []
    rows: list[dict[str, Any]] = run_json("list", "-r", (tmp_path / "repo").as_uri(),
                                          env=env)["backups"]
    return rows


def add(tmp_path: Path, env: dict[str, str], *args: str) -> None:
    db = tmp_path / "app.db"
    if not db.exists():
        make_db(db, rows=50, tables=1)
    run("schedule", "add", "nightly", "-t", sqlite_url(db), "-r", (tmp_path / "repo").as_uri(),
        *args, env=at(env, "2026-12-01T12:00:00+00:00"))


def records(env: dict[str, str]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = run_json("schedule", "show", "nightly", env=env)["runs"]
    return runs


def test_add_list_show_pause_remove(tmp_path: Path, env: dict[str, str]) -> None:
    add(tmp_path, env, "--full", "0 2 * * *", "--incremental", "0 * * * *",
        "--time-zone", "Europe/Berlin", "--missed", "skip")
    listed = run_json("schedule", "list", env=at(env, "2026-12-01T12:10:00+00:00"))
    assert [s["name"] for s in listed] == ["nightly"]
    assert listed[0]["crons"] == {"full": "0 2 * * *", "incremental": "0 * * * *"}
    assert listed[0]["time_zone"] == "Europe/Berlin" and listed[0]["missed"] == "skip"
    assert listed[0]["next"] == "2026-12-01T13:00:00+00:00"  # 14:00 Berlin, the incremental
    assert (tmp_path / "state" / "schedules.db").exists()  # SAFEHOLD_SCHEDULE_STORE is used

    run("schedule", "pause", "nightly", env=env)
    assert run_json("schedule", "show", "nightly", env=env)["paused"] is True
    assert "paused" in run("schedule", "list", env=env).output
    run("schedule", "resume", "nightly", env=env)
    assert run_json("schedule", "show", "nightly", env=env)["paused"] is False

    other = tmp_path / "other.db"
    run("schedule", "add", "x", "-t", "sqlite:///x.db", "-r", "file:///r", "--full", "@daily",
        "--store", str(other), env=env)
    assert [s["name"] for s in run_json("schedule", "list", "--store", str(other), env=env)] \
        == ["x"]

    run("schedule", "remove", "nightly", env=env)
    assert run_json("schedule", "list", env=env) == []
    assert "no schedules" in run("schedule", "list", env=env).output


@pytest.mark.parametrize(("args", "words"), [
    (["--full", "0 2 * *"], ["has 4 field(s), expected 5", "'0 2 * * *'"]),
    (["--full", "@sometimes"], ["unknown cron macro", "@daily"]),
    (["--full", "0 0 30 2 *"], ["never fires"]),
    (["--full", "0 2 * * *", "--time-zone", "Mars/Olympus"], ["unknown time zone",
                                                              "Europe/Berlin"]),
    ([], ["needs a cron or a time", "--at TIME"]),
    (["--at", "tomorrow"], ["not an ISO 8601 time", "2026-12-24T18:00"]),
    (["--at", "2026-12-24T18:00", "--full", "@daily"], ["cannot be combined"]),
    (["--at", "2020-01-01T00:00"], ["is in the past", "safehold backup"]),
])
def test_bad_input_is_refused_with_the_fix(tmp_path: Path, env: dict[str, str],
                                           args: list[str], words: list[str]) -> None:
    result = run("schedule", "add", "bad", "-t", "sqlite:///x.db", "-r", "file:///r", *args,
                 "--output", "json", env=env, ok=False)
    assert result.exit_code == Exit.USAGE, result.output
    report = json.loads(result.stdout)
    text = f"{report['error']['message']} {report['error'].get('hint')}"
    for word in words:
        assert word in text, text
    assert run_json("schedule", "list", env=env) == []  # nothing half-written


def test_duplicate_and_unknown_names(tmp_path: Path, env: dict[str, str]) -> None:
    add(tmp_path, env, "--full", "@daily")
    dup = run("schedule", "add", "nightly", "-t", "sqlite:///x.db", "-r", "file:///r",
              "--full", "@daily", env=env, ok=False)
    assert dup.exit_code == Exit.USAGE and "exists already" in dup.output
    for command in ("show", "remove", "pause", "resume", "run-now"):
        missing = run("schedule", command, "nope", env=env, ok=False)
        assert missing.exit_code == Exit.USAGE and "no schedule named 'nope'" in missing.output
    broken = tmp_path / "broken.db"
    broken.write_text("not a database " * 100)
    bad = run("schedule", "list", "--store", str(broken), env=env, ok=False)
    assert bad.exit_code == Exit.USAGE and "cannot open the schedule store" in bad.output


def test_a_slot_fires_exactly_once_across_a_restart(tmp_path: Path,
                                                   env: dict[str, str]) -> None:
    add(tmp_path, env, "--full", "0 2 * * *")
    run("daemon", "--once", env=at(env, "2026-12-02T01:59:00+00:00"))
    assert backups(tmp_path, env) == []  # not due yet

    run("daemon", "--once", env=at(env, "2026-12-02T02:00:20+00:00"))
    first = backups(tmp_path, env)
    assert [b["type"] for b in first] == ["full"]
    run("daemon", "--once", env=at(env, "2026-12-02T02:00:50+00:00"))  # a restarted daemon
    assert backups(tmp_path, env) == first
    assert [(r["slot"], r["outcome"], r["exit_code"]) for r in records(env)] == [
        ("2026-12-02T02:00:00+00:00", "success", 0)]

    run("daemon", "--once", env=at(env, "2026-12-03T02:00:05+00:00"))  # the next day's slot
    assert len(backups(tmp_path, env)) == 2


@pytest.mark.parametrize("policy", ["run-once", "skip"])
def test_missed_slots_follow_the_policy(tmp_path: Path, env: dict[str, str],
                                        policy: str) -> None:
    add(tmp_path, env, "--full", "0 2 * * *", "--missed", policy)
    # the daemon was down from the schedule's creation until 10:00 three days later
    run("daemon", "--once", env=at(env, "2026-12-04T10:00:00+00:00"))
    run("daemon", "--once", env=at(env, "2026-12-04T10:01:00+00:00"))
    recorded = records(env)
    assert [(r["slot"], r["passed_over"]) for r in recorded] == [
        ("2026-12-04T02:00:00+00:00", 2)]  # the latest slot once; 12-02 and 12-03 counted
    if policy == "run-once":
        assert recorded[0]["outcome"] == "success"
        assert len(backups(tmp_path, env)) == 1
    else:
        assert recorded[0]["outcome"] == "skipped"
        assert backups(tmp_path, env) == []


def test_one_time_run_and_run_now(tmp_path: Path, env: dict[str, str]) -> None:
    add(tmp_path, env, "--at", "2026-12-01T15:00", "--time-zone", "Europe/Berlin")  # 14:00 UTC
    run("daemon", "--once", env=at(env, "2026-12-01T13:59:00+00:00"))
    assert backups(tmp_path, env) == []
    run("daemon", "--once", env=at(env, "2026-12-01T14:00:10+00:00"))
    run("daemon", "--once", env=at(env, "2026-12-01T14:03:00+00:00"))
    assert len(backups(tmp_path, env)) == 1
    run("schedule", "run-now", "nightly", env=env)
    assert len(backups(tmp_path, env)) == 2
    with sqlite3.connect(tmp_path / "state" / "schedules.db") as conn:
        assert conn.execute("SELECT count(*) FROM runs WHERE outcome='success'").fetchone() \
            == (2,)


def test_a_failing_backup_is_recorded_with_its_exit_code(tmp_path: Path,
                                                         env: dict[str, str]) -> None:
    run("schedule", "add", "nightly", "-t", sqlite_url(tmp_path / 'missing.db'), "-r",
        (tmp_path / "repo").as_uri(), "--full", "@hourly",
        env=at(env, "2026-12-01T12:00:00+00:00"))
    result = run("daemon", "--once", env=at(env, "2026-12-01T13:00:05+00:00"), ok=False)
    assert result.exit_code != 0
    [record] = records(env)
    assert record["outcome"] == "failure" and record["exit_code"] == result.exit_code


@linux_only("systemd-analyze verify")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """deploy/systemd/safehold.service passes `systemd-analyze verify` (its ExecStart pointed at
    this checkout's safehold, since /usr/local/bin/safehold is not installed here)."""
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: apt-get install systemd"
    exe = Path(sys.executable).parent / "safehold"
    assert exe.exists(), exe
    unit = (Path(__file__).parents[2] / "deploy/systemd/safehold.service").read_text()
    assert "ExecStart=/usr/local/bin/safehold " in unit
    copy = tmp_path / "safehold.service"
    copy.write_text(unit.replace("/usr/local/bin/safehold", str(exe)))
    result = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "safehold.service" not in result.stderr, result.stderr  # no warning about it


def test_a_claimed_slot_is_never_claimed_again(tmp_path: Path) -> None:
    """Two daemons on one store (two connections) race for a slot: one claim wins."""
    path = tmp_path / "s.db"
    first, second = Store(path), Store(path)
    slot = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    assert first.claim("nightly", "full", slot, "running") is True
    assert second.claim("nightly", "full", slot, "running") is False
    assert second.claim("nightly", "full", slot, "skipped") is False  # the first record stays
    assert [r["outcome"] for r in first.runs("nightly")] == ["running"]
    assert first.claim("nightly", "incremental", slot, "covered") is True  # per type


def test_a_slot_left_running_by_a_process_still_alive_is_left_alone(
        tmp_path: Path, env: dict[str, str]) -> None:
    """A running slot whose owner (here: this test process) still holds its lock belongs to a
    live daemon: another daemon neither recovers nor reruns it."""
    add(tmp_path, env, "--full", "0 2 * * *")
    store = Store(tmp_path / "state" / "schedules.db")
    owner = Owner(store)
    try:
        store.claim("nightly", "full", datetime(2026, 12, 2, 2, 0, tzinfo=UTC), "running",
                    owner=owner)
        run("daemon", "--once", env=at(env, "2026-12-02T02:00:40+00:00"))
        assert backups(tmp_path, env) == []
        assert [(r["slot"], r["outcome"]) for r in records(env)] == [
            ("2026-12-02T02:00:00+00:00", "running")]
    finally:
        owner.release()
    run("daemon", "--once", env=at(env, "2026-12-02T02:00:50+00:00"))  # its owner is gone
    assert [(r["outcome"], r["attempts"]) for r in records(env)] == [("success", 2)]
    assert len(backups(tmp_path, env)) == 1


def test_a_paused_schedule_records_its_slots_as_skipped(tmp_path: Path,
                                                        env: dict[str, str]) -> None:
    add(tmp_path, env, "--full", "0 2 * * *")
    run("schedule", "pause", "nightly", env=env)
    run("daemon", "--once", env=at(env, "2026-12-02T02:00:10+00:00"))
    assert backups(tmp_path, env) == []
    run("schedule", "resume", "nightly", env=env)
    run("daemon", "--once", env=at(env, "2026-12-02T02:01:00+00:00"))  # the slot stays skipped
    assert backups(tmp_path, env) == []
    run("daemon", "--once", env=at(env, "2026-12-03T02:00:10+00:00"))
    assert len(backups(tmp_path, env)) == 1
    assert [(r["slot"][:10], r["outcome"]) for r in records(env)] == [
        ("2026-12-03", "success"), ("2026-12-02", "skipped")]


@posix_only("SIGTERM ends the daemon with 143 (on Windows send_signal terminates it)")
def test_the_daemon_loop_runs_a_slot_once_and_stops_on_sigterm(tmp_path: Path,
                                                                env: dict[str, str]) -> None:
    """The real loop (no --once) in a child process, as systemd runs it: the slot runs once,
    SIGTERM ends it with 143 (the unit's SuccessExitStatus), a restart does not run it again."""
    add(tmp_path, env, "--full", "0 2 * * *")
    child_env = {**os.environ, **at(env, "2026-12-02T02:00:30+00:00")}
    proc = subprocess.Popen([sys.executable, "-m", "safehold.cli", "daemon", "--interval", "1s"],
                            env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    store = Store(tmp_path / "state" / "schedules.db")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not any(
                r["outcome"] == "success" for r in store.runs("nightly")):
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 143, out
    assert [r["outcome"] for r in store.runs("nightly")] == ["success"], out
    run("daemon", "--once", env=at(env, "2026-12-02T02:00:50+00:00"))
    assert len(backups(tmp_path, env)) == 1


def test_the_launchd_plist_parses_and_its_arguments_are_a_valid_command() -> None:
    """deploy/launchd/io.safehold.daemon.plist is a valid property list (plistlib, the format
    launchd reads) whose program arguments this checkout's safehold accepts."""
    import plistlib

    path = Path(__file__).parents[2] / "deploy/launchd/io.safehold.daemon.plist"
    plist = plistlib.loads(path.read_bytes())
    assert plist["Label"] == path.name.removesuffix(".plist")
    program, *args = plist["ProgramArguments"]
    assert program == "/usr/local/bin/safehold" and args[-1] == "daemon"
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] == {"SuccessfulExit": False}
    assert set(plist["EnvironmentVariables"]) == {"SAFEHOLD_SCHEDULE_STORE", "SAFEHOLD_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "safehold.cli", *args, "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "Run the schedules of the store" in result.stdout, \
        result.stdout + result.stderr


def test_a_store_from_before_owners_and_retention_is_upgraded(tmp_path: Path,
                                                              env: dict[str, str]) -> None:
    """A store written by the first release (no retention, owner, attempts or note columns)
    opens, keeps its schedules, and its `running` rows (no owner: their process is gone) are
    recovered as interrupted."""
    path = tmp_path / "state" / "schedules.db"
    path.parent.mkdir()
    db = tmp_path / "app.db"
    make_db(db, rows=50, tables=1)
    with sqlite3.connect(path) as conn:
        conn.executescript("""
CREATE TABLE schedules (name TEXT PRIMARY KEY, target TEXT NOT NULL, repo TEXT NOT NULL,
  crons TEXT NOT NULL, time_zone TEXT, missed TEXT NOT NULL, at TEXT,
  paused INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE runs (schedule TEXT NOT NULL, type TEXT NOT NULL, slot TEXT NOT NULL,
  outcome TEXT NOT NULL, passed_over INTEGER NOT NULL DEFAULT 0, started_at TEXT NOT NULL,
  finished_at TEXT, exit_code INTEGER, PRIMARY KEY (schedule, type, slot));""")
        conn.execute("INSERT INTO schedules VALUES (?,?,?,?,?,?,?,?,?)",
                     ("nightly", sqlite_url(db), (tmp_path / "repo").as_uri(),
                      '{"full": "0 2 * * *"}', None, "run-once", None, 0,
                      "2026-12-01T12:00:00+00:00"))
        conn.execute("INSERT INTO runs (schedule, type, slot, outcome, started_at) VALUES"
                     " ('nightly', 'full', '2026-12-02T02:00:00+00:00', 'running', 'x')")
    assert run_json("schedule", "show", "nightly", env=env)["retention"] is None
    run("daemon", "--once", env=at(env, "2026-12-02T02:01:00+00:00"))
    assert [(r["outcome"], r["attempts"]) for r in records(env)] == [("success", 2)]
    assert len(backups(tmp_path, env)) == 1
