"""A server's databases and server-wide objects, for targets that name several databases.

``database_url`` points a target URL at another database of the same server (same host, user,
TLS and options); ``list_databases`` asks the server which databases an all-databases target
covers; ``globals_engine`` is the Engine that backs up and restores the server-wide objects
(PostgreSQL roles, MySQL/MariaDB users and grants). SQLite is one file: it has none of these.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from safehold.engines.base import ConnectionOptions, Engine, UnsupportedError

Existing = Literal["fail", "skip"]
_FAMILY = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql",
           "mariadb": "mysql", "mongodb": "mongodb", "mongodb+srv": "mongodb"}
MONGO_SYSTEM = ("admin", "config", "local")


def family(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in _FAMILY:
        raise UnsupportedError(
            f"a {scheme or 'URL without a scheme'} target holds one database: several databases"
            " (or all of a server's) are for postgresql://, mysql://, mariadb:// and mongodb://")
    return _FAMILY[scheme]


def database_url(url: str, database: str) -> str:
    """``url`` with its database replaced by ``database`` (everything else kept)."""
    kind = family(url)
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if kind == "postgresql":  # ?dbname= carries any name ('/' included), the path cannot
        query = [(k, v) for k, v in query if k != "dbname"] + [("dbname", database)]
        return urlunsplit((parts.scheme, parts.netloc, "/", urlencode(query), parts.fragment))
    if kind == "mongodb" and parts.username is not None \
            and not any(k.lower() == "authsource" for k, _ in query):
        # the user logs in where the URL said, not in each database it backs up
        query.append(("authSource", parts.path.lstrip("/") or "admin"))
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database, safe=""),
                       urlencode(query), parts.fragment))


def open_database(url: str, database: str, options: ConnectionOptions) -> Engine:
    """The engine of ``database`` on ``url``'s server; a name the URL cannot carry is the
    user's to fix (UsageError), never a bug."""
    from safehold.api.errors import UsageError
    from safehold.engines.base import open_engine, redact_url

    try:
        return open_engine(database_url(url, database), options)
    except ValueError as exc:
        raise UsageError(f"database {database!r}: {redact_url(str(exc))}") from None


def list_databases(url: str, options: ConnectionOptions) -> list[str]:
    """The databases an all-databases target backs up: every one but the system ones."""
    kind = family(url)
    if kind == "postgresql":
        from safehold.engines.postgres.conn import parse_target
        from safehold.engines.postgres.roles import list_databases as pg_list

        return pg_list(parse_target(url, options))
    if kind == "mysql":
        from safehold.engines.mysql.accounts import list_databases as my_list
        from safehold.engines.mysql.conn import parse_target as my_parse

        return my_list(my_parse(url, options))
    from safehold.engines.mongodb.engine import MongoEngine

    engine = MongoEngine.from_url(url, options)
    with engine._connect() as client:
        names = client.list_database_names()
    return sorted(n for n in names if n not in MONGO_SYSTEM)


def globals_engine(url: str, options: ConnectionOptions, existing: Existing = "fail"
                   ) -> Engine:
    """The Engine of the server-wide objects (roles, or users and grants)."""
    kind = family(url)
    if kind == "postgresql":
        from safehold.engines.postgres.conn import parse_target
        from safehold.engines.postgres.roles import PostgresRoles

        return PostgresRoles(parse_target(url, options), existing)
    if kind == "mysql":
        from safehold.engines.mysql.accounts import MySQLAccounts
        from safehold.engines.mysql.conn import parse_target as my_parse

        return MySQLAccounts(my_parse(url, options), existing)
    raise UnsupportedError("MongoDB users are not backed up as server-wide objects yet;"
                           " back up the admin database's users with the server's own tools")
