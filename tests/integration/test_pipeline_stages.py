"""Per-stage timings on real runs (SQLite, PostgreSQL 18): every stage is reported, in JSON and
in the text's last line, and the figures add up within what the threads could have spent.

No assertion depends on speed: a stage's thread-seconds are bounded by the wall time times the
threads that run it, whatever the machine's load.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.postgres import PASSWORD, Postgres
from tests.integration import pg_data
from tests.integration.cli_helpers import make_db, run, run_json
from tests.integration.stage_helpers import check_figures, pg_streams


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    key = tmp_path / "key"
    run("keys", "generate", "--out", str(key))
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": str(key),
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "PGPASSWORD": "",
            "SAFEHOLD_PASSWORD": PASSWORD}


def test_sqlite_backup_and_restore_report_every_stage(tmp_path: Path,
                                                      env: dict[str, str]) -> None:
    db, repo = tmp_path / "app.db", (tmp_path / "repo").as_uri()
    make_db(db, rows=20000)
    backup = run_json("backup", "-t", f"sqlite://{db}", "-r", repo, env=env)
    check_figures(backup["pipeline"], "backup", streams=1)
    text = run("backup", "-t", f"sqlite://{db}", "-r", repo, env=env).stdout
    assert text.strip().splitlines()[-1].startswith("bottleneck: ")
    out = tmp_path / "restored.db"
    restored = run_json("restore", "-r", repo, "-b", backup["backup_id"], "--from", "app",
                        "-t", f"sqlite://{out}", "--yes", env=env)
    check_figures(restored["pipeline"], "restore", streams=1)
    text = run("restore", "-r", repo, "-b", "latest", "--from", "app", "-t", f"sqlite://{out}",
               "--yes", env=env).stdout
    assert text.strip().splitlines()[-1].startswith("bottleneck: ")
    plain = (tmp_path / "plain").as_uri()  # unencrypted: both hash what they store and read
    unsealed = run_json("backup", "-t", f"sqlite://{db}", "-r", plain, "--no-encryption",
                        env=env)
    check_figures(unsealed["pipeline"], "backup", streams=1, encrypted=False)
    restored = run_json("restore", "-r", plain, "-b", "latest", "--from", "app",
                        "-t", f"sqlite://{out}", "--yes", env=env)
    check_figures(restored["pipeline"], "restore", streams=1, encrypted=False)


@pytest.fixture
def pg_db(pg18: Postgres) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg18.psql(f'CREATE DATABASE "{name}"')
    yield name
    for db in (name, name + "_copy"):
        pg18.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_postgres_backup_and_restore_report_every_stage(pg18: Postgres, pg_db: str,
                                                        tmp_path: Path,
                                                        env: dict[str, str]) -> None:
    pg_data.build(pg18, pg_db)
    repo = (tmp_path / "repo").as_uri()
    source = f"postgresql://postgres@{pg18.host}:{pg18.port}/{pg_db}"
    backup = run_json("backup", "-t", source, "-r", repo, "--jobs", "2", env=env)
    check_figures(backup["pipeline"], "backup", streams=pg_streams(2))
    copy = f"postgresql://postgres@{pg18.host}:{pg18.port}/{pg_db}_copy"
    restored = run_json("restore", "-r", repo, "-b", backup["backup_id"], "--from",
                        backup["target"], "-t", copy, "--jobs", "2", "--yes", env=env)
    check_figures(restored["pipeline"], "restore", streams=pg_streams(2))
    assert pg_data.fingerprint(pg18, pg_db + "_copy") == pg_data.fingerprint(pg18, pg_db)
