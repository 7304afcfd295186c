"""Restore a backup into a database (the backed-up one or any other name), whole or by table.

Tables are created and loaded in a staging database, in parallel (``jobs`` connections: unlike
the backup, loading needs no shared snapshot), the row count of every table is checked against
``toc.json``, and only then are they swapped in (:mod:`.swap`). A whole-database restore makes
the target equal to the backup: tables, views, routines and events the backup does not have
are removed. A selective restore (``include``: table or view names) replaces only those, with
their triggers; routines and events are left alone. Foreign keys of restored tables reference
the real database, never the staging one (:func:`.swap.park_foreign_keys`): tables restored
with them, or the target's own table when the referenced one is not restored (a warning names
those the target lacks); foreign keys of other tables that reference a restored table keep
pointing at it. A damaged object or a failed storage read raises its own error (not a
database error) and, like any failure before the swap, leaves the target untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pymysql

from safehold.api.manifest import Manifest
from safehold.engines.base import (
    ChainReader,
    ConflictError,
    DatabaseMissing,
    EngineError,
    RestoreRequest,
    UnsupportedError,
)
from safehold.engines.common import run_parallel
from safehold.engines.mysql import quote
from safehold.engines.mysql.conn import Target, classify, connect, run
from safehold.engines.mysql.dump import TOC_FORMAT
from safehold.engines.mysql.rows import prefix_breaks, split_statements
from safehold.engines.mysql.server import server_info
from safehold.engines.mysql.swap import (
    Definition,
    create_definitions,
    drop_leftovers,
    drop_routines_and_events,
    name_foreign_keys,
    park_foreign_keys,
    stage_name,
    swap_in,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What to restore, read from the backup's ``toc.json`` and ``schema.sql``."""

    toc: dict[str, Any]
    tables: list[dict[str, Any]]  # toc entries, each with its "ddl"
    definitions: list[Definition]  # views, routines, triggers, events in creation order
    views: list[str]
    whole: bool

    @classmethod
    def read(cls, manifest: Manifest, reader: ChainReader, include: Sequence[str] | None
             ) -> Plan:
        toc = json.loads(b"".join(reader.open(manifest, "toc.json")))
        if toc.get("format") != TOC_FORMAT:
            raise UnsupportedError(f"backup {manifest.backup_id} has toc format"
                                   f" {toc.get('format')}; this Safehold reads {TOC_FORMAT}")
        schema = b"".join(reader.open(manifest, "schema.sql"))

        def sql(entry: dict[str, Any]) -> str:
            return schema[entry["offset"]:entry["offset"] + entry["length"]].decode()

        ddl = {e["name"]: sql(e) for e in toc["schema"] if e["kind"] == "table"}
        tables = [{**t, "ddl": ddl[t["name"]]} for t in toc["tables"]]
        others = [e for e in toc["schema"] if e["kind"] != "table"]
        views = [e["name"] for e in others if e["kind"] == "view"]
        if include:
            known = {t["name"] for t in tables} | set(views)
            unknown = [n for n in include if n not in known]
            if unknown:
                raise DatabaseMissing(
                    f"backup {manifest.backup_id} has no table or view named"
                    f" {', '.join(unknown)}; it has: {', '.join(sorted(known))}")
            chosen = set(include)
            tables = [t for t in tables if t["name"] in chosen]
            others = [e for e in others if (e["kind"] == "view" and e["name"] in chosen)
                      or (e["kind"] == "trigger" and e.get("table") in chosen)]
            views = [v for v in views if v in chosen]
        order = {"view": 0, "procedure": 1, "function": 1, "trigger": 2, "event": 3}
        others.sort(key=lambda e: order[e["kind"]])  # stable: views keep dependency order
        definitions = [Definition(e["kind"], e["name"], sql(e), e.get("sql_mode", ""),
                                  e.get("collation", ""), e.get("time_zone", ""))
                       for e in others]
        return cls(toc, tables, definitions, views, whole=not include)


