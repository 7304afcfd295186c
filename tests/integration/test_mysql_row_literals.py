"""The dump's per-column SQL (engines/mysql/rows.py) skips work the column does not need (a NOT
NULL number's NULL test, a utf8mb4 or single-byte column's conversion, any newline escaping,
which values_list does over whole batches): against the real MariaDB 10.11 the dump's rows are
exactly the bytes of the general expressions, each value escaped by the server, for every type
and edge value the mixed-type test database holds plus NOT NULL, utf8mb4 and single-byte
columns. A single-byte column keeps its own bytes behind its introducer (``_latin1'...'``), so
there the server reads both literals back and the values must match."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from safehold.engines.mysql.catalog import (
    BINARY,
    GEOMETRY,
    NUMERIC,
    Column,
    Table,
    read_catalog,
)
from safehold.engines.mysql.conn import quote_name
from safehold.engines.mysql.rows import SINGLE_BYTE, literal, select_rows, values_list
from tests.infra.mariadb import MariaDB
from tests.integration import mysql_data as data

LEAN = """CREATE TABLE lean (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, t TINYINT NOT NULL,
  m MEDIUMINT NOT NULL, d DECIMAL(30,10) NOT NULL, dbl DOUBLE NOT NULL, y YEAR NOT NULL,
  dt DATE NOT NULL, dtm DATETIME(6) NOT NULL, ts TIMESTAMP(6) NULL, tm TIME(6),
  u VARCHAR(50) CHARACTER SET utf8mb4 NOT NULL, un TEXT CHARACTER SET utf8mb4,
  l VARCHAR(50) CHARACTER SET latin1, a VARCHAR(20) CHARACTER SET ascii)"""
LEAN_ROWS = [
    (18446744073709551615, -128, -8388608, "-12345678901234567890.0123456789", 0.1 + 0.2, 1901,
     "1000-01-01", "9999-12-31 23:59:59.999999", "1970-01-01 00:00:01.000000", "-838:59:59",
     "new\nline 'q' \\ 😀", None, "café\n", "plain"),
    (0, 127, 8388607, "0.0000000001", -1.7976931348623157e308, 2155, "2024-02-29",
     "2024-02-29 12:00:00.5", None, None, "", "\x00\r\n", None, None),
    (1, 0, 0, "0", 5e-324, 1970, "2000-01-01", "2000-01-01 00:00:00",
     "2038-01-19 03:14:07.999999", "00:00:00.000001", "NULL", "NULL", "NULL", "NULL"),
    # what the single-byte literals must escape: quotes, backslashes, NUL, ^Z, CR and LF
    (2, 1, 1, "1", 1.5, 2000, "2001-01-01", "2001-01-01 00:00:00", None, None, "x", None,
     "it's ñ \\ \x00\x1a\r\n'\"", "q'\\\"\x00\x1a\r\n;"),
]
_NO_NEWLINE = "REPLACE({}, '\\n', '\\\\n')"


@pytest.fixture(scope="module")
def database(mariadb_server: MariaDB) -> Iterator[str]:
    with data.database(mariadb_server, "lit", many_rows=200) as db:
        conn = data.connect(mariadb_server, db)
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(LEAN)
            cur.executemany(f"INSERT INTO lean VALUES ({', '.join(['%s'] * 14)})", LEAN_ROWS)
        conn.close()
        yield db


def general_literal(col: Column) -> str:
    """The one expression per type the dump used before it looked at charsets and NULLs: the
    oracle the lean ones must match byte for byte."""
    c = quote_name(col.name)
    if col.data_type in NUMERIC:
        return f"IFNULL({c}, 'NULL')"
    if col.data_type == "float":
        return f"IFNULL(CAST({c} AS DOUBLE), 'NULL')"
    if col.data_type == "bit":
        return f"IFNULL({c} + 0, 'NULL')"
    if col.data_type in BINARY:
        return f"IF({c} IS NULL, 'NULL', CONCAT('_binary', {_NO_NEWLINE.format(f'QUOTE({c})')}))"
    if col.data_type in GEOMETRY:
        return f"IF({c} IS NULL, 'NULL', CONCAT('0x', HEX({c})))"
    return _NO_NEWLINE.format(f"QUOTE(CONVERT({c} USING utf8mb4))")


def rendered(conn: Any, table: Table, render: Callable[[Column], str]) -> list[bytes]:
    """Every row of ``table`` rendered by the server alone with ``render``'s expressions, each
    value's newlines escaped by the server (the general form), sorted."""
    parts = ", ',', ".join(render(c) for c in table.columns)
    with conn.cursor() as cur:
        cur.execute(f"SELECT CAST(CONCAT('(', {parts}, ')') AS BINARY)"
                    f" FROM {quote_name(table.name)} ORDER BY 1")
        return [row[0] for row in cur.fetchall()]


