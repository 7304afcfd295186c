"""Checks for every database and collection name a MongoDB restore sends to the server.

MongoDB takes names as values in commands (no quoting, no injection into a query language),
but a name decides *where* data goes: a collection name from a backup's ``toc.json`` or from
``--include`` must never address a system collection, another database (``renameCollection``
takes ``db.collection``) or anything the server would read as an operator. So names are
checked against the server's own rules before the first write, with a message naming the
offending name.
"""

from __future__ import annotations

from safehold.engines.base import EngineError

_DB_FORBIDDEN = set('/\\. "$*<>:|?\0')
MAX_DB_BYTES = 63
MAX_NAMESPACE_BYTES = 255


class InvalidName(EngineError):
    """A database or collection name the server would refuse or misread."""


def database(name: str) -> str:
    bad = sorted(set(name) & _DB_FORBIDDEN)
    if not name or bad or len(name.encode()) > MAX_DB_BYTES:
        raise InvalidName(
            f"{name!r} is not a usable MongoDB database name: 1-{MAX_DB_BYTES} bytes without"
            " / \\ . space \" $ * < > : | ? or NUL; fix the database in the target URI")
    return name


def collection(db: str, name: str, *, suffix: str = "") -> str:
    """``name`` if it is an ordinary collection's name in ``db`` (also with ``suffix``, the
    staging name, appended)."""
    problem = None
    if not isinstance(name, str) or not name:
        problem = "it is empty"
    elif "\0" in name:
        problem = "it contains NUL"
    elif "$" in name:
        problem = "it contains '$'"
    elif name.startswith("system."):
        problem = "system collections are the server's own"
    elif len(f"{db}.{name}{suffix}".encode()) > MAX_NAMESPACE_BYTES:
        problem = f"{db}.{name}{suffix} is longer than {MAX_NAMESPACE_BYTES} bytes"
    if problem:
        raise InvalidName(f"collection name {name!r} cannot be restored: {problem}")
    return name
