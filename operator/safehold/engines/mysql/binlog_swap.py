"""All or nothing for restores that replay the binary log: the full is restored, and the log
replayed, into a scratch database (``<dest>_safehold_pitr``); only when the replay has
succeeded are its tables swapped into the destination with the restore's own atomic step
(:func:`.swap.swap_in`), and its views, routines, triggers and events (as the replay left them)
created there. A failed replay drops the scratch database: the destination is untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

from safehold.engines.base import ConflictError, EngineError
from safehold.engines.mysql import quote
from safehold.engines.mysql.catalog import read_catalog
from safehold.engines.mysql.conn import Target, connect, run
from safehold.engines.mysql.swap import (
    Definition,
    create_definitions,
    drop_leftovers,
    drop_routines_and_events,
    name_foreign_keys,
    park_foreign_keys,
    swap_in,
)

ORDER = {"view": 0, "procedure": 1, "function": 1, "trigger": 2, "event": 3}


def scratch_name(db: str) -> str:
    return f"{db[:48]}_safehold_pitr"


def check_conflict(target: Target, conflict: str) -> None:
    """``--conflict fail``: refuse a destination that holds anything, before any work."""
    if conflict != "fail":
        return
    conn = connect(target, database=None)
    try:
        held = run(conn, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                   (target.database,))[0][0]
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    if held:
        raise ConflictError(f"database {target.database} is not empty and the conflict policy"
                            " is 'fail'; use --conflict replace, or restore into another database")


def drop_scratch(target: Target) -> None:
    conn = connect(target, database=None)
    try:
        run(conn, f"DROP DATABASE IF EXISTS {quote.name(scratch_name(target.database))}")
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def promote(target: Target) -> None:
    """Swap the scratch database's tables into the destination, then its definitions."""
    db, scratch = target.database, scratch_name(target.database)
    conn: Any = connect(target.with_database(scratch))
    try:
        lock = "safehold:" + hashlib.sha1(db.encode()).hexdigest()[:24]
        if run(conn, "SELECT GET_LOCK(%s, 0)", (lock,))[0][0] != 1:
            raise EngineError(f"another restore into {db} is running; wait for it to finish")
        catalog = read_catalog(conn, scratch)
        for trigger in catalog.of_kind("trigger"):  # triggers cannot leave their database
            run(conn, f"DROP TRIGGER {quote.qualified(scratch, trigger.name)}")
        drop_leftovers(conn, db)
        charset = (f" CHARACTER SET {quote.literal(catalog.charset, conn)}"
                   f" COLLATE {quote.literal(catalog.collation, conn)}")
        run(conn, f"CREATE DATABASE IF NOT EXISTS {quote.name(db)}{charset}")
        tables = [t.name for t in catalog.tables]
        parked = park_foreign_keys(conn, scratch, db, restored=set(tables))
        views = [v for (v,) in run(conn, "SELECT TABLE_NAME FROM information_schema.TABLES"
                                   " WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'VIEW'", (db,))]
        swap_in(conn, db, scratch, tables, replace_all=True, drop_views=views)
        name_foreign_keys(conn, db, parked)
        drop_routines_and_events(conn, db)
        run(conn, f"ALTER DATABASE {quote.name(db)}{charset}")
        objects = sorted(catalog.objects, key=lambda o: ORDER[o.kind])  # stable: views ordered
        create_definitions(conn, db, [Definition(o.kind, o.name, o.sql, o.sql_mode,
                                                 o.collation, o.time_zone) for o in objects])
    finally:
        with contextlib.suppress(Exception):
            conn.close()
