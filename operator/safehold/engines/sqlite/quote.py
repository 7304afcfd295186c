"""Every name that reaches SQLite SQL goes through here (values are always ``?`` parameters).

Table, column, index and trigger names come from the backed-up file and from ``--include``;
they may hold quotes, semicolons, newlines or any Unicode.
"""

from __future__ import annotations


def ident(name: str) -> str:
    """``name`` as a double-quoted SQLite identifier (quotes doubled)."""
    if "\0" in name:
        raise ValueError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'
