"""Smoke: every relational fixture is a real server that stores and returns data."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import psycopg2
import pymysql

from tests.infra.mariadb import MariaDB
from tests.infra.postgres import Postgres

ROWS = [(1, "ascii", None), (2, "ünïcødé ✓", b"\x00\xff" * 10), (3, None, b"")]


def test_postgres_roundtrip(pg_server: Postgres, pg_database: str) -> None:
    conn = psycopg2.connect(host=pg_server.host, port=pg_server.port, user=pg_server.user,
                            password=pg_server.password, dbname=pg_database)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id int PRIMARY KEY, name text, data bytea)")
        cur.executemany("INSERT INTO t VALUES (%s, %s, %s)", ROWS)
        cur.execute("SELECT id, name, data FROM t ORDER BY id")
        got = [(i, n, bytes(d) if d is not None else None) for i, n, d in cur.fetchall()]
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0]
        cur.execute("SHOW wal_level")
        wal_level = cur.fetchone()[0]
    conn.close()
    assert got == ROWS
    assert version.startswith(str(pg_server.major))
    assert wal_level == "logical"
    # the bundled client tools match the server's major
    pg_dump = subprocess.run([pg_server.tool("pg_dump"), "--version"], capture_output=True,
                             text=True, check=True).stdout
    assert pg_dump.split()[-1].split(".")[0] == str(pg_server.major)


def test_postgres_refuses_wrong_password(pg_server: Postgres) -> None:
    try:
        psycopg2.connect(host=pg_server.host, port=pg_server.port, user=pg_server.user,
                         password="wrong", dbname="postgres").close()
    except psycopg2.OperationalError as exc:
        assert "password authentication failed" in str(exc)
    else:
        raise AssertionError("a wrong password was accepted")


def test_mariadb_roundtrip_with_row_binlog(mariadb_server: MariaDB, mariadb_database: str) -> None:
    conn = pymysql.connect(host=mariadb_server.host, port=mariadb_server.port,
                           user=mariadb_server.user, password=mariadb_server.password,
                           database=mariadb_database, charset="utf8mb4")
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, name TEXT, data BLOB) ENGINE=InnoDB")
        cur.executemany("INSERT INTO t VALUES (%s, %s, %s)", ROWS)
        conn.commit()
        cur.execute("SELECT id, name, data FROM t ORDER BY id")
        got = list(cur.fetchall())
        cur.execute("SELECT @@log_bin, @@binlog_format, VERSION()")
        log_bin, binlog_format, version = cur.fetchone()
        cur.execute("SHOW MASTER STATUS")
        binlog_file = cur.fetchone()[0]
    assert got == ROWS
    assert (log_bin, binlog_format) == (1, "ROW")
    assert version.startswith("10.11")
    assert binlog_file.startswith("binlog.")


def test_sqlite_roundtrip(sqlite_path: Path) -> None:
    with sqlite3.connect(sqlite_path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", ROWS)
    with sqlite3.connect(sqlite_path) as conn:
        got = conn.execute("SELECT id, name, data FROM t ORDER BY id").fetchall()
        version = conn.execute("SELECT sqlite_version()").fetchone()[0]
    assert got == ROWS
    assert version.startswith("3.")
