"""A PostgreSQL server's roles, as the server-wide object of an all-databases target.

What ``pg_dumpall --roles-only`` carries, read with queries instead of a tool: every role's
attributes and password hash (SCRAM or md5, as stored in ``pg_authid``: reading it needs a
superuser) and the role memberships. Left out: the bootstrap superuser (the new server has its
own) and the built-in ``pg_*`` roles. The backup is one JSON object (``roles.json``); a restore
creates every role in ONE transaction, so a failure leaves the server as it was. Roles that
already exist are refused (``existing="fail"``, naming them) or skipped and reported
(``existing="skip"``); nothing is altered.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import psycopg2
from psycopg2 import sql

from safehold.engines.base import (
    BackupOutcome,
    BackupRequest,
    BackupSink,
    Capabilities,
    ChainReader,
    CheckReport,
    ConflictError,
    EngineError,
    PermissionDenied,
    RestoreRequest,
)
from safehold.engines.postgres.conn import PgTarget, admin_connection, connect, from_psycopg

OBJECT = "roles.json"
Existing = Literal["fail", "skip"]
_FLAGS = (("rolsuper", "SUPERUSER"), ("rolinherit", "INHERIT"), ("rolcreaterole", "CREATEROLE"),
          ("rolcreatedb", "CREATEDB"), ("rolcanlogin", "LOGIN"),
          ("rolreplication", "REPLICATION"), ("rolbypassrls", "BYPASSRLS"))
_ROLES = ("SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,"
          " rolreplication, rolbypassrls, rolconnlimit, rolpassword, rolvaliduntil::text"
          " FROM pg_authid WHERE oid <> 10 AND rolname !~ '^pg_' ORDER BY rolname")
_MEMBERS = ("SELECT r.rolname, m.rolname, a.admin_option FROM pg_auth_members a"
            " JOIN pg_authid r ON r.oid = a.roleid JOIN pg_authid m ON m.oid = a.member"
            " WHERE r.oid <> 10 AND m.oid <> 10 AND r.rolname !~ '^pg_'"
            " ORDER BY 1, 2")


def list_databases(target: PgTarget) -> list[str]:
    """Every database a backup can connect to (templates left out), sorted."""
    conn = connect(target)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT"
                        " datistemplate ORDER BY datname")
            return [row[0] for row in cur.fetchall()]
    except psycopg2.Error as exc:
        raise from_psycopg(exc, target, "listing the databases") from None
    finally:
        conn.close()


def read_roles(target: PgTarget) -> dict[str, Any]:
    conn = connect(target)
    try:
        with conn.cursor() as cur:
            cur.execute(_ROLES)
            names = [d[0] for d in cur.description or ()]
            roles = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            cur.execute(_MEMBERS)
            members = [{"role": r, "member": m, "admin": bool(a)} for r, m, a in cur.fetchall()]
    except psycopg2.errors.InsufficientPrivilege:
        raise PermissionDenied(
            f"{target.user} may not read the roles' passwords (pg_authid) on {target.describe()}",
            hint="back up the roles as a superuser, or leave them out (--no-globals;"
            " databases.globals: false on a BackupTarget)") from None
    except psycopg2.Error as exc:
        raise from_psycopg(exc, target, "reading the roles") from None
    finally:
        conn.close()
    return {"roles": roles, "memberships": members}


def _create(role: dict[str, Any]) -> sql.Composed:
    options = [sql.SQL(word if role[flag] else "NO" + word) for flag, word in _FLAGS]
    options.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(role["rolconnlimit"]))))
    if role.get("rolpassword"):
        options.append(sql.SQL("PASSWORD {}").format(sql.Literal(role["rolpassword"])))
    if role.get("rolvaliduntil"):
        options.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(role["rolvaliduntil"])))
    return sql.SQL("CREATE ROLE {} WITH {}").format(sql.Identifier(role["rolname"]),
                                                   sql.SQL(" ").join(options))


def apply_roles(target: PgTarget, data: dict[str, Any], existing: Existing) -> list[str]:
    """Create the roles and memberships of ``data``; returns the names skipped as existing."""
    roles = data.get("roles", [])
    conn = admin_connection(target)
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                        ([r["rolname"] for r in roles],))
            present = sorted(row[0] for row in cur.fetchall())
            if present and existing == "fail":
                raise ConflictError(
                    f"role(s) {', '.join(present)} already exist on {target.describe()};"
                    " nothing was created",
                    hint="restore the roles into a new server, or pass --existing skip to"
                    " create only the missing ones (existing roles are left as they are)")
            for role in roles:
                if role["rolname"] not in present:
                    cur.execute(_create(role))
            for m in data.get("memberships", []):
                if m["member"] in present:  # an existing role is left as it is
                    continue
                grant = sql.SQL("GRANT {} TO {}").format(sql.Identifier(m["role"]),
                                                         sql.Identifier(m["member"]))
                if m["admin"]:
                    grant = grant + sql.SQL(" WITH ADMIN OPTION")
                cur.execute(grant)
        conn.commit()
        return present
    except psycopg2.Error as exc:
        conn.rollback()
        raise from_psycopg(exc, target, "creating the roles") from None
    finally:
        conn.close()


class PostgresRoles:
    """The roles of a server, behind the Engine protocol so the pipeline stores them."""

    name: ClassVar[str] = "postgresql"
    capabilities: ClassVar[Capabilities] = Capabilities(backup_types=("full",))

    def __init__(self, target: PgTarget, existing: Existing = "fail") -> None:
        self.target = target
        self.existing = existing
        self.skipped: list[str] = []

    def check(self, purpose: Literal["backup", "restore"]) -> CheckReport:
        return CheckReport(ok=True)

    def estimate_size(self) -> int | None:
        return None

    def require_database(self) -> None:
        """Server-wide objects belong to no database: nothing can be missing."""

    def backup(self, request: BackupRequest, sink: BackupSink, chain: ChainReader
               ) -> BackupOutcome:
        data = read_roles(self.target)
        body = json.dumps(data, sort_keys=True, default=str).encode()
        sink.put(OBJECT, [body], meta={"roles": len(data["roles"])})
        return BackupOutcome(engine_meta={"globals": "roles"})

    def restore(self, request: RestoreRequest, chain: ChainReader) -> None:
        backup = request.chain[-1]
        if backup.engine_meta.get("globals") != "roles":
            raise EngineError(f"backup {backup.backup_id} holds no PostgreSQL roles")
        data = json.loads(b"".join(chain.open(backup, OBJECT)))  # read (and checked) whole first
        self.skipped = apply_roles(self.target, data, self.existing)
