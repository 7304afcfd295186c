"""Put a loaded staging database's tables in place of the target's, all at once.

The restore loads every table into a staging database (``<db>_safehold_stage``) while the
target stays untouched; then one ``RENAME TABLE`` statement moves the target's old tables aside
(``_safehold_old_*``, in the same database: tables with triggers cannot leave their database)
and the staged tables in. With atomic DDL (MariaDB 10.6+, MySQL 8.0) that statement is
all-or-nothing, even across a crash: a restore that fails or is killed before it leaves the
existing data as it was.

Before the swap, every foreign key of a staged table gets a temporary name (InnoDB names
foreign keys per database, so the replaced table's ``fk`` would collide with the staged one's)
and is made to reference the real database where its table is not being restored.

What cannot be atomic, and happens right after the swap, in this order:

* foreign keys elsewhere that pointed at a replaced table followed it when it was renamed
  aside (InnoDB renames references too); they are re-pointed at the restored table;
* the old tables are dropped (with their triggers), then the empty staging database;
* the restored tables' foreign keys get their own names back (one ALTER per table);
* views, routines, triggers and events are created (each in its original ``sql_mode``), so
  for a few milliseconds the restored tables have no triggers. Views are dropped just before
  the swap (they hold no data).

A restore killed in that window leaves ``_safehold_old_*`` tables and/or the staging database;
the next restore into the same database removes them (a named lock keeps two restores of one
database apart).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from safehold.engines.mysql import quote
from safehold.engines.mysql.conn import run

log = logging.getLogger(__name__)
OLD_PREFIX = "_safehold_old_"


@dataclass(frozen=True)
class Definition:
    """A view, routine, trigger or event to create after the swap."""

    kind: str
    name: str
    sql: str
    sql_mode: str = ""
    collation: str = ""
    time_zone: str = ""


def stage_name(db: str) -> str:
    return f"{db[:48]}_safehold_stage"


def drop_leftovers(conn: Any, db: str) -> None:
    """Remove what a killed restore of ``db`` left behind (we hold the restore lock)."""
    stage = stage_name(db)
    if run(conn, "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (stage,)):
        log.warning("dropping %s, left by an interrupted restore", stage)
        run(conn, f"DROP DATABASE {quote.name(stage)}")
    old = tables_like(conn, db, OLD_PREFIX)
    if old:
        log.warning("dropping %s in %s, left by an interrupted restore", ", ".join(old), db)
        run(conn, "DROP TABLE " + ", ".join(f"{quote.name(db)}.{quote.name(t)}" for t in old))


def tables_like(conn: Any, db: str, prefix: str) -> list[str]:
    pattern = prefix.replace("_", "\\_") + "%"
    return [t for (t,) in run(conn, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE"
                              " TABLE_SCHEMA = %s AND TABLE_NAME LIKE %s", (db, pattern))]


def swap_in(conn: Any, db: str, stage: str, tables: Sequence[str], *, replace_all: bool,
            drop_views: Sequence[str]) -> None:
    """The atomic step, and the clean-up of the tables it replaced.

    ``replace_all``: every table of ``db`` goes (a whole-database restore); otherwise only
    those named in ``tables``. ``drop_views`` are dropped first (names being restored).
    """
    q = quote.name
    run(conn, "SET SESSION foreign_key_checks = 0")
    existing = {t for (t,) in run(conn, "SELECT TABLE_NAME FROM information_schema.TABLES"
                                  " WHERE TABLE_SCHEMA = %s AND TABLE_TYPE <> 'VIEW'", (db,))}
    if drop_views:
        run(conn, "DROP VIEW IF EXISTS " + ", ".join(f"{q(db)}.{q(v)}" for v in drop_views))
    outgoing = sorted(existing) if replace_all else [t for t in tables if t in existing]
    token = secrets.token_hex(3)
    aside = {name: f"{OLD_PREFIX}{token}_{i}" for i, name in enumerate(outgoing)}
    moves = [f"{q(db)}.{q(t)} TO {q(db)}.{q(old)}" for t, old in aside.items()]
    moves += [f"{q(stage)}.{q(t)} TO {q(db)}.{q(t)}" for t in tables]
    if moves:
        run(conn, "RENAME TABLE " + ", ".join(moves))
    if aside:
        _repoint_foreign_keys(conn, db, {old: t for t, old in aside.items()})
        run(conn, "DROP TABLE " + ", ".join(f"{q(db)}.{q(old)}" for old in aside.values()))
    run(conn, f"DROP DATABASE {q(stage)}")


def _repoint_foreign_keys(conn: Any, db: str, renamed: dict[str, str]) -> None:
    """Foreign keys of kept tables (in any database) that followed a table renamed aside."""
    q = quote.name
    marks = ", ".join(["%s"] * len(renamed))
    rows = run(conn, "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME,"  # noqa: S608 - only %s placeholders
               " REFERENCED_TABLE_NAME, UPDATE_RULE, DELETE_RULE FROM"
               " information_schema.REFERENTIAL_CONSTRAINTS WHERE UNIQUE_CONSTRAINT_SCHEMA = %s"
               f" AND REFERENCED_TABLE_NAME IN ({marks})", (db, *renamed))
    for schema, table, name, old, on_update, on_delete in rows:
        if schema == db and table in renamed:
            continue  # an old table itself: dropped next
        cols = run(conn, "SELECT COLUMN_NAME, REFERENCED_COLUMN_NAME FROM"
                   " information_schema.KEY_COLUMN_USAGE WHERE CONSTRAINT_SCHEMA = %s AND"
                   " TABLE_NAME = %s AND CONSTRAINT_NAME = %s AND REFERENCED_TABLE_NAME = %s"
                   " ORDER BY ORDINAL_POSITION", (schema, table, name, old))
        here = f"{q(schema)}.{q(table)}"
        log.info("re-pointing foreign key %s of %s at the restored %s", name, here,
                 renamed[old])
        run(conn, f"ALTER TABLE {here} DROP FOREIGN KEY {q(name)}")
        run(conn, f"ALTER TABLE {here} ADD CONSTRAINT {q(name)} FOREIGN KEY"
            f" ({', '.join(q(c) for c, _ in cols)}) REFERENCES {q(db)}.{q(renamed[old])}"
            f" ({', '.join(q(r) for _, r in cols)}) ON DELETE {quote.rule(on_delete)}"
            f" ON UPDATE {quote.rule(on_update)}")


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key of a staged table, parked under a temporary name until after the swap."""

    table: str
    name: str
    parked: str
    columns: tuple[str, ...]
    ref_db: str | None  # None: the restored database (whether or not the table is restored)
    ref_table: str
    ref_columns: tuple[str, ...]
    on_delete: str
    on_update: str

    def clause(self, name: str, ref_db: str) -> str:
        return (f"ADD CONSTRAINT {quote.name(name)} FOREIGN KEY ({quote.names(self.columns)})"
                f" REFERENCES {quote.qualified(ref_db, self.ref_table)}"
                f" ({quote.names(self.ref_columns)}) ON DELETE {quote.rule(self.on_delete)}"
                f" ON UPDATE {quote.rule(self.on_update)}")


