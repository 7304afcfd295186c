"""Copy chosen tables from a rebuilt snapshot into a (possibly new) database, in one transaction.

Each table is created from the snapshot's own ``CREATE TABLE`` text, its rows are copied with
their rowids (so rowid references elsewhere stay valid), its AUTOINCREMENT counter is carried
over, and only then are its indexes and triggers created, so triggers do not fire for the copy.
Either every chosen table is restored or, on any error, none is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import quote as url_quote

from safehold.api.errors import UsageError
from safehold.engines.base import (
    ConflictError,
    EngineError,
    UnsupportedError,
)
from safehold.engines.sqlite import quote

SNAP = "safehold_snapshot"  # schema name the snapshot is attached under


def restore_tables(snapshot: Path, target: Path, include: Sequence[str],
                   conflict: Literal["fail", "replace"], *, timeout: float) -> None:
    created = not target.exists()  # a failed restore must not leave an empty file behind
    try:
        _restore_tables(snapshot, target, include, conflict, timeout=timeout)
    except BaseException:
        if created:
            target.unlink(missing_ok=True)
        raise


def _restore_tables(snapshot: Path, target: Path, include: Sequence[str],
                    conflict: Literal["fail", "replace"], *, timeout: float) -> None:
    conn = sqlite3.connect(f"file:{url_quote(str(target))}", uri=True, timeout=timeout,
                           isolation_level=None)
    try:
        conn.execute(f"ATTACH DATABASE ? AS {SNAP}",
                     (f"file:{url_quote(str(snapshot))}?mode=ro&immutable=1",))
        tables = _resolve(conn, include)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table, without_rowid in tables.items():
                _restore_table(conn, table, without_rowid, conflict, target)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute(f"DETACH DATABASE {SNAP}")
    except sqlite3.Error as exc:
        raise EngineError(f"selective restore into {target} failed: {exc}") from exc
    finally:
        conn.close()


def _resolve(conn: sqlite3.Connection, include: Sequence[str]) -> dict[str, bool]:
    """The snapshot's spelling of each requested table (mapped to whether it is WITHOUT ROWID),
    refusing anything that is not an ordinary table."""
    catalog = {name: (kind, bool(wr))
               for _, name, kind, _, wr, _ in conn.execute(f"PRAGMA {SNAP}.table_list")
               if not name.startswith("sqlite_")}
    by_folded = {name.casefold(): name for name in catalog}
    available = ", ".join(sorted(n for n, (kind, _) in catalog.items() if kind == "table"))
    tables: dict[str, bool] = {}
    for wanted in include:
        name = by_folded.get(wanted.casefold())
        if name is None:
            raise UsageError(
                f"the backup has no table {wanted!r}; its tables are: {available}"
            )
        kind, without_rowid = catalog[name]
        if kind == "view":
            raise UsageError(
                f"{name!r} is a view, not a table: selective restore copies tables (a view holds"
                f" no data); its tables are: {available}"
            )
        if kind != "table":
            raise UnsupportedError(
                f"{name!r} is a {kind} table; selective restore copies ordinary tables only:"
                " restore the whole database instead"
            )
        tables[name] = without_rowid
    return tables


def _restore_table(conn: sqlite3.Connection, table: str, without_rowid: bool,
                   conflict: Literal["fail", "replace"], target: Path) -> None:
    existing = conn.execute(
        "SELECT type FROM main.sqlite_master WHERE type IN ('table', 'view')"
        " AND name = ? COLLATE NOCASE", (table,)).fetchone()
    if existing and conflict == "fail":
        raise ConflictError(
            f"table {table!r} already exists in {target} and the conflict policy is 'fail';"
            " use conflict policy 'replace' to overwrite it, or restore to another database"
        )
    if existing:
        conn.execute(f"DROP {existing[0].upper()} main.{quote.ident(table)}")
    create_sql, = conn.execute(
        f"SELECT sql FROM {SNAP}.sqlite_master WHERE type = 'table' AND name = ?", (table,)  # noqa: S608 - names through quote.ident
    ).fetchone()
    conn.execute(create_sql)
    _copy_rows(conn, table, without_rowid)
    seq = conn.execute(f"SELECT seq FROM {SNAP}.sqlite_sequence WHERE name = ?", (table,)  # noqa: S608 - constant schema name
                       ).fetchone() if _has_sequence(conn) else None
    if seq is not None:
        conn.execute("DELETE FROM main.sqlite_sequence WHERE name = ?", (table,))
        conn.execute("INSERT INTO main.sqlite_sequence (name, seq) VALUES (?, ?)",
                     (table, seq[0]))
    for (sql,) in conn.execute(
            f"SELECT sql FROM {SNAP}.sqlite_master WHERE type IN ('index', 'trigger')"  # noqa: S608 - constant schema name
            " AND tbl_name = ? AND sql IS NOT NULL ORDER BY type, name", (table,)).fetchall():
        conn.execute(sql)


def _copy_rows(conn: sqlite3.Connection, table: str, without_rowid: bool) -> None:
    """``INSERT ... SELECT`` of the stored (not generated) columns, plus a rowid table's rowid."""
    info = conn.execute(f"PRAGMA {SNAP}.table_xinfo({quote.ident(table)})").fetchall()
    columns = [quote.ident(name) for _, name, _, _, _, _, hidden in info if hidden == 0]
    taken = {name.casefold() for _, name, *_ in info}
    rowid = next((a for a in ("rowid", "_rowid_", "oid") if a not in taken), None)
    if rowid and not without_rowid:
        columns.insert(0, rowid)
    cols = ", ".join(columns)
    name = quote.ident(table)
    conn.execute(f"INSERT INTO main.{name} ({cols}) SELECT {cols} FROM {SNAP}.{name}")  # noqa: S608 - names through quote.ident


def _has_sequence(conn: sqlite3.Connection) -> bool:
    return conn.execute(f"SELECT 1 FROM {SNAP}.sqlite_master WHERE name = 'sqlite_sequence'"  # noqa: S608 - constant schema name
                        ).fetchone() is not None
