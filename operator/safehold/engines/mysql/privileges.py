"""``check``: can this user back up (or restore) this database? Each missing privilege by name.

Reading rows is tested for real (the dump's own ``SELECT``, with ``LIMIT 0``), because column
grants and roles make the grant tables hard to read right. The other privileges come from
``information_schema.*_PRIVILEGES``, matched the way the server matches them (a schema grant is
a ``LIKE`` pattern such as ``app\\_%``); privileges that reach the user only through a role may
be reported missing although the server would allow them (MariaDB lists a role's grants under
the role's name, which is included when the role is active).
"""

from __future__ import annotations

from typing import Any

from safehold.engines.base import EngineError
from safehold.engines.mysql.catalog import Column, Table
from safehold.engines.mysql.conn import quote_name, run
from safehold.engines.mysql.rows import select_rows

# What a restore does in the target database and in its staging database (see swap.py).
RESTORE_TARGET = ("SELECT", "INSERT", "CREATE", "DROP", "ALTER", "INDEX", "REFERENCES",
                  "CREATE VIEW", "SHOW VIEW", "TRIGGER", "CREATE ROUTINE", "ALTER ROUTINE",
                  "EVENT")
RESTORE_STAGE = ("SELECT", "INSERT", "CREATE", "DROP", "ALTER", "INDEX", "REFERENCES")


class Grants:
    """The current user's privileges: global, per schema (patterns) and per table."""

    def __init__(self, conn: Any) -> None:
        user, role = run(conn, "SELECT CURRENT_USER(), "
                         + ("CURRENT_ROLE()" if _has_roles(conn) else "NULL"))[0]
        name, _, host = str(user).rpartition("@")
        grantees = [f"'{name}'@'{host}'"] + ([f"'{role}'"] if role else [])
        self.conn, self.grantees = conn, tuple(grantees)
        where = " OR ".join(["GRANTEE = %s"] * len(grantees))
        self.where = f"({where})"
        self.global_ = {p for (p,) in run(conn, "SELECT PRIVILEGE_TYPE FROM"  # noqa: S608 - only %s placeholders
                                          f" information_schema.USER_PRIVILEGES WHERE {where}",
                                          self.grantees)}

    def on_schema(self, db: str) -> set[str]:
        rows = run(self.conn, "SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES"  # noqa: S608 - only %s placeholders
                   f" WHERE {self.where} AND %s LIKE TABLE_SCHEMA", (*self.grantees, db))
        return self.global_ | {p for (p,) in rows}

    def on_tables(self, db: str) -> dict[str, set[str]]:
        base = self.on_schema(db)
        out: dict[str, set[str]] = {}
        for table, priv in run(self.conn, "SELECT TABLE_NAME, PRIVILEGE_TYPE FROM"  # noqa: S608 - only %s placeholders
                               f" information_schema.TABLE_PRIVILEGES WHERE {self.where}"
                               " AND TABLE_SCHEMA = %s", (*self.grantees, db)):
            out.setdefault(table, set(base)).add(priv)
        return out


def _has_roles(conn: Any) -> bool:
    return "mariadb" in str(run(conn, "SELECT VERSION()")[0][0]).lower()


def backup_problems(conn: Any, db: str) -> list[str]:
    """What keeps ``conn``'s user from a complete backup of ``db`` (run with ``db`` current)."""
    grants = Grants(conn)
    schema = grants.on_schema(db)
    per_table = grants.on_tables(db)
    problems = []
    if "SELECT" not in schema:
        problems.append(
            f"SELECT is not granted on `{db}`.* (only table by table): tables without a grant"  # noqa: S608 - a message, not a query
            f" are invisible to the user and would be missing from backups; GRANT SELECT ON"
            f" {quote_name(db)}.*")
    kinds = run(conn, "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME", (db,))
    columns: dict[str, list[Column]] = {}
    for table, name, data_type in run(conn, "SELECT TABLE_NAME, COLUMN_NAME, LOWER(DATA_TYPE)"
                                      " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s"
                                      " ORDER BY ORDINAL_POSITION", (db,)):
        columns.setdefault(table, []).append(Column(name, data_type))
    unreadable, no_trigger, no_view = [], [], []
    for name, kind in kinds:
        privs = per_table.get(name, schema)
        if kind == "VIEW":
            if "SHOW VIEW" not in privs:
                no_view.append(name)
            continue
        if "TRIGGER" not in privs:
            no_trigger.append(name)
        try:
            run(conn, select_rows(Table(name, "", columns.get(name, []))) + " LIMIT 0")
        except EngineError:
            unreadable.append(name)
    if unreadable:
        problems.append(f"SELECT is missing on table(s) {', '.join(unreadable)} of `{db}`")
    if no_trigger:
        problems.append(f"TRIGGER is missing on table(s) {', '.join(no_trigger)} of `{db}`"
                        " (triggers of such tables are invisible and would not be backed up)")
    if no_view:
        problems.append(f"SHOW VIEW is missing on view(s) {', '.join(no_view)} of `{db}`")
    if "EVENT" not in schema:
        problems.append(f"EVENT is missing on `{db}`.* (needed to read its scheduled events)")
    for name, kind in run(conn, "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM"
                          " information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s", (db,)):
        if run(conn, f"SHOW CREATE {kind} {quote_name(name)}")[0][2] is None:
            problems.append(f"cannot read {kind.lower()} {name}: be its definer or have SELECT"
                            " on mysql.proc (MariaDB) / SHOW_ROUTINE (MySQL)")
    return problems


def backup_notes(conn: Any) -> list[str]:
    """What makes a backup slower without failing it (see .snapshot)."""
    if "RELOAD" in Grants(conn).global_:
        return []
    return ["RELOAD is not granted: backups cannot share one snapshot between connections"
            " (the global read lock needs it), so they read every table on one connection;"
            " GRANT RELOAD ON *.* for parallel reads"]


def restore_problems(conn: Any, db: str, stage: str) -> list[str]:
    grants = Grants(conn)
    problems = []
    for where, needed in ((db, RESTORE_TARGET), (stage, RESTORE_STAGE)):
        missing = [p for p in needed if p not in grants.on_schema(where)]
        if missing:
            role = "target database" if where == db else "staging database"
            problems.append(f"{', '.join(missing)} missing on {quote_name(where)}.* (the"
                            f" {role} of a restore)")
    return problems
