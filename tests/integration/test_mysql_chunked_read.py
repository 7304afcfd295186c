"""Tables read in key-range chunks (engines/mysql/rows.py, chunked_statements) against the real
MariaDB 10.11: every row exactly once whatever the keys' spread (dense, sparse, dense after a
gap, the extremes of signed and unsigned BIGINT), chunks the server cut at max_allowed_packet
read again smaller, and a row longer than that limit named instead of lost (GROUP_CONCAT skips
a NULL without an error)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from safehold.api.errors import Exit
from safehold.engines.base import ConnectionOptions, EngineError
from safehold.engines.mysql import rows
from safehold.engines.mysql.catalog import Table, read_catalog
from safehold.engines.mysql.clientread import ClientSession, find_client
from safehold.engines.mysql.conn import parse_target
from safehold.engines.mysql.rows import RowStats, chunked_statements
from tests.infra.mariadb import MariaDB
from tests.integration import mysql_data as data
from tests.integration.cli_helpers import run, run_json

SIGNED_MIN, SIGNED_MAX, UNSIGNED_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1
# names reach the chunk statements backquoted, and %-formatted by PyMySQL with the arguments
NAME = "ch\nunk `table' %s"
KEY = "k;e`y%"
TABLES = {
    # name: (key type, keys)
    "dense": ("INT", list(range(1, 3001))),
    "holes": ("INT", [k for k in range(1, 4001) if k % 7]),  # dense, with gaps
    "sparse": ("BIGINT", [k * 1_000_003 for k in range(1, 1501)]),
    "dense_gap_dense": ("BIGINT", [*range(1, 801), *range(10**15, 10**15 + 800)]),
    "signed_ends": ("BIGINT", [SIGNED_MIN, SIGNED_MIN + 1, -5, 0, 5, SIGNED_MAX - 1,
                               SIGNED_MAX]),
    "unsigned_ends": ("BIGINT UNSIGNED", [0, 1, 1 << 63, UNSIGNED_MAX - 1, UNSIGNED_MAX]),
    NAME: ("TINYINT", list(range(-128, 128))),
}


def q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def value(k: int) -> str:
    """A row's text: newlines, quotes, backslashes, NUL and non-ASCII, its length varying."""
    return f"row {k} 'q' \\ \n\x00 ü😀 " + "x" * (k % 97)


@pytest.fixture(scope="module")
def db(mariadb_server: MariaDB) -> Iterator[str]:
    name = f"chunks_{uuid.uuid4().hex[:8]}"
    mariadb_server.sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    conn = data.connect(mariadb_server, name)
    with conn.cursor() as cur:
        for table, (kind, keys) in TABLES.items():
            cur.execute(f"CREATE TABLE {q(table)} ({q(KEY)} {kind} PRIMARY KEY, v TEXT,"
                        " n DECIMAL(20))")
            cur.executemany(f"INSERT INTO {q(table).replace('%', '%%')} VALUES (%s, %s, %s)",
                            [(k, value(k), None if k % 3 else k) for k in keys])
    conn.close()
    yield name
    mariadb_server.sql(f"DROP DATABASE {name}")


@contextlib.contextmanager
def snapshot(server: MariaDB, db: str) -> Iterator[Any]:
    """A connection as the dump's: streaming, in a consistent snapshot."""
    conn = data.connect(server, db, cursorclass=pymysql.cursors.SSCursor)
    with conn.cursor() as cur:
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
    try:
        yield conn
    finally:
        with contextlib.suppress(pymysql.err.Error):  # a failed read abandons it
            conn.close()


def catalog_table(conn: Any, db: str, name: str) -> Table:
    found = {t.name: t for t in read_catalog(conn, db).tables}
    return found[name]


def load_copy(server: MariaDB, db: str, table: Table, statements: list[bytes]) -> str:
    """The statements run into an empty copy of ``table``; its CHECKSUM TABLE."""
    copy = Table(f"copy_{uuid.uuid4().hex[:8]}", table.engine, table.columns)
    prefix, into = rows.insert_prefix(table), rows.insert_prefix(copy)
    conn = data.connect(server, db)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {q(copy.name)} LIKE {q(table.name)}")
        for statement in statements:
            assert statement.startswith(prefix) and statement.endswith(b";\n")
            assert statement.count(b"\n") == 1 + NAME.count("\n") * (table.name == NAME)
            cur.execute(into + statement[len(prefix):])
        cur.execute(f"CHECKSUM TABLE {q(copy.name)}")
        checksum = cur.fetchone()[1]
        cur.execute(f"DROP TABLE {q(copy.name)}")
    conn.close()
    return str(checksum)