def dumped(conn: Any, table: Table, render: Callable[[Column], str]) -> list[bytes]:
    """Every row of ``table`` as the dump writes it: the server renders the tuple and its
    ROW_END (the dump's statement), values_list escapes the newlines; sorted."""
    parts = ", ',', ".join(render(c) for c in table.columns)
    with conn.cursor() as cur:
        cur.execute(f"SELECT CONCAT('(', {parts}, ')', CAST(CHAR(0) AS BINARY))"
                    f" FROM {quote_name(table.name)}")
        return sorted(values_list(row[0], 1, lines=False) for row in cur.fetchall())


def test_lean_expressions_render_the_same_bytes(mariadb_server: MariaDB, database: str) -> None:
    conn = data.connect(mariadb_server, database)
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
    catalog = read_catalog(conn, database)
    lean = next(t for t in catalog.tables if t.name == "lean")
    assert {c.name: (c.charset, c.nullable) for c in lean.columns} == {
        "id": ("", False), "t": ("", False), "m": ("", False), "d": ("", False),
        "dbl": ("", False), "y": ("", False), "dt": ("", False), "dtm": ("", False),
        "ts": ("", True), "tm": ("", True), "u": ("utf8mb4", False), "un": ("utf8mb4", True),
        "l": ("latin1", True), "a": ("ascii", True)}
    shortened = {c.name for c in lean.columns if literal(c) != general_literal(c)}
    assert shortened == {"id", "t", "m", "d", "dbl", "y", "dt", "dtm", "ts", "tm", "u", "un",
                         "l", "a"}
    parts = ", ',', ".join(literal(c) for c in lean.columns)
    assert select_rows(lean) == (  # dumped() builds the dump's very statement
        f"SELECT CONCAT('(', {parts}, ')', CAST(CHAR(0) AS BINARY)) FROM `lean`")
    compared = own_bytes = 0
    for table in catalog.tables:
        if not table.columns:
            continue
        general = sorted(rendered(conn, table, general_literal))
        # byte for byte, but for the single-byte columns (their bytes differ, on purpose)
        assert dumped(conn, table, _bytes_comparable) == general, table.name
        lean_rows = dumped(conn, table, literal)
        if any(c.charset in SINGLE_BYTE for c in table.columns):
            assert evaluated(conn, lean_rows) == evaluated(conn, general), table.name
            own_bytes += sum(b"_latin1'" in row or b"_ascii'" in row for row in lean_rows)
        compared += len(lean_rows)
    assert compared > 200  # every table of the mixed-type database, rows included
    assert own_bytes >= 3  # the lean table's latin1 and ascii values went in as their own bytes
    conn.close()


def _bytes_comparable(col: Column) -> str:
    return general_literal(col) if col.charset in SINGLE_BYTE else literal(col)


def evaluated(conn: Any, rows: list[bytes]) -> list[str]:
    """What the server reads back from each rendered row (``SELECT <its literals>``), in a
    stable order: a literal's value, whatever bytes spelled it."""
    values = []
    with conn.cursor() as cur:
        for row in rows:
            cur.execute(b"SELECT " + row[1:-1])
            values.append(repr(cur.fetchone()))
    return sorted(values)
