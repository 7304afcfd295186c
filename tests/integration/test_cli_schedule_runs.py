"""What the standalone scheduler does around each run: `schedule update`, retention after a
success (never after a failure), Slack notices, the lease against a manual backup, and slots
left running by a daemon killed mid-backup. Real SQLite databases and stores, a local repository,
the local Slack stand-in; the clock is pinned with SAFEHOLD_NOW (test-only)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from safehold.cli.errors import Exit
from safehold.cli.schedule_store import Store
from tests.infra.slackhook import SlackHook, block_kit_problems
from tests.integration.cli_helpers import make_db, run, run_json
from tests.integration.test_cli_schedule import at, backups, records
from tests.integration.test_lease_cli import database_locked, lease_of

T0 = "2026-12-01T12:00:00+00:00"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_NO_ENCRYPTION": "1",
            "SAFEHOLD_LOCK_WAIT": "", "SAFEHOLD_LEASE_TTL": "",
            "SAFEHOLD_SCHEDULE_STORE": str(tmp_path / "state" / "schedules.db")}


def add(tmp_path: Path, env: dict[str, str], *args: str, db: str = "app.db") -> Path:
    path = tmp_path / db
    if not path.exists():
        make_db(path, rows=50, tables=1)
    run("schedule", "add", "nightly", "-t", f"sqlite://{path}", "-r",
        (tmp_path / "repo").as_uri(), *args, env=at(env, T0))
    return path


def show(env: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = run_json("schedule", "show", "nightly", env=env)
    return data


def test_update_changes_what_is_given_and_keeps_the_rest(tmp_path: Path,
                                                         env: dict[str, str]) -> None:
    add(tmp_path, env, "--full", "0 2 * * *", "--incremental", "0 * * * *")
    run("schedule", "update", "nightly", "--incremental", "", "--full", "30 3 * * *",
        "--time-zone", "Europe/Berlin", "--missed", "skip", "--keep-last", "3",
        env=at(env, "2026-12-01T12:30:00+00:00"))
    s = show(at(env, "2026-12-01T12:31:00+00:00"))
    assert s["crons"] == {"full": "30 3 * * *"} and s["time_zone"] == "Europe/Berlin"
    assert s["missed"] == "skip" and s["retention"] == {"keep_last": 3}
    assert s["next"] == "2026-12-02T02:30:00+00:00"  # 03:30 Berlin
    assert s["target"].endswith("app.db") and s["created_at"].startswith("2026-12-01T12:30")

    run("schedule", "update", "nightly", "--at", "2026-12-24T18:00", "--type", "incremental",
        env=at(env, T0))
    s = show(env)
    assert s["crons"] == {"incremental": ""} and s["at"] == "2026-12-24T17:00:00+00:00"
    run("schedule", "update", "nightly", "--full", "@daily", "--no-retention", env=env)
    s = show(env)
    assert s["crons"] == {"full": "@daily"} and s["at"] is None and s["retention"] is None


def test_update_does_not_fire_for_slots_before_it(tmp_path: Path, env: dict[str, str]) -> None:
    add(tmp_path, env, "--full", "0 2 * * *")
    run("daemon", "--once", env=at(env, "2026-12-02T02:00:10+00:00"))
    assert len(backups(tmp_path, env)) == 1
    # at 12:30 the schedule becomes hourly: 03:00 .. 12:00 were before the update
    run("schedule", "update", "nightly", "--full", "0 * * * *",
        env=at(env, "2026-12-02T12:30:00+00:00"))
    run("daemon", "--once", env=at(env, "2026-12-02T12:40:00+00:00"))
    assert len(backups(tmp_path, env)) == 1
    run("daemon", "--once", env=at(env, "2026-12-02T13:00:05+00:00"))
    assert len(backups(tmp_path, env)) == 2


@pytest.mark.parametrize(("args", "words"), [
    (["--full", "0 2 * *"], ["has 4 field(s), expected 5"]),
    (["--time-zone", "Mars/Olympus"], ["unknown time zone"]),
    (["--at", "2020-01-01T00:00"], ["is in the past"]),
    (["--at", "2026-12-24T18:00", "--full", "@daily"], ["cannot be combined"]),
    (["--full", ""], ["would leave no cron"]),
    (["--type", "incremental"], ["--type is the type of an --at run"]),
    (["--keep-last", "0"], ["invalid retention policy", "--keep-last 7"]),
    (["--max-age", "forever"], ["invalid retention policy", "--max-age"]),
    (["--no-retention", "--keep-last", "3"], ["contradict"]),
    ([], ["nothing to update", "--keep-last 7"]),
])
def test_bad_updates_are_refused_and_change_nothing(tmp_path: Path, env: dict[str, str],
                                                    args: list[str], words: list[str]) -> None:
    add(tmp_path, env, "--full", "0 2 * * *")
    before = show(env)
    result = run("schedule", "update", "nightly", *args, "--output", "json", env=env, ok=False)
    assert result.exit_code == Exit.USAGE, result.output
    error = json.loads(result.stdout)["error"]
    text = f"{error['message']} {error.get('hint')}"
    for word in words:
        assert word in text, text
    assert show(env) == before
    missing = run("schedule", "update", "nope", "--full", "@daily", env=env, ok=False)
    assert missing.exit_code == Exit.USAGE and "no schedule named 'nope'" in missing.output


def test_retention_runs_after_each_success_and_never_after_a_failure(
        tmp_path: Path, env: dict[str, str]) -> None:
    db = add(tmp_path, env, "--full", "0 * * * *", "--keep-last", "2")
    for hour in (13, 14, 15):
        run("daemon", "--once", env=at(env, f"2026-12-01T{hour}:00:05+00:00"))
    assert len(backups(tmp_path, env)) == 2  # the third run pruned the oldest
    latest = records(env)[0]
    assert latest["outcome"] == "success"
    assert latest["note"] == "retention on app: 1 deleted"

    # keep only one from now on, and let the next backup fail: nothing may be pruned
    run("schedule", "update", "nightly", "--keep-last", "1", env=at(env, T0))
    db.rename(tmp_path / "gone.db")
    failed = run("daemon", "--once", env=at(env, "2026-12-01T16:00:05+00:00"), ok=False)
    assert failed.exit_code == Exit.NOT_FOUND, failed.output
    assert len(backups(tmp_path, env)) == 2
    assert (records(env)[0]["outcome"], records(env)[0]["note"]) == ("failure", None)

    (tmp_path / "gone.db").rename(db)
    run("schedule", "run-now", "nightly", env=env)
    assert len(backups(tmp_path, env)) == 1  # run-now applies it too


def test_each_run_sends_its_slack_notice(tmp_path: Path, env: dict[str, str],
                                         slack_hook: SlackHook) -> None:
    (tmp_path / "safehold.yaml").write_text(
        "notifications:\n  slack:\n    webhook_url_env: TEST_SLACK_WEBHOOK\n"
        "    on: [failure, success]\n")
    env = {**env, "TEST_SLACK_WEBHOOK": slack_hook.url}
    db = add(tmp_path, env, "--full", "0 * * * *")
    run("daemon", "--once", env=at(env, "2026-12-01T13:00:05+00:00"))
    db.unlink()
    run("daemon", "--once", env=at(env, "2026-12-01T14:00:05+00:00"), ok=False)
    run("daemon", "--once", env=at(env, "2026-12-01T14:00:30+00:00"), ok=False)  # nothing due
    assert len(slack_hook.delivered) == 2, slack_hook.received
    assert all(block_kit_problems(body) == [] for body in slack_hook.delivered)
    assert "Backup completed" in json.dumps(slack_hook.delivered[0])
    assert "Backup failed" in json.dumps(slack_hook.delivered[1])


def slack_config(tmp_path: Path, env: dict[str, str], hook: SlackHook) -> dict[str, str]:
    """The config file's Slack section with its default events (``on: [failure]``)."""
    (tmp_path / "safehold.yaml").write_text(
        "notifications:\n  slack:\n    webhook_url_env: TEST_SLACK_WEBHOOK\n")
    return {**env, "TEST_SLACK_WEBHOOK": hook.url}


