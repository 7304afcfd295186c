"""Several databases in one target: how each database's backups are named in the repository.

A target that names several databases (or all of a server's) writes one backup per database,
each under its own repository target ``<target>@<database>`` with its own chain, retention and
lease; the server-wide objects (PostgreSQL roles, MariaDB users and grants) go under
``<target>@~globals``. ``@`` never occurs in a plain target name, so neither form can collide
with one. A database name that is not made of letters, digits, ``.``, ``_`` and ``-`` is
written as its sanitized form plus ``~`` and a hash of the real name; the real name is in the
manifest's ``database`` field, bound by its MAC (docs/format.md). Pure functions, both planes.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

SEPARATOR = "@"
GLOBALS = "~globals"
_PLAIN_DB = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
_PART = re.compile(r"^(?:[A-Za-z0-9_.-]{1,64}(?:~[0-9a-f]{12})?|~globals)$")
DatabaseStatus = Literal["completed", "failed"]
RunStatus = Literal["success", "partial", "failure"]


def database_part(database: str) -> str:
    """The repository form of a database name (see the module's docstring)."""
    if not database:
        raise ValueError("a database name is empty")
    if _PLAIN_DB.match(database):
        return database
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", database)[:48] or "_"
    return f"{cleaned}~{hashlib.sha256(database.encode()).hexdigest()[:12]}"


def database_key(target: str, database: str) -> str:
    """``orders@shop``: the repository target holding ``database``'s backups of ``target``."""
    return f"{target}{SEPARATOR}{database_part(database)}"


def globals_key(target: str) -> str:
    """``orders@~globals``: the repository target holding the server-wide objects."""
    return f"{target}{SEPARATOR}{GLOBALS}"


def split_key(name: str) -> tuple[str, str | None]:
    """(target, database part or None) of a repository target name."""
    target, sep, part = name.partition(SEPARATOR)
    return (target, part) if sep else (name, None)


def is_database_part(part: str) -> bool:
    return bool(_PART.match(part))


def run_status(completed: int, failed: int) -> RunStatus:
    """A multi-database run's verdict: every database backed up, some, or none."""
    if failed == 0:
        return "success"
    return "partial" if completed else "failure"
