"""What a database holds: tables (with the columns a dump reads), views, triggers, routines.

Read from ``information_schema`` and ``SHOW CREATE ...`` on the backup's snapshot connection.
``SHOW CREATE`` runs with the dumped database as the current one, so object definitions name
their own database's objects unqualified and restore into any database name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from safehold.engines.base import PermissionDenied, UnsupportedError
from safehold.engines.mysql.conn import Conn, quote_name, run

# How each column type is turned into an SQL literal by the server (see rows.py).
NUMERIC = {"tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "double", "year"}
BINARY = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
GEOMETRY = {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
            "multipolygon", "geometrycollection"}
TRANSACTIONAL_ENGINES = {"innodb", "rocksdb", "tokudb"}
# Primary keys of one column of these types let a dump read a table in key ranges (rows.py).
INTEGER = {"tinyint", "smallint", "mediumint", "int", "bigint"}


# Types whose text never holds a newline: their literal needs no escaping of one (rows.py).
TEMPORAL = {"date", "datetime", "timestamp", "time"}


@dataclass(frozen=True)
class Column:
    """A stored column. ``charset`` and ``nullable`` let the dump skip work the server would
    otherwise do per value (a conversion to utf8mb4, a NULL test); left at their defaults
    (unknown), the dump's expressions assume the general case."""

    name: str
    data_type: str
    charset: str = ""  # CHARACTER_SET_NAME of a text column ("" when unknown or none)
    nullable: bool = True


@dataclass
class Table:
    name: str
    engine: str
    columns: list[Column]
    ddl: str = ""
    approx_bytes: int = 0
    key: str | None = None  # the primary key's column when it is one integer column
    row_bytes: int = 0  # the server's estimate of a row's size (AVG_ROW_LENGTH; 0: unknown)

    @property
    def transactional(self) -> bool:
        return self.engine.lower() in TRANSACTIONAL_ENGINES

    @property
    def chunkable(self) -> bool:
        """Read in key-range chunks (rows.chunked_statements): a one-column integer key, and
        the snapshot covers the table. A non-transactional table is read by one statement,
        whose table lock keeps its rows consistent; chunks could see a row move between
        them."""
        return self.key is not None and self.transactional


def _chunk_key(columns: list[Column], primary: list[str]) -> str | None:
    """The primary key's column when it is one stored integer column, else None."""
    if len(primary) != 1:
        return None
    types = {c.name: c.data_type for c in columns}
    return primary[0] if types.get(primary[0]) in INTEGER else None


@dataclass(frozen=True)
class SchemaObject:
    """A view, trigger, routine or event: its definition and the session it was made in."""

    kind: str  # view | trigger | procedure | function | event
    name: str
    sql: str
    sql_mode: str = ""
    collation: str = ""
    table: str | None = None  # a trigger's table
    time_zone: str = ""  # an event's


@dataclass
class Catalog:
    database: str
    charset: str
    collation: str
    tables: list[Table] = field(default_factory=list)
    objects: list[SchemaObject] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[SchemaObject]:
        return [o for o in self.objects if o.kind == kind]