def test_a_slot_the_daemon_does_not_run_is_a_slack_notice(tmp_path: Path, env: dict[str, str],
                                                          slack_hook: SlackHook) -> None:
    env = slack_config(tmp_path, env, slack_hook)
    add(tmp_path, env, "--full", "0 * * * *", "--missed", "skip")
    run("daemon", "--once", env=at(env, "2026-12-01T13:00:05+00:00"))
    assert slack_hook.received == []  # a success is not asked for
    # down from 13:00 to 15:30: the 15:00 slot is half an hour late, past the 5-minute grace
    run("daemon", "--once", env=at(env, "2026-12-01T15:30:00+00:00"))
    assert records(env)[0]["outcome"] == "skipped"
    [skipped] = slack_hook.delivered
    text = json.dumps(skipped)
    assert "Scheduled backup not run: nightly (full)" in skipped["text"], text
    assert "slot 2026-12-01T15:00:00+00:00 was not run: missed (policy skip" in text
    assert "1 earlier slot(s) missed too" in text and "schedule run-now nightly" in text

    # a slot left running by a process that died (no live owner): interrupted, then not run
    # again because it is past --grace
    store = Store(tmp_path / "state" / "schedules.db")
    assert store.claim("nightly", "full", datetime(2026, 12, 1, 16, tzinfo=UTC), "running")
    run("daemon", "--once", env=at(env, "2026-12-01T16:30:00+00:00"))
    assert records(env)[0]["outcome"] == "not-rerun"
    assert len(slack_hook.delivered) == 2
    text = json.dumps(slack_hook.delivered[1])
    assert "slot 2026-12-01T16:00:00+00:00 was not run: interrupted; not run again: missed" \
        " policy skip, later than --grace" in text, text
    assert all(block_kit_problems(body) == [] for body in slack_hook.delivered)

    # a paused schedule skips its slots on purpose: recorded, no notice
    run("schedule", "pause", "nightly", env=env)
    run("daemon", "--once", env=at(env, "2026-12-01T17:00:05+00:00"))
    assert records(env)[0]["outcome"] == "skipped"
    assert len(slack_hook.received) == 2


