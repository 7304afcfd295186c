"""Table rows as SQL ``INSERT`` statements, one per line, formatted by the server.

The dump asks the server to render each row as a ready SQL tuple (``QUOTE``, ``HEX`` and
friends run in C inside mysqld), so the client only joins bytes: PyMySQL parses one column per
row instead of one per value. In the object every literal holds no raw newline, which makes
``\\n`` an unambiguous statement separator: a data object is a valid SQL script that
``mariadb db < object`` also loads, and the restore splits it without an SQL parser.

The server does not escape those newlines (a ``REPLACE`` per value cost it a third of its CPU
per row): each tuple ends in a NUL byte (:data:`ROW_END`), which no rendered value can hold
(``QUOTE`` writes NUL as ``\\0``), so the client finds the rows' ends, and then C-speed byte
operations over a whole batch (:func:`values_list`) turn every raw newline, all inside quoted
literals, into the two characters ``\\n``. An even run of backslashes precedes each (``QUOTE``
doubles them), so the bytes are exactly what escaping each value on the server wrote.

Exactness: text goes through utf8mb4 (every MySQL character set maps into it), except text in
a single-byte character set (latin1, ascii, cp1251 and the like), which keeps its own bytes
behind its introducer (``_latin1'...'``): converting it costs the server three times what
reading it does, and no byte of it can be taken for part of a UTF-8 character or for a quote or
backslash by the parser that reads the statement as utf8mb4. utf8mb4 text is quoted as bytes
(``QUOTE`` of its binary cast): every character ``QUOTE`` escapes is ASCII, and no byte of a
multi-byte UTF-8 character is, so the bytes are those of quoting it as text, and the byte loop
costs the server a fifth less than the character one (a test compares the two). Binary
strings are escaped bytes behind ``_binary``; FLOAT is widened to DOUBLE and DOUBLE printed in
its shortest round-trip form, so both re-read to the same bits; DECIMAL, temporal types (with their
fractional seconds; the session is in UTC) and BIT are printed exactly; geometry is hex of the
server's own format.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from safehold.engines.mysql.catalog import BINARY, GEOMETRY, NUMERIC, TEMPORAL, Column, Table
from safehold.engines.mysql.conn import classify, quote_name

BATCH_BYTES = 1 << 20  # one INSERT statement carries about this many bytes of rows
ROW_END = b"\0"  # ends every rendered tuple; never inside one (see the module text)
_END_SQL = "CAST(CHAR(0) AS BINARY)"
# MariaDB's and MySQL's character sets of one byte per character (information_schema's
# CHARACTER_SETS.MAXLEN = 1); any other set, known or not, is converted to utf8mb4
SINGLE_BYTE = frozenset({
    "armscii8", "ascii", "cp1250", "cp1251", "cp1256", "cp1257", "cp850", "cp852", "cp866",
    "dec8", "geostd8", "greek", "hebrew", "hp8", "keybcs2", "koi8r", "koi8u", "latin1",
    "latin2", "latin5", "latin7", "macce", "macroman", "swe7", "tis620"})


def literal(col: Column) -> str:
    """SQL expression rendering ``col`` as an SQL literal (``NULL`` for NULL).

    The server evaluates it for every value, so it does no more than the column needs: a NOT
    NULL number is its own literal, a utf8mb4 column needs no conversion (nor a single-byte
    one, which keeps its bytes behind its introducer), a date or time no newline escaping. The
    bytes are the general form's, and the single-byte literals' values are (a test compares).
    """
    c = quote_name(col.name)
    if col.data_type in NUMERIC:
        return f"IFNULL({c}, 'NULL')" if col.nullable else c
    if col.data_type == "float":
        return f"IFNULL(CAST({c} AS DOUBLE), 'NULL')"
    if col.data_type == "bit":
        return f"IFNULL({c} + 0, 'NULL')"
    if col.data_type in BINARY:
        return f"IF({c} IS NULL, 'NULL', CONCAT('_binary', QUOTE({c})))"
    if col.data_type in GEOMETRY:
        return f"IF({c} IS NULL, 'NULL', CONCAT('0x', HEX({c})))"
    if col.data_type in TEMPORAL:  # QUOTE(NULL) is NULL unquoted, as every literal here
        return f"QUOTE({c})"
    if col.charset in SINGLE_BYTE:  # its bytes as they are (binary: no conversion in CONCAT)
        own = f"CONCAT('_{col.charset}', CAST(QUOTE({c}) AS BINARY))"
        return f"IF({c} IS NULL, 'NULL', {own})" if col.nullable else own
    text = c if col.charset == "utf8mb4" else f"CONVERT({c} USING utf8mb4)"
    return f"QUOTE(CAST({text} AS BINARY))"  # bytes: see the module text


def select_rows(table: Table) -> str:
    """One column per row: the rendered tuple and :data:`ROW_END`, which is cast to binary so
    that the whole row is binary (a binary string wins over text in ``CONCAT``, a bare
    ``CHAR(0)`` would not): its bytes reach the client unconverted."""
    parts = ", ',', ".join(literal(c) for c in table.columns)
    return (f"SELECT CONCAT('(', {parts}, ')', {_END_SQL})"  # noqa: S608 - names through quote.name
            f" FROM {quote_name(table.name)}")


_END_TO_COMMA = bytes.maketrans(ROW_END, b",")


def values_list(body: bytes, rows: int, *, lines: bool) -> bytes:
    """The ``VALUES`` list of the ``rows`` rendered tuples in ``body``, raw newlines escaped.

    Each tuple in ``body`` ends in :data:`ROW_END`, followed by a newline when ``lines`` (as the
    client prints rows). Usually no value holds a newline: one ``translate`` then turns each
    row end into a comma and drops the client's newlines; otherwise the newlines inside values
    become ``\\n`` first (see the module text).
    """
    out = body.translate(_END_TO_COMMA, b"\n")
    if len(body) - len(out) != (rows if lines else 0):
        if lines:
            body = body.replace(ROW_END + b"\n", ROW_END)
        out = body.replace(b"\n", b"\\n").translate(_END_TO_COMMA)
    return out[:-1]


def insert_prefix(table: Table) -> bytes:
    columns = ",".join(quote_name(c.name) for c in table.columns)
    return f"INSERT INTO {quote_name(table.name)} ({columns}) VALUES ".encode()  # noqa: S608 - names through quote.name


@dataclass
class RowStats:
    rows: int = 0
    statements: int = 0


def insert_statements(conn: Any, table: Table, stats: RowStats,
                      batch_bytes: int = BATCH_BYTES) -> Iterator[bytes]:
    """Stream ``table`` (on the snapshot connection, unbuffered) as INSERT lines."""
    if not table.columns:
        return
    prefix = insert_prefix(table)
    cur = conn.cursor()
    try:
        cur.execute(select_rows(table))
        batch: list[bytes] = []
        size = 0
        while rows := cur.fetchmany(2000):
            for (row,) in rows:
                batch.append(row)
                size += len(row)
            if size >= batch_bytes:
                yield insert_statement(prefix, b"".join(batch), len(batch), stats, lines=False)
                batch, size = [], 0
        if batch:
            yield insert_statement(prefix, b"".join(batch), len(batch), stats, lines=False)
    except BaseException as exc:
        # Abandon the connection: closing an unbuffered cursor would first read (and discard)
        # the rest of the table.
        with contextlib.suppress(Exception):
            conn.close()
        if isinstance(exc, Exception):
            raise classify(exc) from exc
        raise
    cur.close()


def insert_statement(prefix: bytes, body: bytes, rows: int, stats: RowStats, *,
                     lines: bool) -> bytes:
    """One INSERT line of the ``rows`` rendered tuples in ``body`` (see :func:`values_list`),
    counted in ``stats``."""
    stats.rows += rows
    stats.statements += 1
    return prefix + values_list(body, rows, lines=lines) + b";\n"


def split_statements(blocks: Iterable[bytes], breaks_inside: int = 0) -> Iterator[bytes]:
    """The newline-terminated statements of a data object, whatever the block boundaries.

    Values never hold a raw newline (they are escaped), but names may: a backquoted identifier
    cannot escape one. ``breaks_inside`` is how many newlines the table's INSERT prefix holds
    (from its table and column names), so each statement is that many lines plus one.
    """
    group: list[bytes] = []
    for line in _lines(blocks):
        if not breaks_inside:
            if line:
                yield line
            continue
        group.append(line)
        if len(group) == breaks_inside + 1:
            yield b"\n".join(group)
            group = []
    if any(group):
        raise ValueError("data object ends inside a statement: it is truncated")


def _lines(blocks: Iterable[bytes]) -> Iterator[bytes]:
    pending: list[bytes] = []
    for block in blocks:
        start = 0
        while (end := block.find(b"\n", start)) != -1:
            piece = block[start:end]
            if pending:
                piece, pending = b"".join([*pending, piece]), []
            yield piece
            start = end + 1
        if start < len(block):
            pending.append(block[start:])
    if any(p.strip() for p in pending):
        raise ValueError("data object ends inside a statement: it is truncated")


def prefix_breaks(table: str, columns: Iterable[str]) -> int:
    """Newlines in the INSERT prefix of ``table`` with ``columns`` (see split_statements)."""
    return table.count("\n") + sum(c.count("\n") for c in columns)
