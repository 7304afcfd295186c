"""PostgreSQL: verify before apply. A restore (whole, or selective with --conflict replace) of a
backup whose largest object is damaged late, forged, or cut off by the storage fails with the
exit code naming the cause and leaves the target database as it was: rows, indexes,
constraints, sequences, settings (see atomic_helpers for the faults)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.postgres import PASSWORD, Postgres
from tests.integration import atomic_helpers, pg_data
from tests.integration.atomic_helpers import (
    Repo,
    backup,
    cli_env,
    damage,
    dumps,
    largest,
    restore_fails,
)
from tests.integration.cli_helpers import run

fault = atomic_helpers.fault  # fixtures
repo = atomic_helpers.repo

SCHEMA = """
CREATE SEQUENCE ticket_seq;
CREATE TABLE kind (id int PRIMARY KEY, name text UNIQUE NOT NULL);
INSERT INTO kind VALUES (1, 'a'), (2, 'b');
CREATE TABLE big (id bigint PRIMARY KEY DEFAULT nextval('ticket_seq'),
                  kind int NOT NULL REFERENCES kind (id),
                  v text NOT NULL CHECK (length(v) > 0));
CREATE INDEX big_v ON big (v);
INSERT INTO big (kind, v) SELECT 1 + i % 2, md5(i::text) || md5((i * 7)::text)
  FROM generate_series(1, 40000) i;
