"""What a check reports: the server's version and the privileges a backup or restore needs."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pymongo import MongoClient

log = logging.getLogger("safehold.engines.mongodb")
MIN_VERSION = (4, 4)
# Actions on the database's collections, and the built-in role that grants them all.
NEEDED = {
    "backup": (("find", "listCollections", "listIndexes"), "read"),
    "restore": (("listCollections", "insert", "createCollection", "createIndex",
                 "dropCollection", "renameCollectionSameDB"), "readWrite"),
}


def server_version(client: MongoClient[Any]) -> tuple[str, list[str]]:
    """(version for the manifest, problems). FerretDB reports the MongoDB version it mimics;
    its own version is appended."""
    info = client.admin.command("buildInfo")
    version = str(info.get("version", "unknown"))
    if info.get("ferretdbVersion"):
        version += f" (FerretDB {info['ferretdbVersion']})"
    numbers = tuple(int(n) for n in (info.get("versionArray") or [0, 0])[:2])
    if numbers < MIN_VERSION:
        return version, [f"MongoDB {version} is older than 4.4, the oldest version Safehold"
                         " supports; upgrade the server"]
    return version, []


def missing(client: MongoClient[Any], database: str,
            purpose: Literal["backup", "restore"]) -> list[str]:
    """Problems naming the actions the user lacks on ``database``, from ``connectionStatus``.

    Skipped (with a log line, not a problem) where the server does not report privileges
    (FerretDB) or nobody is logged in (access control off: everything is allowed).
    """
    status = client.admin.command("connectionStatus", showPrivileges=True)
    auth = status.get("authInfo") or {}
    if "authenticatedUserPrivileges" not in auth:
        log.warning("privilege check skipped: the server does not report privileges"
                    " (connectionStatus showPrivileges); the %s may still be refused", purpose)
        return []
    users = [f"{u.get('user')}@{u.get('db')}" for u in auth.get("authenticatedUsers") or []]
    if not users:
        log.info("privilege check skipped: not authenticated (access control is off)")
        return []
    granted: set[str] = set()
    for privilege in auth["authenticatedUserPrivileges"]:
        resource = privilege.get("resource") or {}
        if resource.get("anyResource") or (
                resource.get("db") in (database, "") and resource.get("collection") == ""):
            granted.update(privilege.get("actions") or [])
    actions, role = NEEDED[purpose]
    lacking = [a for a in actions if a not in granted]
    if not lacking:
        return []
    return [f"user {', '.join(users)} lacks {', '.join(lacking)} on database {database!r},"
            f" needed for {purpose}; grant the {role!r} role on it"]