def restore(target: Target, request: RestoreRequest, reader: ChainReader, *, jobs: int) -> None:
    if len(request.chain) != 1 or request.chain[0].type != "full":
        raise UnsupportedError("the MySQL engine restores full backups only")
    manifest = request.chain[0]
    plan = Plan.read(manifest, reader, request.include)
    db, stage = target.database, stage_name(target.database)
    conn = connect(target, database=None)
    try:
        server_info(conn).require_supported()
        lock = "safehold:" + hashlib.sha1(db.encode()).hexdigest()[:24]
        if run(conn, "SELECT GET_LOCK(%s, 0)", (lock,))[0][0] != 1:
            raise EngineError(f"another restore into {db} is running; wait for it to finish")
        drop_leftovers(conn, db)
        _check_conflict(conn, db, plan, request.conflict)
        charset = (f" CHARACTER SET {quote.literal(plan.toc['charset'], conn)}"
                   f" COLLATE {quote.literal(plan.toc['collation'], conn)}")
        run(conn, f"CREATE DATABASE {quote.name(stage)}{charset}")
        try:
            _load(target, stage, plan, manifest, reader, jobs)
            run(conn, f"CREATE DATABASE IF NOT EXISTS {quote.name(db)}{charset}")
            table_names = [t["name"] for t in plan.tables]
            parked = park_foreign_keys(conn, stage, db, restored=set(table_names))
            old_views = _names(conn, db, "TABLES", "TABLE_TYPE = 'VIEW'")
            drop_views = old_views if plan.whole else [
                v for v in old_views if v in set(plan.views) | set(table_names)]
        except BaseException:
            with contextlib.suppress(Exception):
                run(conn, f"DROP DATABASE IF EXISTS {quote.name(stage)}")
            raise
        swap_in(conn, db, stage, table_names, replace_all=plan.whole, drop_views=drop_views)
        name_foreign_keys(conn, db, parked)
        if plan.whole:
            drop_routines_and_events(conn, db)
            run(conn, f"ALTER DATABASE {quote.name(db)}{charset}")
        create_definitions(conn, db, plan.definitions)
        _warn_dangling(conn, db, table_names)
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _names(conn: Any, db: str, view: str, condition: str = "1") -> list[str]:
    column, schema = {"TABLES": ("TABLE_NAME", "TABLE_SCHEMA"),
                      "ROUTINES": ("ROUTINE_NAME", "ROUTINE_SCHEMA"),
                      "EVENTS": ("EVENT_NAME", "EVENT_SCHEMA")}[view]
    return [n for (n,) in run(conn, f"SELECT {column} FROM information_schema.{view}"  # noqa: S608 - names from a fixed table; values are %s
                              f" WHERE {schema} = %s AND {condition}", (db,))]


def _check_conflict(conn: Any, db: str, plan: Plan, conflict: str) -> None:
    if conflict != "fail":
        return
    if plan.whole:
        held = [*_names(conn, db, "TABLES"), *_names(conn, db, "ROUTINES"),
                *_names(conn, db, "EVENTS")]
        if held:
            raise ConflictError(
                f"database {db} is not empty ({len(held)} tables, views, routines or events)"
                " and the conflict policy is 'fail'; use --conflict replace, or restore into"
                " another database")
        return
    wanted = {t["name"] for t in plan.tables} | set(plan.views)
    clash = sorted(wanted & set(_names(conn, db, "TABLES")))
    if clash:
        raise ConflictError(f"{', '.join(clash)} already exist in {db} and the conflict policy"
                            " is 'fail'; use --conflict replace or restore elsewhere")


def _load(target: Target, stage: str, plan: Plan, manifest: Manifest, reader: ChainReader,
          jobs: int) -> None:
    """Create and fill every table in ``stage``, biggest first, on ``jobs`` connections."""
    failed = threading.Event()
    local = threading.local()
    opened: list[Any] = []
    lock = threading.Lock()

    def session() -> Any:
        if not hasattr(local, "conn"):
            local.conn = connect(target, database=stage)
            run(local.conn, "SET SESSION foreign_key_checks = 0, unique_checks = 0")
            with lock:
                opened.append(local.conn)
        return local.conn

    def load(table: dict[str, Any]) -> None:
        if failed.is_set():
            return
        try:
            conn = session()
            run(conn, table["ddl"])
            breaks = prefix_breaks(table["name"], table.get("columns") or [])
            loaded = _insert(conn, reader.open(manifest, table["object"]), failed, breaks)
            if loaded != table["rows"] and not failed.is_set():
                raise EngineError(
                    f"table {table['name']}: loaded {loaded} rows, but the backup holds"
                    f" {table['rows']}; the backup object {table['object']} is damaged")
        except BaseException:
            failed.set()
            raise

    biggest_first = sorted(plan.tables, key=lambda t: -int(t["bytes"]))
    try:
        run_parallel(load, biggest_first, jobs=jobs, name="mysql-restore")
    finally:
        for conn in opened:
            with contextlib.suppress(Exception):
                conn.close()


def _insert(conn: Any, data: Iterator[bytes], failed: threading.Event, breaks: int) -> int:
    rows = 0
    try:
        with conn.cursor() as cur:
            for statement in split_statements(data, breaks):
                if failed.is_set():
                    break
                rows += cur.execute(statement)
    except ValueError as exc:
        raise EngineError(str(exc)) from exc
    except pymysql.err.MySQLError as exc:
        raise classify(exc) from exc
    # Anything else (a damaged object, a storage failure) propagates as it is: its own class
    # says what happened (and gives the exit code).
    return rows


def _warn_dangling(conn: Any, db: str, tables: Sequence[str]) -> None:
    if not tables:
        return
    marks = ", ".join(["%s"] * len(tables))
    for table, ref_schema, ref in run(
            conn, "SELECT TABLE_NAME, UNIQUE_CONSTRAINT_SCHEMA, REFERENCED_TABLE_NAME FROM"  # noqa: S608 - only %s placeholders
            " information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s AND"
            f" TABLE_NAME IN ({marks})", (db, *tables)):
        if not run(conn, "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND"
                   " TABLE_NAME = %s", (ref_schema, ref)):
            log.warning("restored table %s.%s has a foreign key to %s.%s, which does not exist:"
                        " restore it too, or new rows in %s will be refused", db, table,
                        ref_schema, ref, table)