def test_a_failed_retention_is_recorded_and_a_slack_notice(tmp_path: Path, env: dict[str, str],
                                                           slack_hook: SlackHook) -> None:
    env = slack_config(tmp_path, env, slack_hook)
    add(tmp_path, env, "--full", "0 * * * *", "--keep-last", "1")
    run("daemon", "--once", env=at(env, "2026-12-01T13:00:05+00:00"))
    # the fault: the first backup's manifest is damaged; backups go on, the prune refuses
    next((tmp_path / "repo" / "app").glob("*/manifest.json")).write_text("garbage")
    failed = run("daemon", "--once", env=at(env, "2026-12-01T14:00:05+00:00"), ok=False)
    assert failed.exit_code == Exit.CORRUPT, failed.output
    record = records(env)[0]
    assert (record["outcome"], record["exit_code"]) == ("success", 0)  # the backup itself
    assert record["note"] == f"retention on app FAILED (exit {int(Exit.CORRUPT)})"
    [body] = slack_hook.delivered
    text = json.dumps(body)
    assert "failed to prune backups: app (full)" in body["text"], text
    assert "schedule nightly: retention on app failed (exit 4)" in text and "damaged" in text
    assert block_kit_problems(body) == []


def start_daemon(env: dict[str, str], now: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "safehold.cli", "daemon", "--interval", "1s"],
        env={**os.environ, **at(env, now)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)


