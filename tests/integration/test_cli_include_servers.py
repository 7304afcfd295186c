"""`restore --include` against real PostgreSQL: names are checked against the backup's own table
list before anything is created, and `-i` lists the tables with their sizes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.api.errors import Exit
from tests.infra.postgres import PASSWORD, Postgres
from tests.integration.cli_helpers import run, run_json


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_NO_ENCRYPTION": "1", "SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"),
            "SAFEHOLD_KEY_FILE": "", "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "",
            "PGPASSWORD": "", "SAFEHOLD_PASSWORD": PASSWORD}


@pytest.fixture
def source(pg18: Postgres) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg18.psql(f'CREATE DATABASE "{name}"')
    pg18.psql("CREATE TABLE customers (id int PRIMARY KEY, name text);"
                   " INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 500) g;"
                   " CREATE TABLE orders (id int PRIMARY KEY)", db=name)
    yield name
    pg18.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def url(pg: Postgres, db: str) -> str:
    return f"postgresql://postgres@{pg.host}:{pg.port}/{db}"


def databases(pg: Postgres) -> str:
    return pg.psql("SELECT string_agg(datname, ',') FROM pg_database")


def test_an_unknown_table_is_refused_before_the_database_is_created(
        pg18: Postgres, source: str, tmp_path: Path, env: dict[str, str]) -> None:
    repo = (tmp_path / "repo").as_uri()
    run_json("backup", "-t", url(pg18, source), "-r", repo, env=env)
    new = f"n_{uuid.uuid4().hex[:12]}"
    result = run("restore", "-r", repo, "-b", "latest", "-t", url(pg18, new),
                 "--include", "customer,orders", env=env, ok=False)
    assert result.exit_code == Exit.USAGE, result.output
    assert "no table 'customer' (did you mean 'public.customers'?)" in result.output
    assert new not in databases(pg18)


def test_interactive_restore_lists_tables_with_sizes(
        pg18: Postgres, source: str, tmp_path: Path, env: dict[str, str]) -> None:
    repo = (tmp_path / "repo").as_uri()
    run_json("backup", "-t", url(pg18, source), "-r", repo, env=env)
    new = f"n_{uuid.uuid4().hex[:12]}"
    result = run("restore", "-i", "-r", repo, "-t", url(pg18, new), "--from", source,
                 input="1\npublic.customers\nn\n", env=env, ok=False)
    assert result.exit_code == Exit.ABORTED, result.output
    assert "Tables:" in result.output and "public.customers" in result.output
    assert "KiB" in result.output and "schema.pre" not in result.output
