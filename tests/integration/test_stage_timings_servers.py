"""Stage timings in the manifests of server backups: a physical PostgreSQL base backup and a
MariaDB full with its binlog incremental (real servers, through the real CLI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from safehold.pipeline.profile import BACKUP_STAGES
from tests.infra import mariadb, postgres
from tests.integration.cli_helpers import run, run_json


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An encrypted repository (a fresh key), no developer config."""
    (tmp_path / "safehold.yaml").write_text("{}\n")
    base = {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY": "",
            "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_KEY_FILE": "", "PGPASSWORD": "",
            "MYSQL_PWD": "", "SAFEHOLD_NO_ENCRYPTION": ""}
    run("keys", "generate", "--out", str(tmp_path / "kek"), env=base)
    return {**base, "SAFEHOLD_KEY_FILE": str(tmp_path / "kek")}


def pipeline_of(repo: Path, target: str, backup_id: str) -> dict[str, Any]:
    manifest = json.loads((repo / target / backup_id / "manifest.json").read_text())
    pipeline: dict[str, Any] = manifest["engine_meta"]["pipeline"]
    return pipeline


def check(pipeline: dict[str, Any]) -> None:
    assert pipeline["bottleneck"] in BACKUP_STAGES
    assert pipeline["stage_seconds"]["read"] > 0 and pipeline["stage_seconds"]["write"] > 0
    top = max(BACKUP_STAGES, key=lambda s: pipeline["stage_seconds"][s])
    assert pipeline["stage_seconds"][pipeline["bottleneck"]] == pipeline["stage_seconds"][top]


def insert(server: mariadb.MariaDB, db: str, ids: range, tag: str) -> None:
    values = ", ".join(f"({i}, '{tag} {i}')" for i in ids)
    server.sql(f"INSERT INTO `{db}`.t VALUES {values}")


def test_a_physical_postgresql_backup_records_its_stage_timings(
        pg15: postgres.Postgres, tmp_path: Path, env: dict[str, str]) -> None:
    repo = tmp_path / "repo"
    url = f"postgresql://{postgres.SUPERUSER}@{pg15.host}:{pg15.port}/postgres"
    full = run_json("backup", "-t", url, "-r", repo.as_uri(), "--name", "main",
                    "--method", "physical",
                    env={**env, "SAFEHOLD_PASSWORD": postgres.PASSWORD})
    assert full["method"] == "physical"
    check(pipeline_of(repo, "main", full["backup_id"]))
    assert run_json("verify", "-r", repo.as_uri(), env=env)["ok"] is True
    (app,) = run_json("stats", "-r", repo.as_uri(), env=env)["targets"]
    assert app["runs"][0]["bottleneck_stage"] == pipeline_of(repo, "main",
                                                             full["backup_id"])["bottleneck"]


def test_a_mariadb_full_and_binlog_incremental_record_their_stage_timings(
        mariadb_server: mariadb.MariaDB, mariadb_database: str, tmp_path: Path,
        env: dict[str, str]) -> None:
    server, db = mariadb_server, mariadb_database
    env = {**env, "SAFEHOLD_PASSWORD": server.password}
    url = f"mariadb://{server.user}@{server.host}:{server.port}/{db}"
    repo = tmp_path / "repo"
    server.sql(f"CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(40))")
    insert(server, db, range(1, 3001), "row")
    full = run_json("backup", "-t", url, "-r", repo.as_uri(), "--name", "m", env=env)
    insert(server, db, range(3001, 3501), "later")
    incr = run_json("backup", "-t", url, "-r", repo.as_uri(), "--name", "m",
                    "--type", "incremental", env=env)
    assert (full["type"], incr["type"]) == ("full", "incremental")
    for b in (full, incr):
        check(pipeline_of(repo, "m", b["backup_id"]))
    runs = run_json("stats", "-r", repo.as_uri(), env=env)["targets"][0]["runs"]
    assert [r["type"] for r in runs] == ["full", "incremental"]
    assert all(r["bottleneck_stage"] in BACKUP_STAGES for r in runs)
