"""A MariaDB/MySQL server's users and grants, as the server-wide object of an all-databases
target.

Each account is read as ``SHOW CREATE USER`` (password hash, authentication plugin, TLS and
resource options included) and ``SHOW GRANTS``; MariaDB roles as ``CREATE ROLE`` plus their
grants. Left out: the server's bootstrap and system accounts (``root``, ``mysql`` and anonymous
accounts on localhost, 127.0.0.1, ::1 and the server's host name; ``mariadb.sys``,
``mysql.*``), which every new server has. A restore
refuses, naming them, when accounts of the backup already exist (``existing="fail"``) or skips
them with a report (``existing="skip"``); the account the restore runs as is always skipped.
DDL is not transactional here: when a statement fails, the accounts created so far are dropped
again, so the server is left as it was.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, ClassVar, Literal

from safehold.engines.base import (
    BackupOutcome,
    BackupRequest,
    BackupSink,
    Capabilities,
    ChainReader,
    CheckReport,
    ConflictError,
    EngineError,
    RestoreRequest,
)
from safehold.engines.mysql.conn import Target, connect, run

OBJECT = "accounts.json"
Existing = Literal["fail", "skip"]
SYSTEM_SCHEMAS = ("information_schema", "mysql", "performance_schema", "sys")
_LOCAL = ("localhost", "127.0.0.1", "::1")


def _literal(conn: Any, text: str) -> str:
    return str(conn.escape(text))


def account(conn: Any, user: str, host: str) -> str:
    return f"{_literal(conn, user)}@{_literal(conn, host)}"


def list_databases(target: Target) -> list[str]:
    """Every database but the system schemas, sorted."""
    conn = connect(target, database=None)
    try:
        names = [row[0] for row in run(conn, "SHOW DATABASES")]
    finally:
        conn.close()
    return sorted(n for n in names if n.lower() not in SYSTEM_SCHEMAS)


def _skipped_by_design(user: str, host: str, server_host: str) -> bool:
    """The accounts a new server is installed with (root, mysql and anonymous ones on the
    local host names, mariadb.sys, mysql.*)."""
    if user in ("root", "mysql", "") and host in (*_LOCAL, server_host):
        return True
    return user == "mariadb.sys" or user.startswith("mysql.")


def read_accounts(target: Target) -> list[dict[str, Any]]:
    conn = connect(target, database=None)
    try:
        try:
            rows = run(conn, "SELECT User, Host, is_role FROM mysql.user ORDER BY User, Host")
        except EngineError:  # MySQL has no is_role column: its roles are locked accounts
            rows = [(u, h, "N") for u, h in
                    run(conn, "SELECT User, Host FROM mysql.user ORDER BY User, Host")]
        server_host = _text(run(conn, "SELECT @@hostname")[0][0])
        accounts = []
        for user, host, is_role in rows:
            user, host = _text(user), _text(host)
            if _skipped_by_design(user, host, server_host):
                continue
            role = is_role == "Y"
            who = _literal(conn, user) if role else account(conn, user, host)
            create = (f"CREATE ROLE {who}" if role
                      else _text(run(conn, f"SHOW CREATE USER {who}")[0][0]))
            grants = [_text(r[0]) for r in run(conn, f"SHOW GRANTS FOR {who}")]
            accounts.append({"user": user, "host": host, "role": role, "create": create,
                             "grants": grants})
        return accounts
    finally:
        conn.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def apply_accounts(target: Target, accounts: list[dict[str, Any]], existing: Existing
                   ) -> list[str]:
    """Create ``accounts`` with their grants; returns the accounts skipped as existing."""
    conn = connect(target, database=None)
    created: list[tuple[str, str]] = []  # (ROLE or USER, quoted name)
    try:
        me = _text(run(conn, "SELECT CURRENT_USER()")[0][0])
        present = {(_text(u), _text(h)) for u, h in run(conn, "SELECT User, Host FROM mysql.user")}
        mine = tuple(me.rsplit("@", 1)) if "@" in me else (me, "")
        clashes = [a for a in accounts if (a["user"], a["host"]) in present]
        conflicting = [a for a in clashes if (a["user"], a["host"]) != mine]
        if conflicting and existing == "fail":
            names = ", ".join(f"{a['user']}@{a['host']}" for a in conflicting)
            raise ConflictError(
                f"account(s) {names} already exist on {target}; nothing was created",
                hint="restore the users into a new server, or pass --existing skip to create"
                " only the missing ones (existing accounts are left as they are)")
        for a in accounts:  # defence in depth: only account statements, never anything else
            _check_statements(a)
        skipped = [f"{a['user']}@{a['host']}" for a in clashes]
        todo = [a for a in accounts if a not in clashes]
        try:
            for a in todo:  # every account (and role) first: grants may name each other
                run(conn, a["create"])
                created.append(("ROLE", _literal(conn, a["user"])) if a["role"]
                               else ("USER", account(conn, a["user"], a["host"])))
            for a in todo:
                for grant in a["grants"]:
                    run(conn, grant)
            run(conn, "FLUSH PRIVILEGES")
        except EngineError:
            for kind, who in reversed(created):  # leave the server as it was
                with contextlib.suppress(EngineError):
                    run(conn, f"DROP {kind} {who}")
            raise
        return skipped
    finally:
        conn.close()


def _check_statements(a: dict[str, Any]) -> None:
    create = ("CREATE ROLE ",) if a.get("role") else ("CREATE USER ",)
    if not str(a.get("create", "")).upper().startswith(create) or not all(
            str(g).upper().startswith(("GRANT ", "SET DEFAULT ROLE ")) for g in a["grants"]):
        raise EngineError(f"the backup's statements for {a.get('user')!r}@{a.get('host')!r}"
                          " are not CREATE USER/ROLE and GRANT statements; nothing was created",
                          hint="restore only backups this repository's safehold wrote")


class MySQLAccounts:
    """The users and grants of a server, behind the Engine protocol so the pipeline stores
    them."""

    name: ClassVar[str] = "mysql"
    capabilities: ClassVar[Capabilities] = Capabilities(backup_types=("full",))

    def __init__(self, target: Target, existing: Existing = "fail") -> None:
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
        accounts = read_accounts(self.target)
        body = json.dumps({"accounts": accounts}, sort_keys=True).encode()
        sink.put(OBJECT, [body], meta={"accounts": len(accounts)})
        return BackupOutcome(engine_meta={"globals": "accounts"})

    def restore(self, request: RestoreRequest, chain: ChainReader) -> None:
        backup = request.chain[-1]
        if backup.engine_meta.get("globals") != "accounts":
            raise EngineError(f"backup {backup.backup_id} holds no MySQL/MariaDB accounts")
        data = json.loads(b"".join(chain.open(backup, OBJECT)))  # read (and checked) whole first
        self.skipped = apply_accounts(self.target, data["accounts"], self.existing)
