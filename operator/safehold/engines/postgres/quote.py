"""Every string that reaches PostgreSQL SQL, a conninfo or a pg_restore list goes through here.

Names and values come from the target database (table names, database settings), from a
backup's ``toc.json`` and from the user (``--include``, the target URL): any of them may hold
quotes, ``$$``, semicolons, newlines or any Unicode. SQL is composed with :mod:`psycopg2.sql`
(``Identifier`` / ``Literal``), never by pasting; the helpers below cover what that module
does not: qualified names as text for ``to_regclass()``-style lookups, the database settings
PostgreSQL stores as ``name=value`` text, and libpq conninfo values.
"""

from __future__ import annotations

from psycopg2 import sql

# Settings whose stored value is a list of double-quoted elements (pg_dump's
# variable_is_guc_list_quote): each element must be given back as its own literal.
LIST_QUOTE_SETTINGS = frozenset({
    "local_preload_libraries", "search_path", "session_preload_libraries",
    "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"})


def ident(name: str) -> str:
    """``name`` as a double-quoted identifier (quotes doubled), for text that is not SQL
    composed by psycopg2 (arguments of ``to_regclass()``, pg_dump ``-t`` patterns)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


def split_identifiers(text: str) -> list[str]:
    """The parts of a dotted name as ``format('%I.%I')`` or ``quote_ident`` write it:
    ``app."Odd ""x"`` gives ``app`` and ``Odd "x``."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            j, buf = i + 1, []
            while True:
                end = text.find('"', j)
                if end < 0:
                    raise ValueError(f"unterminated quoted identifier in {text!r}")
                buf.append(text[j:end])
                if text[end + 1:end + 2] == '"':
                    buf.append('"')
                    j = end + 2
                    continue
                i = end + 1
                break
            parts.append("".join(buf))
        else:
            end = text.find(".", i)
            end = n if end < 0 else end
            parts.append(text[i:end])
            i = end
        if i == n:
            return parts
        if text[i] != ".":
            raise ValueError(f"not a dotted identifier: {text!r}")
        i += 1


def split_setting_list(value: str) -> list[str]:
    """PostgreSQL's SplitGUCList: the elements of a stored list setting such as search_path,
    separated by commas, each bare or double-quoted (a doubled quote inside), blanks ignored."""
    items: list[str] = []
    i, n = 0, len(value)
    while i < n and value[i].isspace():
        i += 1
    if i == n:
        return items
    while True:
        if value[i] == '"':
            buf, j = [], i + 1
            while True:
                end = value.find('"', j)
                if end < 0:
                    raise ValueError(f"unterminated quote in setting list {value!r}")
                buf.append(value[j:end])
                if value[end + 1:end + 2] == '"':
                    buf.append('"')
                    j = end + 2
                    continue
                i = end + 1
                break
            items.append("".join(buf))
        else:
            start = i
            while i < n and value[i] != "," and not value[i].isspace():
                i += 1
            items.append(value[start:i])
        while i < n and value[i].isspace():
            i += 1
        if i == n:
            return items
        if value[i] != ",":
            raise ValueError(f"unexpected {value[i]!r} in setting list {value!r}")
        i += 1
        while i < n and value[i].isspace():
            i += 1


def setting(stored: str) -> tuple[str, sql.Composable]:
    """A ``pg_db_role_setting`` entry (``name=value``) as the name and the value to write after
    ``SET name =``: always literals, so a value chosen by a database owner stays a value
    (list settings such as search_path become one literal per element, as pg_dump does)."""
    name, _, value = stored.partition("=")
    if name.lower() in LIST_QUOTE_SETTINGS:
        items = split_setting_list(value)
        if not items:
            return name, sql.Literal("")
        return name, sql.SQL(", ").join(sql.Literal(item) for item in items)
    return name, sql.Literal(value)


def conninfo_value(value: str) -> str:
    """A libpq conninfo value: single-quoted, backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
