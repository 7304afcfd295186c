"""Table rows as SQL ``INSERT`` statements, one per line, formatted by the server.

The dump asks the server to render each row as a ready SQL tuple (``QUOTE``, ``HEX`` and
friends run in C inside mysqld), so the client only joins bytes: PyMySQL parses one column per
row instead of one per value, and where a table has a one-column integer primary key one
value per chunk of about 1 MiB of rows (:func:`chunked_statements`). In the object every
literal holds no raw newline, which makes ``\\n`` an unambiguous statement separator: a data
object is a valid SQL script that ``mariadb db < object`` also loads, and the restore splits
it without an SQL parser.

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
server's own format. A value the server cannot render (one longer than ``max_allowed_packet``
becomes NULL, with only a warning) fails the table: every reader checks the warnings of its
statements (:func:`altered`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from safehold.engines.base import EngineError
from safehold.engines.mysql.catalog import BINARY, GEOMETRY, NUMERIC, TEMPORAL, Column, Table
from safehold.engines.mysql.conn import classify, quote_name, run, run_warned

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


def rendered(table: Table) -> str:
    """The rendered tuple of a row and :data:`ROW_END`, which is cast to binary so that the
    whole row is binary (a binary string wins over text in ``CONCAT``, a bare ``CHAR(0)`` would
    not): its bytes reach the client unconverted."""
    parts = ", ',', ".join(literal(c) for c in table.columns)
    return f"CONCAT('(', {parts}, ')', {_END_SQL})"


def select_rows(table: Table) -> str:
    """One column per row: :func:`rendered`."""
    return f"SELECT {rendered(table)} FROM {quote_name(table.name)}"  # noqa: S608 - names through quote.name


_END_TO_COMMA = bytes.maketrans(ROW_END, b",")


def values_list(body: bytes, rows: int, *, lines: bool) -> bytes:
    """The ``VALUES`` list of the ``rows`` rendered tuples in ``body``, raw newlines escaped.

    Each tuple in ``body`` ends in :data:`ROW_END`, followed by a newline when ``lines`` (as the
    client prints rows). The newlines inside values become ``\\n`` (see the module text) and
    each row end a comma. Without the client's newlines that is two scans at memchr speed
    (``in`` and a one-byte ``replace``, five times faster than ``translate``); with them one
    ``translate`` turns each row end into a comma and drops the client's newlines, and
    finds, by the count, whether a value held one.
    """
    if not lines:
        if b"\n" in body:
            body = body.replace(b"\n", b"\\n")
        return body.replace(ROW_END, b",")[:-1]
    out = body.translate(_END_TO_COMMA, b"\n")
    if len(body) - len(out) != rows:
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
                      batch_bytes: int = BATCH_BYTES,
                      where: tuple[str, tuple[Any, ...]] = ("", ())) -> Iterator[bytes]:
    """Stream ``table`` (on the snapshot connection, unbuffered) as INSERT lines; ``where``:
    only the rows of this ``WHERE`` clause and its arguments."""
    if not table.columns:
        return
    prefix = insert_prefix(table)
    cur = conn.cursor()
    try:
        sql, args = select_rows(table), where[1] or None
        cur.execute(sql if args is None else _formatted(sql) + where[0], args)
        batch: list[bytes] = []
        size = 0
        while rows := cur.fetchmany(2000):
            for (row,) in rows:
                if row is None:  # CONCAT's result outgrew the limit (it never meets a NULL)
                    raise altered(table, [("Warning", ALLOWED_PACKET, "a row is NULL")])
                batch.append(row)
                size += len(row)
            if size >= batch_bytes:
                yield insert_statement(prefix, b"".join(batch), len(batch), stats, lines=False)
                batch, size = [], 0
        if cur.warning_count:  # the result's end tells: checked before its last rows go out
            raise altered(table, run(conn, "SHOW WARNINGS"))
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
    return b"".join((prefix, values_list(body, rows, lines=lines), b";\n"))


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


CHUNK_BYTES = BATCH_BYTES
FIRST_CHUNK = (4096, 16)  # most keys in a table's first chunk: with a row size known, without
_GROWTH = 4  # a chunk spans at most this many times the keys (or rows) of the one before


def chunk_limit(conn: Any) -> int:
    """The session's ``max_allowed_packet``, which also becomes its ``group_concat_max_len``
    (GROUP_CONCAT stops at the smaller of the two, and no result may outgrow the first): what
    :func:`chunked_statements` needs of a connection, once."""
    limit = int(run(conn, "SELECT @@max_allowed_packet")[0][0])
    run(conn, "SET SESSION group_concat_max_len = %s", (limit,))
    return limit


def chunked_statements(conn: Any, table: Table, stats: RowStats, limit: int | None = None,
                       chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Stream ``table``, which has a one-column integer primary key (``table.key``) and is
    transactional (:attr:`.Table.chunkable`; any other is read by :func:`insert_statements`),
    as INSERT lines, each one chunk of consecutive keys whose rows the server joins into ONE
    value.

    Read a row at a time, a table costs the client per row (PyMySQL parses every packet) or
    per byte (the ``mariadb`` client writes its output a character at a time): more CPU than
    the server spends rendering the rows. A chunk is ``GROUP_CONCAT`` of the rendered rows of
    a key range, read on the primary key's index, about ``chunk_bytes`` long (the range
    follows the rows' size). While the keys are dense (a chunk at least half full: auto-
    increment ids, a few gaps) the range is a count of keys; on sparse keys the range's end is
    looked up first (the key ``n`` rows on), so that no chunk is empty. Measured on 100 MB of
    text rows (docs/performance.md): the server 0.72 CPU-s (0.8 with the lookups) instead of
    0.65 for one row at a time, the client 0.1 instead of 0.6.

    ``limit`` is what :func:`chunk_limit` returned for ``conn`` (None: it is asked now).
    ``GROUP_CONCAT`` stops at ``max_allowed_packet`` (``group_concat_max_len`` is raised to
    it) with only a warning, and skips a row whose value is NULL (a rendered row longer than
    ``max_allowed_packet`` is NULL), so every chunk is checked: each rendered row ends in
    :data:`ROW_END`, which no value holds, so a whole chunk holds as many as ``COUNT(*)``.
    A chunk that fails the check is read again as smaller ones, down to one row, which
    :func:`insert_statements` reads (and names the limit when the row outgrows it).
    """
    if not table.columns or not table.chunkable or table.key is None:
        yield from insert_statements(conn, table, stats)
        return
    name, key = quote_name(table.name), quote_name(table.key)
    low, top = run(conn, f"SELECT MIN({key}), MAX({key}) FROM {name}")[0]  # noqa: S608 - names through quote.name
    if low is None:
        return
    # statements with arguments: a name's % must reach the server as it is (see _formatted)
    name, key, row = _formatted(name), _formatted(key), _formatted(rendered(table))
    where = f" WHERE {key} >= %s AND {key} <= %s"
    chunk = f"SELECT GROUP_CONCAT({row} SEPARATOR ''), COUNT(*) FROM {name}{where}"  # noqa: S608
    probe = f"SELECT {key} FROM {name} WHERE {key} >= %s ORDER BY {key} LIMIT 1 OFFSET %s"  # noqa: S608
    prefix = insert_prefix(table)
    if limit is None:
        limit = chunk_limit(conn)
    target = max(1, min(chunk_bytes, limit // 2))
    # keys per chunk while dense, then rows per chunk: at first from the server's estimate of
    # a row's size, then from the chunks' sizes
    most = FIRST_CHUNK[0] if table.row_bytes else FIRST_CHUNK[1]
    size, dense = max(1, min(most, target // max(1, table.row_bytes))), True
    while low <= top:
        if dense:
            high = min(low + size - 1, top)
        else:
            found = run(conn, probe, (low, size - 1))
            high = found[0][0] if found else top
        body, count, cut = _chunk(conn, table, chunk, (low, high))
        if cut or (count and (body is None or body.count(ROW_END) != count)):
            if size > 1:  # cut at the server's limit, or a row outgrew it: fewer rows
                size = max(1, size // _GROWTH)
                continue
            yield from insert_statements(conn, table, stats, where=(where, (low, high)))
        elif body is not None:  # count rows, all there
            yield insert_statement(prefix, body, count, stats, lines=False)
            size = max(1, min(size * _GROWTH, size * target // len(body)))
        if dense and 2 * count < high - low + 1:
            dense = False  # sparse keys: from here on each chunk's end is looked up
        low = high + 1


def _chunk(conn: Any, table: Table, sql: str,
           args: tuple[int, int]) -> tuple[bytes | None, int, bool]:
    """A chunk's rows, their count, and whether GROUP_CONCAT cut them (its warning); any other
    warning is a value the server changed, which fails the table (:func:`altered`)."""
    found, warned = run_warned(conn, sql, args)
    body, count = found[0]
    if not warned:
        return body, count, False
    warnings = run(conn, "SHOW WARNINGS")
    if all(int(code) == CUT_BY_GROUP_CONCAT for _, code, _ in warnings):
        return body, count, True
    raise altered(table, warnings)


ALLOWED_PACKET = 1301  # ER_WARN_ALLOWED_PACKET_OVERFLOWED: a result outgrew max_allowed_packet
CUT_BY_GROUP_CONCAT = 1260  # ER_CUT_VALUE_GROUP_CONCAT


def altered(table: Table, warnings: Iterable[Sequence[Any]]) -> EngineError:
    """The error for the ``warnings`` (``SHOW WARNINGS`` rows) the server gave while it
    rendered ``table``'s rows: each is a value it did not render as stored (a value longer
    than max_allowed_packet becomes NULL), so the backup must not keep them."""
    shown = [(int(w[1]), str(w[2])) for w in warnings]
    text = "; ".join(f"{code}: {message}" for code, message in shown[:3])
    fix = " (raise max_allowed_packet with SET GLOBAL to back this table up)" \
        if any(code == ALLOWED_PACKET for code, _ in shown) else ""
    return EngineError(f"table {table.name!r}: the server changed values while reading them,"
                       f" so the backup stopped: {text}{fix}")


def _formatted(sql: str) -> str:
    """``sql`` (names in it) for a statement run with arguments: PyMySQL then %-formats the
    whole text, so a ``%`` in a table or column name is doubled to stay itself."""
    return sql.replace("%", "%%")