def park_foreign_keys(conn: Any, stage: str, db: str, *, restored: set[str]
                      ) -> list[ForeignKey]:
    """Before the swap: give every foreign key of the staged tables a temporary name, and make
    those that reference a table of the staging database that is not being restored reference
    that table in ``db``, the real database, instead.

    Why: a table's DDL names a referenced table of its own database without the database, so
    in staging it points into staging, and a rename carries it along still pointing there.
    And InnoDB names foreign keys per database: moving a staged table whose key is called
    ``fk`` into ``db`` while the table it replaces (renamed aside) still has a key ``fk``
    fails (error 1050). :func:`name_foreign_keys` gives the keys their names back once the old
    tables are gone. Runs with ``foreign_key_checks = 0``, as the load did (in place, no copy).
    """
    rows = run(conn, "SELECT TABLE_NAME, CONSTRAINT_NAME, UPDATE_RULE, DELETE_RULE FROM"
               " information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s"
               " ORDER BY TABLE_NAME, CONSTRAINT_NAME", (stage,))
    token = secrets.token_hex(4)
    parked: list[ForeignKey] = []
    by_table: dict[str, list[str]] = {}
    for i, (table, name, on_update, on_delete) in enumerate(rows):
        cols = run(conn, "SELECT COLUMN_NAME, REFERENCED_COLUMN_NAME, REFERENCED_TABLE_SCHEMA,"
                   " REFERENCED_TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE"
                   " CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s AND CONSTRAINT_NAME = %s AND"
                   " REFERENCED_TABLE_NAME IS NOT NULL ORDER BY ORDINAL_POSITION",
                   (stage, table, name))
        if not cols:
            continue
        ref_schema, ref_table = cols[0][2], cols[0][3]
        fk = ForeignKey(table, name, f"_safehold_fk_{token}_{i}", tuple(c[0] for c in cols),
                        None if ref_schema == stage else ref_schema, ref_table,
                        tuple(c[1] for c in cols), on_delete, on_update)
        if fk.ref_db is None and ref_table not in restored:
            log.info("foreign key %s of %s references %s, which is not restored: it keeps"
                     " referencing %s.%s", name, table, ref_table, db, ref_table)
        # Restored tables are referenced in staging: the reference follows their rename.
        ref_db = fk.ref_db or (stage if ref_table in restored else db)
        by_table.setdefault(table, []).append(
            f"DROP FOREIGN KEY {quote.name(name)}, {fk.clause(fk.parked, ref_db)}")
        parked.append(fk)
    run(conn, "SET SESSION foreign_key_checks = 0")
    try:
        for table, changes in by_table.items():
            run(conn, f"ALTER TABLE {quote.qualified(stage, table)} {', '.join(changes)}")
    finally:
        run(conn, "SET SESSION foreign_key_checks = 1")
    return parked