def wait_until(what: str, ready: Any, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{what} never happened:\n{proc.communicate()[0].decode()}")
        time.sleep(0.1)


@pytest.mark.parametrize("policy", ["run-once", "skip"])
def test_a_daemon_killed_mid_backup_leaves_an_interrupted_slot_the_policy_handles(
        tmp_path: Path, env: dict[str, str], policy: str) -> None:
    """The daemon's backup holds the target's lease (a manual backup is refused with exit 11),
    then the daemon and its backup are killed (SIGKILL: no clean-up). The next daemon records
    the slot as interrupted; run-once runs it once more, skip (past --grace) does not."""
    env = {**env, "SAFEHOLD_LEASE_TTL": "3"}  # the killed backup's lease expires quickly
    db = add(tmp_path, env, "--full", "0 2 * * *", "--missed", policy)
    repo = tmp_path / "repo"
    store = Store(tmp_path / "state" / "schedules.db")
    with database_locked(db):
        proc = start_daemon(env, "2026-12-02T02:00:30+00:00")
        try:
            wait_until("the daemon's backup taking the lease",
                       lambda: (r := lease_of(repo)) is not None and not r.released, proc)
            manual = run("backup", "-t", f"sqlite://{db}", "-r", repo.as_uri(), env=env,
                         ok=False)
            assert manual.exit_code == Exit.LOCKED, manual.output
            assert "safehold backup" in manual.output and "--lock-wait" in manual.output
            assert [r["outcome"] for r in store.runs("nightly")] == ["running"]
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
    assert backups(tmp_path, env) == [] or all(
        b["type"] == "incomplete" for b in backups(tmp_path, env))

    # restarted within a minute (run-once) or an hour later (skip, past the 5-minute grace)
    later = "2026-12-02T02:01:00+00:00" if policy == "run-once" else "2026-12-02T03:00:00+00:00"
    run("daemon", "--once", "--lock-wait", "1m", env=at(env, later))
    [record] = records(env)
    complete = [b for b in backups(tmp_path, env) if b["type"] != "incomplete"]
    if policy == "run-once":
        assert (record["outcome"], record["attempts"], record["exit_code"]) == ("success", 2, 0)
        assert len(complete) == 1
    else:
        assert record["outcome"] == "not-rerun" and record["exit_code"] is None
        assert "interrupted" in record["note"] and "grace" in record["note"]
        assert complete == []
    text = run("schedule", "show", "nightly", env=env).output
    assert ("attempt 2" in text) if policy == "run-once" else ("interrupted" in text)
    run("daemon", "--once", env=at(env, "2026-12-02T03:00:30+00:00"))  # nothing more
    assert records(env) == [record]


def test_a_daemon_stopped_mid_backup_records_the_slot_interrupted_at_once(
        tmp_path: Path, env: dict[str, str]) -> None:
    """SIGTERM (systemctl stop) while a backup runs: the daemon stops it, records the slot as
    interrupted and exits 143; the next start runs the slot once more (run-once)."""
    db = add(tmp_path, env, "--full", "0 2 * * *")
    store = Store(tmp_path / "state" / "schedules.db")
    with database_locked(db):
        proc = start_daemon(env, "2026-12-02T02:00:30+00:00")
        wait_until("the daemon's backup taking the lease",
                   lambda: (r := lease_of(tmp_path / "repo")) is not None and not r.released,
                   proc)
        proc.send_signal(signal.SIGTERM)
    # the database is free again: the backup sees its SIGTERM and stops cleanly
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 143, out
    [record] = store.runs("nightly")
    assert (record["outcome"], record["note"]) == (
        "interrupted", "the daemon was stopped (Terminated)"), out
    run("daemon", "--once", env=at(env, "2026-12-02T02:01:00+00:00"))
    assert [(r["outcome"], r["attempts"]) for r in records(env)] == [("success", 2)]
    assert len([b for b in backups(tmp_path, env) if b["type"] != "incomplete"]) == 1