CREATE TABLE other (id serial PRIMARY KEY, note text);
INSERT INTO other (note) SELECT 'n' || i FROM generate_series(1, 300) i;
ALTER DATABASE {db} SET work_mem = '7MB';
"""
CHANGE = """
UPDATE big SET v = 'changed ' || id WHERE id % 10 = 0;
DELETE FROM big WHERE id > 39000;
SELECT nextval('ticket_seq') FROM generate_series(1, 5);
INSERT INTO other (note) VALUES ('after the backup');
CREATE INDEX other_note ON other (note);
"""


@pytest.fixture
def database(pg18: Postgres) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg18.psql(f'CREATE DATABASE "{name}"')
    yield name
    pg18.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "",
            "SAFEHOLD_NO_ENCRYPTION": "1", "PGPASSWORD": "",
            "SAFEHOLD_PASSWORD": PASSWORD}


def snapshot(pg: Postgres, db: str) -> str:
    """Everything a failed restore must not change, as comparable text."""
    conn = pg_data.connect(pg, db)
    try:
        with conn.cursor() as cur:
            def rows(query: str) -> list[Any]:
                cur.execute(query)
                return [list(r) for r in cur.fetchall()]

            tables = rows("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
                          " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
                          " ORDER BY 1")
            content = {t: rows(f"SELECT count(*), md5(coalesce(string_agg(x::text, '|'"
                               f" ORDER BY x::text), '')) FROM {t} x")
                       for (t,) in tables}
            return dumps({
                "tables": content,
                "indexes": rows("SELECT tablename, indexname, indexdef FROM pg_indexes"
                                " WHERE schemaname = 'public' ORDER BY 1, 2"),
                "constraints": rows("SELECT conrelid::regclass::text, conname,"
                                    " pg_get_constraintdef(oid) FROM pg_constraint"
                                    " WHERE connamespace = 'public'::regnamespace"
                                    " ORDER BY 1, 2"),
                "sequences": rows("SELECT sequencename, last_value FROM pg_sequences"
                                  " WHERE schemaname = 'public' ORDER BY 1"),
                "defaults": rows("SELECT adrelid::regclass::text, pg_get_expr(adbin, adrelid)"
                                 " FROM pg_attrdef ORDER BY 1, 2"),
                "settings": rows("SELECT setconfig FROM pg_db_role_setting s JOIN pg_database"
                                 " d ON d.oid = s.setdatabase WHERE d.datname ="
                                 " current_database()"),
                "oid": rows("SELECT oid FROM pg_database WHERE datname = current_database()"),
            })
    finally:
        conn.close()


@pytest.mark.parametrize("include", [["public.big"], None], ids=["selective", "whole"])
def test_a_failing_stream_changes_nothing(pg18: Postgres, database: str, repo: Repo,
                                          fault: str, include: list[str] | None,
                                          env: dict[str, str], tmp_path: Path) -> None:
    pg, db = pg18, database
    pg.psql(SCHEMA.format(db=db), db=db)
    url = f"postgresql://postgres@{pg.host}:{pg.port}/{db}"
    env = cli_env(env, repo, fault, tmp_path)
    manifest = backup(url, repo, env, fault)
    pg.psql(CHANGE, db=db)
    before = snapshot(pg, db)
    damage(repo, manifest, largest(manifest, lambda n: n.startswith("data/")), fault)
    restore_fails(url, repo, env, fault, include)
    assert snapshot(pg, db) == before
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '%safehold%'") == "0"


HOSTILE_SETTINGS = {
    # A value chosen by the database's owner: with commas it used to be pasted as SQL.
    "application_name": "x', y; CREATE ROLE evil SUPERUSER; --",
    "search_path": ['odd"schema', "$$dollar$$", "semi;colon", "comma,inside", "public"],
    "safehold.note": "it's a $$value$$; with, commas",
}


def test_hostile_database_settings_survive_a_restore_as_values(
        pg18: Postgres, database: str, env: dict[str, str], tmp_path: Path) -> None:
    pg, db = pg18, database
    pg.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)", db=db)
    conn = pg_data.connect(pg, db)
    conn.autocommit = True
    with conn.cursor() as cur:
        from psycopg2 import sql

        for name, value in HOSTILE_SETTINGS.items():
            values = value if isinstance(value, list) else [value]
            cur.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                sql.Identifier(db), sql.Identifier(*name.split(".")),
                sql.SQL(", ").join(map(sql.Literal, values))))
    conn.close()
    stored = pg.psql("SELECT array_to_string(setconfig, E'\\n') FROM pg_db_role_setting s JOIN"
                     f" pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{db}'")
    url = f"postgresql://postgres@{pg.host}:{pg.port}/{db}"
    repo_url = (tmp_path / "repo").as_uri()
    run("backup", "-t", url, "-r", repo_url, env=env)
    run("restore", "-t", url, "-r", repo_url, "-b", "latest", "--yes", env=env)
    assert pg.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'evil'") == "0"
    after = pg.psql("SELECT array_to_string(setconfig, E'\\n') FROM pg_db_role_setting s JOIN"
                    f" pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{db}'")
    assert after == stored
    conn = pg_data.connect(pg, db)
    with conn.cursor() as cur:
        cur.execute("SHOW application_name")
        assert cur.fetchone()[0] == HOSTILE_SETTINGS["application_name"]
        cur.execute("SELECT current_setting('safehold.note')")
        assert cur.fetchone()[0] == HOSTILE_SETTINGS["safehold.note"]
    conn.close()


def test_a_standalone_sequence_keeps_or_gets_its_value(pg18: Postgres, database: str,
                                                       env: dict[str, str],
                                                       tmp_path: Path) -> None:
    """A table whose DEFAULT nextval() uses a sequence it does not own: restored into a
    database without the sequence, the sequence gets the backup's value; into one that has
    it, its value is kept (setval cannot be rolled back, so an existing one is never set)."""
    pg, db = pg18, database
    pg.psql("CREATE SEQUENCE ticket_seq; CREATE TABLE big (id bigint PRIMARY KEY DEFAULT"
            " nextval('ticket_seq'), v text); INSERT INTO big (v) SELECT 'v' || i FROM"
            " generate_series(1, 50) i", db=db)
    url = f"postgresql://postgres@{pg.host}:{pg.port}"
    repo_url = (tmp_path / "repo").as_uri()
    run("backup", "-t", f"{url}/{db}", "-r", repo_url, env=env)
    fresh = f"{db}_fresh"
    try:
        run("restore", "-t", f"{url}/{fresh}", "-r", repo_url, "-b", "latest", "--from", db,
            "--include", "big", env=env)
        assert pg.psql("SELECT last_value FROM ticket_seq", db=fresh) == "50"
        pg.psql("INSERT INTO big (v) VALUES ('next')", db=fresh)  # no collision
        pg.psql("SELECT nextval('ticket_seq') FROM generate_series(1, 10)", db=db)
        run("restore", "-t", f"{url}/{db}", "-r", repo_url, "-b", "latest", "--include",
            "big", "--conflict", "replace", env=env)
        assert pg.psql("SELECT last_value FROM ticket_seq", db=db) == "60"
        assert pg.psql("SELECT count(*) FROM big", db=db) == "50"
    finally:
        pg.psql(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')


def test_a_failed_selective_restore_leaves_no_database_it_created(
        pg18: Postgres, database: str, env: dict[str, str], tmp_path: Path) -> None:
    pg, db = pg18, database
    pg.psql(SCHEMA.format(db=db), db=db)
    url = f"postgresql://postgres@{pg.host}:{pg.port}"
    repo = Repo((tmp_path / "repo").as_uri(), local=tmp_path / "repo")
    manifest = backup(f"{url}/{db}", repo, env, "flip")
    damage(repo, manifest, largest(manifest, lambda n: n.startswith("data/")), "flip")
    fresh = f"{db}_fresh"
    restore_fails(f"{url}/{fresh}", repo, env, "flip", ["big"], "--from", db)
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{fresh}'") == "0"


@pytest.mark.parametrize("damaged", ["schema.pre", "schema.post"])
def test_a_damaged_schema_archive_fails_the_whole_restore_and_leaves_nothing(
        pg18: Postgres, database: str, env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, damaged: str) -> None:
    """The post-data archive is spooled and listed in a thread of its own while the staging
    database and the pre-data load; the pre-data loads in a thread of its own while the data
    archives are listed, which then wait for it. The damage of either still fails the restore
    before any data is applied, with the archive named, and the database, the staging
    database and the spool file are all gone or as they were."""
    pg, db = pg18, database
    pg.psql(SCHEMA.format(db=db), db=db)
    url = f"postgresql://postgres@{pg.host}:{pg.port}/{db}"
    repo = Repo((tmp_path / "repo").as_uri(), local=tmp_path / "repo")
    manifest = backup(url, repo, env, "flip")
    pg.psql(CHANGE, db=db)
    before = snapshot(pg, db)
    damage(repo, manifest, next(o for o in manifest["objects"] if o["name"] == damaged), "flip")
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spool))
    output = restore_fails(url, repo, env, "flip", None)
    assert damaged in output
    assert snapshot(pg, db) == before
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '%safehold%'") == "0"
    assert list(spool.iterdir()) == []