def name_foreign_keys(conn: Any, db: str, parked: Sequence[ForeignKey]) -> None:
    """After the swap: each parked foreign key gets its own name back (one ALTER per table,
    so a table never lacks the key)."""
    by_table: dict[str, list[str]] = {}
    for fk in parked:
        by_table.setdefault(fk.table, []).append(
            f"DROP FOREIGN KEY {quote.name(fk.parked)}, {fk.clause(fk.name, fk.ref_db or db)}")
    run(conn, "SET SESSION foreign_key_checks = 0")
    try:
        for table, changes in by_table.items():
            run(conn, f"ALTER TABLE {quote.qualified(db, table)} {', '.join(changes)}")
    finally:
        run(conn, "SET SESSION foreign_key_checks = 1")


def drop_routines_and_events(conn: Any, db: str) -> None:
    q = quote.name
    for name, kind in run(conn, "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM"
                          " information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s", (db,)):
        run(conn, f"DROP {kind} {q(db)}.{q(name)}")
    for (name,) in run(conn, "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE"
                       " EVENT_SCHEMA = %s", (db,)):
        run(conn, f"DROP EVENT {q(db)}.{q(name)}")


def create_definitions(conn: Any, db: str, definitions: Sequence[Definition]) -> None:
    """Create each definition in ``db`` in the session settings it was made with."""
    run(conn, f"USE {quote.name(db)}")
    try:
        for d in definitions:
            run(conn, "SET SESSION sql_mode = %s", (d.sql_mode,))
            if d.collation:
                run(conn, "SET SESSION collation_connection = %s", (d.collation,))
            if d.time_zone:
                run(conn, "SET SESSION time_zone = %s", (d.time_zone,))
            run(conn, d.sql)
    finally:
        run(conn, "SET NAMES utf8mb4")
        run(conn, "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO', time_zone = '+00:00'")
