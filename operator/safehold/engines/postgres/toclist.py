"""Choosing entries of a pg_dump archive for a selective restore (``pg_restore -l`` / ``-L``).

A listing line is ``<dump id>; <catalog oid> <object oid> <desc> <schema> <tag> <owner>``.
Entries with an object OID (tables, table data, indexes, constraints, triggers, types,
functions, ...) are matched by the OIDs recorded in ``toc.json``; the few without one (sequence
ownership and values, comments, privileges) are matched by their exact ``desc schema tag``
text, which pg_restore prints unquoted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from safehold.engines.postgres.catalog import Table

_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")


@dataclass(frozen=True)
class Entry:
    line: str
    oid: int
    text: str  # "<desc> <schema> <tag> <owner>"


def parse_listing(listing: str) -> list[Entry]:
    entries = []
    for line in listing.splitlines():
        match = _LINE.match(line)
        if match:
            entries.append(Entry(line, int(match[3]), match[4]))
    return entries


def wanted_texts(tables: Iterable[Table]) -> tuple[str, ...]:
    """Prefixes of the OID-less entries that belong to ``tables`` and their sequences."""
    texts: list[str] = []
    for t in tables:
        texts += [f"{kind} {t.schema} {obj} {t.name}{end}"
                  for kind in ("COMMENT", "ACL", "SECURITY LABEL")
                  for obj, end in (("TABLE", " "), ("COLUMN", "."))]
        for s in t.sequences:
            texts += [f"SEQUENCE OWNED BY {s.schema} {s.name} ",
                      f"SEQUENCE SET {s.schema} {s.name} ",
                      f"ACL {s.schema} SEQUENCE {s.name} ",
                      f"COMMENT {s.schema} SEQUENCE {s.name} "]
    return tuple(texts)


def listed(text: str) -> str:
    """``text`` as ``pg_restore -l`` prints names: line breaks become spaces."""
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def select(entries: Iterable[Entry], oids: set[int], texts: tuple[str, ...]) -> list[str]:
    prefixes = tuple(listed(t) for t in texts)
    return [e.line for e in entries
            if (e.oid in oids if e.oid else e.text.startswith(prefixes))]


def data_entries(entries: Iterable[Entry], post: Iterable[Entry]) -> list[Entry]:
    """The entries of a data archive that are not post-data: those ``post`` (the backup's
    post-data archive, taken in the same snapshot) does not list too. A data archive of a
    newer backup also holds its tables' post-data (:data:`.dump.WITH_POST_DATA`)."""
    known = {(e.oid, e.text) for e in post}
    return [e for e in entries if (e.oid, e.text) not in known]
