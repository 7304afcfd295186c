"""A full logical backup from ONE consistent snapshot.

Everything is read on a single connection inside ``START TRANSACTION WITH CONSISTENT
SNAPSHOT`` (REPEATABLE READ), so all InnoDB tables are seen at the same instant. One connection
is a deliberate choice: MySQL has no portable way to share a snapshot between connections
(mydumper approximates it with a global read lock while its threads start), so per-table
parallel reads would either be inconsistent or need ``FLUSH TABLES WITH READ LOCK``. The server
renders the rows (see :mod:`.rows`) and the pipeline compresses and encrypts in other threads,
so one reader is rarely the bottleneck.

On MariaDB the snapshot also yields its binlog coordinates (``binlog_snapshot_file/position``)
without any lock, and ``BINLOG_GTID_POS`` turns them into the matching GTID position. MySQL has
no such status: there a global read lock is held for the instant the snapshot starts (needs
RELOAD), or, without that privilege, the position is left out with a warning.

Objects: ``schema.sql`` (tables, then views in dependency order, routines, triggers, events),
one ``rows.<table>.sql`` per table (INSERT lines) and ``toc.json`` (the index; written last).
Non-transactional tables (MyISAM, Aria, MEMORY) are read inside the same transaction but are
not covered by the snapshot; ``toc.json`` lists them and a warning is logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from typing import Any

from safehold.engines.base import BackupOutcome, BackupSink, PermissionDenied
from safehold.engines.mysql import quote
from safehold.engines.mysql.catalog import Catalog, read_catalog
from safehold.engines.mysql.conn import Target, connect, run
from safehold.engines.mysql.rows import RowStats, insert_statements
from safehold.engines.mysql.server import ServerInfo, server_info

log = logging.getLogger(__name__)
TOC_FORMAT = 1


def backup(target: Target, sink: BackupSink) -> BackupOutcome:
    conn = connect(target, streaming=True)
    try:
        info = server_info(conn)
        info.require_supported()
        run(conn, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        position = _start_snapshot(conn, info)
        catalog = read_catalog(conn, target.database)
        schema, entries = render_schema(catalog)
        sink.put("schema.sql", [schema], meta={"kind": "schema"})
        tables: list[dict[str, Any]] = []
        for index, table in enumerate(catalog.tables):
            stats = RowStats()
            name = object_name(index, table.name)
            record = sink.put(name, insert_statements(conn, table, stats),
                              meta={"kind": "rows", "table": table.name})
            tables.append({"name": table.name, "object": name, "rows": stats.rows,
                           "statements": stats.statements, "bytes": record.raw_size,
                           "engine": table.engine, "approx_bytes": table.approx_bytes,
                           "columns": [c.name for c in table.columns]})
        run(conn, "COMMIT")
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    loose = [t.name for t in catalog.tables if not t.transactional]
    if loose:
        log.warning("tables %s are not transactional: the snapshot does not cover them, so"
                    " their rows may be from slightly later than the rest", ", ".join(loose))
    toc = {"format": TOC_FORMAT, "database": catalog.database, "charset": catalog.charset,
           "collation": catalog.collation, "server_version": info.version,
           "flavor": info.flavor, "position": position, "schema": entries, "tables": tables,
           "non_transactional": loose}
    sink.put("toc.json", [json.dumps(toc, indent=1).encode()],
             meta={"kind": "toc", "tables": [t["name"] for t in tables]})
    return BackupOutcome(
        server_version=info.version, start_position=position,
        end_position=dict(position) if position else None,
        engine_meta={"database": catalog.database, "flavor": info.flavor,
                     "tables": len(tables), "rows": sum(int(t["rows"]) for t in tables)},
        tools={"pymysql": _pymysql_version()},
    )


def _start_snapshot(conn: Any, info: ServerInfo) -> dict[str, str] | None:
    """Start the snapshot; return its binlog position (None when binlog is off/unknown)."""
    if info.flavor == "mariadb":
        run(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
        status = {k.lower(): v for k, v in run(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'")}
        file, pos = status.get("binlog_snapshot_file"), status.get("binlog_snapshot_position")
        if not file or pos is None:
            log.warning("the binary log is off: the backup records no binlog position")
            return None
        gtid = run(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, int(pos)))[0][0]
        return {"binlog_file": file, "binlog_pos": str(pos), "gtid": gtid or ""}
    try:
        run(conn, "FLUSH TABLES WITH READ LOCK")
    except PermissionDenied:
        log.warning("no RELOAD privilege: MySQL gives no lock-free binlog position for a"
                    " snapshot, so this backup records none")
        run(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
        return None
    try:
        run(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
        rows = run(conn, "SHOW BINARY LOG STATUS" if info.at_least(8, 4) else
                   "SHOW MASTER STATUS")
        gtid = run(conn, "SELECT @@GLOBAL.gtid_executed")[0][0]
    finally:
        run(conn, "UNLOCK TABLES")
    if not rows:
        return None
    return {"binlog_file": rows[0][0], "binlog_pos": str(rows[0][1]), "gtid": gtid or ""}


def object_name(index: int, table: str) -> str:
    """``rows.<table>.sql`` when the name is plain ASCII, else a numbered name (see toc)."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", table):
        return f"rows.{table}.sql"
    return f"rows.~{index:05d}.sql"


def render_schema(catalog: Catalog) -> tuple[bytes, list[dict[str, Any]]]:
    """``schema.sql`` and its index: each entry's byte ``offset``/``length`` in the file.

    The file is also a script for the ``mariadb`` client (``DELIMITER`` is chosen so that no
    definition contains it); restore slices statements by offset, so bodies may hold anything.
    """
    statements = [t.ddl for t in catalog.tables] + [o.sql for o in catalog.objects]
    delimiter = ";;"
    while any(delimiter in s for s in statements):
        delimiter += ";"
    out = bytearray(
        f"-- Safehold schema of database `{catalog.database}`: tables, views, routines,"
        f" triggers, events.\n-- Offsets of each statement are in toc.json.\n"
        f"SET FOREIGN_KEY_CHECKS=0;\nDELIMITER {delimiter}\n".encode())
    entries: list[dict[str, Any]] = []

    def add(sql: str, entry: dict[str, Any]) -> None:
        if entry.get("sql_mode") is not None and entry["kind"] != "table":
            mode = quote.literal(entry["sql_mode"])
            out.extend(f"SET SESSION sql_mode = {mode}{delimiter}\n".encode())
        data = sql.encode()
        entries.append({**entry, "offset": len(out), "length": len(data)})
        out.extend(data + f"\n{delimiter}\n".encode())

    for t in catalog.tables:
        add(t.ddl, {"kind": "table", "name": t.name})
    for o in catalog.objects:
        entry = {"kind": o.kind, "name": o.name, "sql_mode": o.sql_mode,
                 "collation": o.collation}
        if o.table is not None:
            entry["table"] = o.table
        if o.time_zone:
            entry["time_zone"] = o.time_zone
        add(o.sql, entry)
    out.extend(b"DELIMITER ;\n")
    return bytes(out), entries


def _pymysql_version() -> str:
    import pymysql

    return str(pymysql.__version__)
