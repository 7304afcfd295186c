"""Schedules of a multi-database target against a real PostgreSQL server: retention after each
run prunes exactly the repository targets the run wrote (each database's ``NAME@DB`` and the
roles' ``NAME@~globals``, never the bare ``NAME``), and a partial run (one database failing,
exit 12) is recorded as ``partial`` and still prunes the databases that succeeded. The clock
is pinned with SAFEHOLD_NOW (test-only)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from safehold.api.errors import Exit
from tests.infra import postgres
from tests.integration.cli_helpers import make_db, run, run_json

DBS = ("sched_alpha", "sched_beta")
T0 = "2026-12-01T12:00:00+00:00"


@pytest.fixture(scope="module")
def pg(pg15: postgres.Postgres) -> postgres.Postgres:
    for db in DBS:
        if not pg15.psql(f"SELECT 1 FROM pg_database WHERE datname = '{db}'"):
            pg15.psql(f'CREATE DATABASE "{db}"')
        pg15.psql("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, v text);"
                  f" INSERT INTO t SELECT g, '{db}' || g FROM generate_series(1, 200) g"
                  " ON CONFLICT DO NOTHING", db=db)
    return pg15


def setup(tmp_path: Path, pg: postgres.Postgres, databases: list[str], *,
          globals_: bool) -> dict[str, str]:
    """A config file naming target ``srv`` (several databases of ``pg``); the environment."""
    url = f"postgresql://postgres@{pg.host}:{pg.port}/postgres"
    (tmp_path / "safehold.yaml").write_text(
        f"targets:\n  srv: {{url: {json.dumps(url)}, databases: {json.dumps(databases)},"
        f" globals: {str(globals_).lower()}}}\n"
        f"audit: {{file: {json.dumps(str(tmp_path / 'audit.jsonl'))}}}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_NO_ENCRYPTION": "1",
            "SAFEHOLD_LOCK_WAIT": "", "SAFEHOLD_LEASE_TTL": "", "PGPASSWORD": "",
            "SAFEHOLD_PASSWORD": pg.password,
            "SAFEHOLD_SCHEDULE_STORE": str(tmp_path / "state" / "schedules.db")}


def at(env: dict[str, str], when: str) -> dict[str, str]:
    return {**env, "SAFEHOLD_NOW": when}


def per_target(tmp_path: Path, env: dict[str, str]) -> Counter[str]:
    rows: list[dict[str, Any]] = run_json("list", "-r", (tmp_path / "repo").as_uri(),
                                          env=env)["backups"]
    return Counter(str(r["target"]) for r in rows if r["type"] != "incomplete")


def latest(env: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = run_json("schedule", "show", "nightly", env=env)["runs"][0]
    return record


def test_retention_prunes_each_database_and_the_roles_and_nothing_else(
        pg: postgres.Postgres, tmp_path: Path) -> None:
    env = setup(tmp_path, pg, list(DBS), globals_=True)
    repo = (tmp_path / "repo").as_uri()
    # a bystander in the same repository: another target's three backups stay untouched
    make_db(tmp_path / "other.db", rows=10, tables=1)
    for _ in range(3):
        run("backup", "-t", f"sqlite://{tmp_path / 'other.db'}", "-r", repo, env=env)
    run("schedule", "add", "nightly", "-t", "srv", "-r", repo, "--full", "0 * * * *",
        "--keep-last", "2", env=at(env, T0))
    for hour in (13, 14, 15):
        run("daemon", "--once", env=at(env, f"2026-12-01T{hour}:00:05+00:00"))
    assert per_target(tmp_path, env) == {"srv@sched_alpha": 2, "srv@sched_beta": 2,
                                         "srv@~globals": 2, "other": 3}
    record = latest(env)
    assert (record["outcome"], record["exit_code"]) == ("success", 0)
    assert record["note"] == ("retention on srv@sched_alpha: 1 deleted; retention on"
                              " srv@sched_beta: 1 deleted; retention on srv@~globals: 1 deleted")
    # the audit log: one prune per run on each target the run wrote, none on the bare name
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    pruned = Counter(e["what"]["target"] for e in events if e["action"] == "prune")
    assert pruned == {"srv@sched_alpha": 3, "srv@sched_beta": 3, "srv@~globals": 3}, pruned


def test_a_partial_run_is_recorded_as_partial_and_prunes_what_succeeded(
        pg: postgres.Postgres, tmp_path: Path) -> None:
    env = setup(tmp_path, pg, ["sched_alpha", "sched_missing"], globals_=False)
    repo = (tmp_path / "repo").as_uri()
    run("schedule", "add", "nightly", "-t", "srv", "-r", repo, "--full", "0 * * * *",
        "--keep-last", "1", env=at(env, T0))
    for hour in (13, 14):
        partial = run("daemon", "--once", env=at(env, f"2026-12-01T{hour}:00:05+00:00"),
                      ok=False)
        assert partial.exit_code == Exit.PARTIAL, partial.output
    assert per_target(tmp_path, env) == {"srv@sched_alpha": 1}
    record = latest(env)
    assert (record["outcome"], record["exit_code"]) == ("partial", Exit.PARTIAL)
    assert record["note"] == "retention on srv@sched_alpha: 1 deleted"
    listed = run_json("schedule", "list", env=env)
    assert listed[0]["last"] == {"slot": "2026-12-01T14:00:00+00:00", "type": "full",
                                 "outcome": "partial", "exit_code": Exit.PARTIAL}
    assert "last partial (exit 12) full 2026-12-01T14:00:00+00:00" in run(
        "schedule", "list", env=env).output
    assert "full partial (exit 12) - retention on srv@sched_alpha" in run(
        "schedule", "show", "nightly", env=env).output
