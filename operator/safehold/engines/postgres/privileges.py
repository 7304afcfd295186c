"""What the connecting role may do, checked before a backup or restore starts.

Each missing privilege is named with the statement that grants it, so ``safehold check``
output can be handed to a DBA as is.
"""

from __future__ import annotations

import psycopg2
from psycopg2.extensions import ISOLATION_LEVEL_REPEATABLE_READ
from psycopg2.extensions import connection as Connection

from safehold.engines.postgres.catalog import USER_SCHEMAS
from safehold.engines.postgres.conn import PgTarget


def backup_problems(conn: Connection, target: PgTarget) -> list[str]:
    """pg_dump reads every table and sequence and locks every table of the user schemas."""
    user = target.user
    with conn.cursor() as cur:
        cur.execute(f"""
            SELECT format('USAGE on schema %I (GRANT USAGE ON SCHEMA %I TO %I)',
                          n.nspname, n.nspname, current_user)
            FROM pg_namespace n
            WHERE {USER_SCHEMAS} AND NOT has_schema_privilege(n.oid, 'USAGE')
            UNION ALL
            SELECT format('SELECT on %s %I.%I (GRANT SELECT ON %I.%I TO %I)',
                          CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END,
                          n.nspname, c.relname, n.nspname, c.relname, current_user)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'm', 'f', 'S') AND {USER_SCHEMAS}
              AND NOT has_table_privilege(c.oid, 'SELECT')
            ORDER BY 1""")  # noqa: S608 - constant SQL fragments
        missing = [row[0] for row in cur.fetchall()]
    conn.rollback()
    problems = [f"role {user!r} lacks {m}" for m in missing]
    problems += _snapshot_problem(conn, user)
    return problems


def _snapshot_problem(conn: Connection, user: str) -> list[str]:
    """A consistent parallel dump exports a snapshot; a standby or a pooler may not allow it."""
    conn.set_session(isolation_level=ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot()")
    except psycopg2.Error as exc:
        return [f"role {user!r} cannot export a snapshot (pg_export_snapshot in REPEATABLE"
                f" READ failed: {str(exc).strip()}); connect to the server directly, not"
                " through a transaction pooler"]
    finally:
        conn.rollback()
    return []


def restore_problems(conn: Connection, target: PgTarget) -> list[str]:
    """A restore needs CREATEDB, or an existing database it owns or may CREATE in."""
    user, db = target.user, target.database
    with conn.cursor() as cur:
        cur.execute("""
            SELECT r.rolsuper, r.rolcreatedb, d.oid IS NOT NULL,
                   coalesce(pg_has_role(d.datdba, 'MEMBER'), false),
                   coalesce(has_database_privilege(d.oid, 'CREATE'), false)
            FROM pg_roles r LEFT JOIN pg_database d ON d.datname = %s
            WHERE r.rolname = current_user""", (db,))
        superuser, createdb, exists, owner, create = cur.fetchone()
    conn.rollback()
    if superuser or createdb or (exists and (owner or create)):
        return []
    if not exists:
        return [f"role {user!r} lacks CREATEDB, so it cannot create database {db!r}: ALTER ROLE"
                f" {user} CREATEDB, or create the database with {user} as its owner"]
    return [f"role {user!r} neither owns database {db!r} nor has CREATE on it, and lacks"
            f" CREATEDB: GRANT CREATE ON DATABASE {db} TO {user} (tables), or ALTER ROLE"
            f" {user} CREATEDB (whole database)"]
