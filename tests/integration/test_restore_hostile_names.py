"""Hostile names on every engine: tables/collections (and their columns, indexes, sequences)
named with quotes, backticks, ``$$``, semicolons, newlines, ``%`` and Unicode are backed up and
restored whole and selectively (--include) as names, never run as SQL, and nothing else
appears in the target."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pymysql
import pytest

from safehold.engines.mysql.quote import name as my_ident
from safehold.engines.postgres.quote import ident as pg_ident
from safehold.engines.sqlite.quote import ident as lite_ident
from tests.infra.mariadb import MariaDB
from tests.infra.postgres import PASSWORD, Postgres
from tests.integration import pg_data
from tests.integration.cli_helpers import run
from tests.integration.test_restore_atomic_mongodb import snapshot as mongo_snapshot
from tests.integration.test_restore_atomic_mysql import snapshot as my_snapshot
from tests.integration.test_restore_atomic_postgres import snapshot as pg_snapshot

NAMES = ['quo"te', "it's", "back`tick", "$$dollar$$", "semi;colon; DROP TABLE x",
         "new\nline", "ünïcødé ✓ Ключ", "per%cent %s"]
# MongoDB forbids '$' in collection names; FerretDB's SQLite backend fails on '"' in them
# (its own SQL: "SQL logic error"), so those run against real MongoDB only.
MONGO_NAMES = [n for n in NAMES if "$" not in n and '"' not in n]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "",
            "SAFEHOLD_NO_ENCRYPTION": "1", "PGPASSWORD": "", "MYSQL_PWD": ""}


def without(snapshot: str, *keys: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(snapshot)
    for key in keys:
        state.pop(key, None)
    return state


def test_postgres(pg18: Postgres, env: dict[str, str], tmp_path: Path) -> None:
    pg = pg18
    src, whole, part = (f"h_{uuid.uuid4().hex[:8]}{suffix}"
                        for suffix in ("", "_w'h\"o;le$$ ✓", "_part"))
    env = {**env, "SAFEHOLD_PASSWORD": PASSWORD}
    pg.psql(f'CREATE DATABASE "{src}"')
    try:
        conn = pg_data.connect(pg, src)
        with conn, conn.cursor() as cur:
            for i, n in enumerate(NAMES):
                t, seq = pg_ident(n), pg_ident(f"{n} seq")
                cur.execute(f"CREATE SEQUENCE {seq}; CREATE TABLE {t} (id int PRIMARY KEY"
                            f" DEFAULT nextval('{seq.replace(chr(39), chr(39) * 2)}'),"
                            f" {pg_ident(n + ' col')} text CHECK ({pg_ident(n + ' col')} <> ''));"
                            f" CREATE INDEX {pg_ident(n + ' idx')} ON {t} ({pg_ident(n + ' col')});"
                            f" INSERT INTO {t} ({pg_ident(n + ' col')}) SELECT {i} || ':' || g"
                            " FROM generate_series(1, 20) g")
        conn.close()
        url = f"postgresql://postgres@{pg.host}:{pg.port}/"
        repo = (tmp_path / "repo").as_uri()
        run("backup", "-t", url + src, "-r", repo, env=env)
        source = without(pg_snapshot(pg, src), "oid", "settings")
        run("restore", "-t", url + quote(whole, safe=""), "-r", repo, "-b", "latest",
            "--from", src, "--yes", env=env)
        assert without(pg_snapshot(pg, whole), "oid", "settings") == source
        run("restore", "-t", url + part, "-r", repo, "-b", "latest", "--from", src,
            "--include", ",".join(NAMES), env=env)
        assert without(pg_snapshot(pg, part), "oid", "settings") == source
        # and again over the restored tables (DROP of hostile names)
        run("restore", "-t", url + part, "-r", repo, "-b", "latest", "--from", src,
            "--include", ",".join(NAMES), "--conflict", "replace", env=env)
        assert without(pg_snapshot(pg, part), "oid", "settings") == source
    finally:
        for db in (src, whole, part):
            pg.psql(f"DROP DATABASE IF EXISTS {pg_ident(db)} WITH (FORCE)")


def test_mariadb(mariadb_server: MariaDB, env: dict[str, str], tmp_path: Path) -> None:
    server = mariadb_server
    src, whole, part = (f"h_{uuid.uuid4().hex[:8]}{suffix}"
                        for suffix in ("", "_w'h\"o;le$$ ✓`", "_part"))
    env = {**env, "SAFEHOLD_PASSWORD": server.password}
    server.sql(f"CREATE DATABASE {my_ident(src)} CHARACTER SET utf8mb4")
    conn = pymysql.connect(host=server.host, port=server.port, user=server.user,
                           password=server.password, database=src, charset="utf8mb4")
    try:
        with conn.cursor() as cur:  # (the mariadb client here would send names as latin1)
            for i, n in enumerate(NAMES):
                t, col = my_ident(n), my_ident(n + " col")
                cur.execute(f"CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, {col} TEXT,"
                            f" KEY {my_ident(n + ' idx')} ({col}(10)),"
                            f" CONSTRAINT {my_ident(n + ' chk')} CHECK ({col} <> ''))"
                            " CHARACTER SET utf8mb4")
                cur.execute(f"INSERT INTO {t} ({col}) SELECT CONCAT({i}, ':', seq)"
                            " FROM seq_1_to_20")
        conn.commit()
        conn.close()
        url = f"mariadb://{server.user}@{server.host}:{server.port}/"
        repo = (tmp_path / "repo").as_uri()
        run("backup", "-t", url + src, "-r", repo, env=env)

        def state(db: str) -> dict[str, Any]:
            return without(my_snapshot(server, db).replace(db, "DB"))

        source = state(src)
        run("restore", "-t", url + quote(whole, safe=""), "-r", repo, "-b", "latest",
            "--from", src, "--yes", env=env)
        assert state(whole) == source
        for conflict in ("fail", "replace"):
            run("restore", "-t", url + part, "-r", repo, "-b", "latest", "--from", src,
                "--include", ",".join(NAMES), "--conflict", conflict, env=env)
            assert state(part) == source
    finally:
        for db in (src, whole, part):
            server.sql(f"DROP DATABASE IF EXISTS {my_ident(db)}")


def test_mongodb(mongo_server: Any, mongo_db: Any, env: dict[str, str], tmp_path: Path) -> None:
    client = mongo_db.client
    for i, n in enumerate(MONGO_NAMES):
        mongo_db[n].insert_many([{"_id": j, "v": f"{n} {i}:{j}"} for j in range(20)])
        mongo_db[n].create_index("v", name=n + " idx")
    url = f"mongodb://127.0.0.1:{mongo_server.port}/"
    opts = "?directConnection=true"
    repo = (tmp_path / "repo").as_uri()
    run("backup", "-t", url + mongo_db.name + opts, "-r", repo, env=env)
    source = mongo_snapshot(mongo_db)
    whole, part = (f"r_{uuid.uuid4().hex[:8]}" for _ in range(2))
    try:
        run("restore", "-t", url + whole + opts, "-r", repo, "-b", "latest", "--from",
            mongo_db.name, "--yes", env=env)
        assert mongo_snapshot(client[whole]) == source
        for conflict in ("fail", "replace"):
            run("restore", "-t", url + part + opts, "-r", repo, "-b", "latest", "--from",
                mongo_db.name, "--include", ",".join(MONGO_NAMES), "--conflict", conflict,
                env=env)
            assert mongo_snapshot(client[part]) == source
    finally:
        client.drop_database(whole)
        client.drop_database(part)


def test_sqlite(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "it's a \"db\"; $$ ✓.db"
    with sqlite3.connect(src) as conn:
        for i, n in enumerate(NAMES):
            t, col = lite_ident(n), lite_ident(n + " col")
            conn.execute(f"CREATE TABLE {t} (id INTEGER PRIMARY KEY AUTOINCREMENT, {col} TEXT"
                         f" CHECK ({col} <> ''))")
            conn.execute(f"CREATE INDEX {lite_ident(n + ' idx')} ON {t} ({col})")
            conn.executemany(f"INSERT INTO {t} ({col}) VALUES (?)",
                             [(f"{i}:{j}",) for j in range(20)])

    def dump(path: Path) -> list[Any]:  # iterdump() itself breaks on such names
        with sqlite3.connect(path) as conn:
            schema = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"
                                  " ORDER BY type, name").fetchall()
            tables = [n for kind, n, _, _ in schema if kind == "table" and n != "sqlite_sequence"]
            seqs = conn.execute("SELECT name, seq FROM sqlite_sequence ORDER BY name").fetchall()
            return [schema, seqs, *(conn.execute(f"SELECT rowid, * FROM {lite_ident(t)}"
                                           " ORDER BY rowid").fetchall() for t in tables)]

    url = "sqlite://" + quote(str(src))
    repo = (tmp_path / "repo").as_uri()
    run("backup", "-t", url, "-r", repo, "--name", "hostile", env=env)
    whole = tmp_path / "whole.db"
    run("restore", "-t", "sqlite://" + str(whole), "-r", repo, "-b", "latest", "--from",
        "hostile", "--yes", env=env)
    assert dump(whole) == dump(src)
    part = tmp_path / "part.db"
    for conflict in ("fail", "replace"):
        run("restore", "-t", "sqlite://" + str(part), "-r", repo, "-b", "latest", "--from",
            "hostile", "--include", ",".join(NAMES), "--conflict", conflict, env=env)
        assert dump(part) == dump(src)