def checksum(server: MariaDB, db: str, table: str) -> str:
    return server.sql(f"CHECKSUM TABLE {q(db)}.{q(table)}").split("\t")[-1]


@pytest.mark.parametrize("name", list(TABLES))
def test_every_row_once_whatever_the_keys(mariadb_server: MariaDB, db: str, name: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Small chunks (2 kB) so that each table is many, the dense ones by key count, the sparse
    ones by looking up each chunk's end (seen in the statements run); loaded into a copy, the
    rows are exactly the table's."""
    ran: list[str] = []
    real_run = rows.run

    def spy(conn: Any, sql: str | bytes, args: Any = None) -> Any:
        ran.append(sql if isinstance(sql, str) else sql.decode())
        return real_run(conn, sql, args)

    monkeypatch.setattr(rows, "run", spy)
    with snapshot(mariadb_server, db) as conn:
        table = catalog_table(conn, db, name)
        assert table.key == KEY
        stats = RowStats()
        statements = list(chunked_statements(conn, table, stats, chunk_bytes=2000))
    keys = TABLES[name][1]
    assert stats.rows == len(keys)
    assert stats.statements == len(statements) > (1 if len(keys) > 10 else 0)
    assert load_copy(mariadb_server, db, table, statements) == checksum(mariadb_server, db, name)
    lookups = [s for s in ran if "LIMIT 1 OFFSET" in s]
    if name in ("dense", "holes"):
        assert not lookups  # a count of keys is each chunk's range
    if name in ("sparse", "signed_ends", "unsigned_ends"):
        assert lookups  # counted ranges would be empty


def test_chunks_cut_at_max_allowed_packet_are_read_again_smaller(
        mariadb_server: MariaDB, db: str) -> None:
    """With max_allowed_packet at 16 kB GROUP_CONCAT cuts the first chunks (only a warning);
    the count of row ends tells, and the rows come back whole in smaller chunks."""
    with packet_limit(mariadb_server, 16384), snapshot(mariadb_server, db) as conn:
        table = catalog_table(conn, db, "dense")
        stats = RowStats()
        statements = list(chunked_statements(conn, table, stats))
    assert stats.rows == 3000
    assert max(len(s) for s in statements) < 16384
    assert load_copy(mariadb_server, db, table, statements) == checksum(mariadb_server, db,
                                                                        "dense")


def test_a_value_longer_than_max_allowed_packet_fails_the_table(mariadb_server: MariaDB,
                                                                db: str) -> None:
    """Rendering a value over the limit gives NULL and only a warning (the old row-by-row
    dump stored such a value as NULL); GROUP_CONCAT then skips the row. The chunk's warning
    fails the table, naming the limit and the fix."""
    mariadb_server.sql(f"CREATE TABLE {db}.wide (id INT PRIMARY KEY, v LONGTEXT)")
    mariadb_server.sql(f"INSERT INTO {db}.wide VALUES (1, 'a'), (2, REPEAT('b', 40000)),"
                       " (3, 'c')")
    try:
        with packet_limit(mariadb_server, 16384), snapshot(mariadb_server, db) as conn:
            table = catalog_table(conn, db, "wide")
            with pytest.raises(EngineError, match=TOO_LONG):
                list(chunked_statements(conn, table, RowStats()))
    finally:
        mariadb_server.sql(f"DROP TABLE {db}.wide")


TOO_LONG = (r"table 'wide\w*': the server changed values while reading them, so the backup"
            r" stopped: 1301: Result of \w+\(\) was larger than max_allowed_packet \(16384\)"
            r".*raise max_allowed_packet with SET GLOBAL")


@pytest.mark.parametrize("reader", ["driver", "client"])
def test_row_by_row_readers_fail_a_value_over_max_allowed_packet(mariadb_server: MariaDB,
                                                                 db: str, reader: str) -> None:
    """The same for a table read row by row (its key is text), by PyMySQL and by the client."""
    mariadb_server.sql(f"CREATE TABLE {db}.wide_text (code VARCHAR(5) PRIMARY KEY, v LONGTEXT)")
    mariadb_server.sql(f"INSERT INTO {db}.wide_text VALUES ('a', 'a'), ('b', REPEAT('b', 40000))")
    try:
        with packet_limit(mariadb_server, 16384), snapshot(mariadb_server, db) as conn:
            table = catalog_table(conn, db, "wide_text")
            assert table.key is None
            if reader == "driver":
                statements = rows.insert_statements(conn, table, RowStats())
            else:
                client = find_client()
                assert client
                target = parse_target(f"mariadb://{mariadb_server.user}@{mariadb_server.host}:"
                                      f"{mariadb_server.port}/{db}",
                                      ConnectionOptions(password=mariadb_server.password))
                session = ClientSession(target, client)
                statements = session.statements(table, RowStats())
            try:
                with pytest.raises(EngineError, match=TOO_LONG):
                    list(statements)
            finally:
                if reader == "client":
                    session.close()
    finally:
        mariadb_server.sql(f"DROP TABLE {db}.wide_text")


def test_tables_without_an_integer_key_are_read_row_by_row(mariadb_server: MariaDB,
                                                           db: str) -> None:
    mariadb_server.sql(f"CREATE TABLE {db}.texty (code VARCHAR(9) PRIMARY KEY, v INT)")
    mariadb_server.sql(f"CREATE TABLE {db}.pair (a INT, b INT, PRIMARY KEY (a, b))")
    mariadb_server.sql(f"CREATE TABLE {db}.keyless (a INT)")
    try:
        with snapshot(mariadb_server, db) as conn:
            found = {t.name: t.key for t in read_catalog(conn, db).tables}
        assert found["texty"] is None and found["pair"] is None and found["keyless"] is None
        assert found["dense"] == KEY
    finally:
        mariadb_server.sql(f"DROP TABLE {db}.texty, {db}.pair, {db}.keyless")


@contextlib.contextmanager
def packet_limit(server: MariaDB, size: int) -> Iterator[None]:
    """The server's max_allowed_packet for the connections opened meanwhile."""
    before = server.sql("SELECT @@GLOBAL.max_allowed_packet")
    server.sql(f"SET GLOBAL max_allowed_packet = {size}")
    try:
        yield
    finally:
        server.sql(f"SET GLOBAL max_allowed_packet = {before}")


def test_a_non_transactional_table_is_read_by_one_statement(mariadb_server: MariaDB,
                                                            db: str) -> None:
    """MyISAM is outside the snapshot: one SELECT (its table lock) keeps its rows consistent,
    chunks could see a row move between them. It is read row by row, whole."""
    mariadb_server.sql(f"CREATE TABLE {db}.loose (id INT PRIMARY KEY, v TEXT) ENGINE=MyISAM")
    mariadb_server.sql(f"INSERT INTO {db}.loose SELECT seq, REPEAT('v', seq MOD 50)"
                       f" FROM {db}.seq_1_to_3000")
    try:
        with snapshot(mariadb_server, db) as conn:
            table = catalog_table(conn, db, "loose")
            assert table.key == "id" and not table.chunkable
            stats = RowStats()
            statements = list(chunked_statements(conn, table, stats, chunk_bytes=2000))
        assert stats.rows == 3000 and len(statements) == 1  # one statement's rows: < 1 MiB
        assert load_copy(mariadb_server, db, table, statements) == checksum(mariadb_server, db,
                                                                            "loose")
    finally:
        mariadb_server.sql(f"DROP TABLE {db}.loose")


@pytest.mark.parametrize("reader", ["driver", "client"])
def test_a_backup_with_a_value_over_the_limit_fails_whole(mariadb_server: MariaDB, db: str,
                                                          reader: str,
                                                          tmp_path_factory: pytest.TempPathFactory,
                                                          ) -> None:
    """Through the CLI, the chunks read ahead on their own thread: the failure still reaches
    the backup, which ends with the fix named and leaves only an incomplete backup."""
    mariadb_server.sql(f"CREATE TABLE {db}.wide (id INT PRIMARY KEY, v LONGTEXT)")
    mariadb_server.sql(f"INSERT INTO {db}.wide SELECT seq, IF(seq = 1500, REPEAT('b', 40000),"
                       f" 'a') FROM {db}.seq_1_to_3000")
    env = data.cli_env(tmp_path_factory.mktemp("cfg"), mariadb_server)
    repo = tmp_path_factory.mktemp("repo")
    url = (f"mariadb://{mariadb_server.user}@{mariadb_server.host}:{mariadb_server.port}/{db}"
           f"?reader={reader}")
    try:
        with packet_limit(mariadb_server, 16384):
            result = run("backup", "-t", url, "-r", repo.as_uri(), "--jobs", "2", env=env,
                         ok=False)
        assert result.exit_code == Exit.DATABASE, result.output
        assert "table 'wide': the server changed values while reading them" in result.output
        assert "raise max_allowed_packet" in result.output
        listed = run_json("list", "-r", repo.as_uri(), env=env)
        assert [b["type"] for b in listed["backups"]] == ["incomplete"], listed
    finally:
        mariadb_server.sql(f"DROP TABLE {db}.wide")
