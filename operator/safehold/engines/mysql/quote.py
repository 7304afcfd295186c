"""Every string that reaches MySQL/MariaDB SQL goes through here (or is a ``%s`` parameter).

Database, table, column, constraint and routine names come from the server, from a backup's
``toc.json`` and from the user (``--include``, the target URL); any of them may hold backticks,
quotes, semicolons, newlines or any Unicode. Values are passed as PyMySQL parameters wherever
a statement takes them; identifiers cannot be, so they are backquoted here; the few values
written into a script (``schema.sql``) are escaped here.
"""

from __future__ import annotations

from typing import Any

from pymysql.constants import SERVER_STATUS
from pymysql.converters import escape_string


def name(identifier: str) -> str:
    """A backquoted identifier (names may hold any character, even a backquote)."""
    if "\0" in identifier:
        raise ValueError(f"identifier {identifier!r} contains a NUL character")
    return "`" + identifier.replace("`", "``") + "`"


def qualified(database: str, identifier: str) -> str:
    return f"{name(database)}.{name(identifier)}"


def names(identifiers: list[str] | tuple[str, ...]) -> str:
    """``a`, `b`` for a column list."""
    return ", ".join(name(i) for i in identifiers)


def literal(value: str, conn: Any = None) -> str:
    """A single-quoted string literal. With ``conn`` (a PyMySQL connection) escaped the way
    that session needs (it knows whether ``NO_BACKSLASH_ESCAPES`` is on); without, for a
    script read in the default ``sql_mode`` (backslash, quotes, NUL, newlines escaped)."""
    if conn is not None and conn.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES:
        return "'" + value.replace("'", "''") + "'"
    return "'" + str(escape_string(value)) + "'"


RULES = frozenset({"CASCADE", "SET NULL", "SET DEFAULT", "RESTRICT", "NO ACTION"})


def rule(text: str) -> str:
    """A foreign key's ON DELETE / ON UPDATE action, as information_schema reports it."""
    if text.upper() not in RULES:
        raise ValueError(f"unexpected foreign key rule {text!r}")
    return text.upper()