def read_catalog(conn: Conn, db: str) -> Catalog:
    """Everything ``db`` holds that a logical backup carries, views in dependency order."""
    row = run(conn, "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM"
              " information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (db,))
    charset, collation = row[0]
    catalog = Catalog(db, charset, collation)
    kinds = run(conn, "SELECT TABLE_NAME, TABLE_TYPE, COALESCE(ENGINE, ''),"
                " COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0),"
                " COALESCE(AVG_ROW_LENGTH, 0) FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME", (db,))
    odd = sorted(n for n, kind, *_ in kinds if kind not in ("BASE TABLE", "VIEW"))
    if odd:
        raise UnsupportedError(
            f"database {db} holds sequences or system-versioned tables ({', '.join(odd)}),"
            " which this engine does not back up yet")
    columns = _columns(conn, db)
    primary = _primary_keys(conn, db)
    views = []
    for name, kind, engine, size, row_bytes in kinds:
        if kind == "VIEW":
            views.append(name)
            continue
        ddl = run(conn, f"SHOW CREATE TABLE {quote_name(name)}")[0][1]
        cols = columns.get(name, [])
        catalog.tables.append(Table(name, engine, cols, ddl, int(size),
                                    _chunk_key(cols, primary.get(name, [])), int(row_bytes)))
    view_objects = [_view(conn, v) for v in views]
    catalog.objects += _dependency_order(view_objects)
    catalog.objects += _routines(conn, db) + _triggers(conn, db) + _events(conn, db)
    return catalog


def _columns(conn: Conn, db: str) -> dict[str, list[Column]]:
    """Stored (non-generated) columns per table, invisible ones included."""
    out: dict[str, list[Column]] = {}
    for table, name, data_type, extra, charset, nullable in run(
            conn, "SELECT TABLE_NAME, COLUMN_NAME, LOWER(DATA_TYPE), EXTRA,"
            " COALESCE(LOWER(CHARACTER_SET_NAME), ''), IS_NULLABLE FROM"
            " information_schema.COLUMNS WHERE TABLE_SCHEMA = %s"
            " ORDER BY TABLE_NAME, ORDINAL_POSITION", (db,)):
        if re.search(r"(VIRTUAL|STORED|PERSISTENT) GENERATED|^(VIRTUAL|PERSISTENT)$", extra or "",
                     re.I):
            continue
        out.setdefault(table, []).append(Column(name, data_type, charset,
                                                nullable=nullable != "NO"))
    return out


def _primary_keys(conn: Conn, db: str) -> dict[str, list[str]]:
    """Each table's primary key columns, in key order."""
    out: dict[str, list[str]] = {}
    for table, name in run(conn, "SELECT TABLE_NAME, COLUMN_NAME FROM"
                           " information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND"
                           " INDEX_NAME = 'PRIMARY' ORDER BY TABLE_NAME, SEQ_IN_INDEX", (db,)):
        out.setdefault(table, []).append(name)
    return out


def _view(conn: Conn, name: str) -> SchemaObject:
    _, sql, _, collation = run(conn, f"SHOW CREATE VIEW {quote_name(name)}")[0]
    return SchemaObject("view", name, sql, collation=collation)


def _dependency_order(views: list[SchemaObject]) -> list[SchemaObject]:
    """Views that others select from come first (``SHOW CREATE VIEW`` backquotes every name,
    so a view depends on those whose quoted name it contains; a cycle keeps name order)."""
    pending = {v.name: v for v in views}
    ordered: list[SchemaObject] = []
    while pending:
        ready = [v for v in pending.values()
                 if not any(quote_name(o) in v.sql for o in pending if o != v.name)]
        for v in ready or [next(iter(pending.values()))]:
            ordered.append(pending.pop(v.name))
    return ordered


def _routines(conn: Conn, db: str) -> list[SchemaObject]:
    out = []
    for name, kind in run(conn, "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM"
                          " information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s"
                          " ORDER BY ROUTINE_TYPE, ROUTINE_NAME", (db,)):
        row = run(conn, f"SHOW CREATE {kind} {quote_name(name)}")[0]
        if row[2] is None:
            raise PermissionDenied(
                f"cannot read the body of {kind.lower()} {db}.{name}: the backup user must be"
                f" its definer or have SELECT on mysql.proc (MariaDB) / SHOW_ROUTINE (MySQL)")
        out.append(SchemaObject(kind.lower(), name, row[2], sql_mode=row[1], collation=row[4]))
    return out


def _triggers(conn: Conn, db: str) -> list[SchemaObject]:
    out = []
    for name, table in run(conn, "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM"
                           " information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s"
                           " ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER", (db,)):
        row = run(conn, f"SHOW CREATE TRIGGER {quote_name(name)}")[0]
        out.append(SchemaObject("trigger", name, row[2], sql_mode=row[1], collation=row[4],
                                table=table))
    return out


def _events(conn: Conn, db: str) -> list[SchemaObject]:
    out = []
    for (name,) in run(conn, "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE"
                       " EVENT_SCHEMA = %s ORDER BY EVENT_NAME", (db,)):
        row = run(conn, f"SHOW CREATE EVENT {quote_name(name)}")[0]
        out.append(SchemaObject("event", name, row[3], sql_mode=row[1], collation=row[5],
                                time_zone=row[2]))
    return out
