"""Choosing entries of a pg_dump archive to restore (``pg_restore -l`` / ``-L``).

A listing line is ``<dump id>; <catalog oid> <object oid> <desc> <schema> <tag> <owner>``.
Entries with an object OID (tables, table data, indexes, constraints, triggers, types,
functions, ...) are matched by the OIDs recorded in ``toc.json``; the few without one (sequence
ownership and values, comments, privileges) are matched by their exact ``desc schema tag``
text, which pg_restore prints unquoted. A verbose listing (``pg_restore -l -v``) follows each
entry with the dump ids it depends on (``;\tdepends on: 850 6``), ids of the same archive.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from safehold.engines.postgres.catalog import Table

_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_DEPENDS = re.compile(r"^;\s*depends on:((?: \d+)*)\s*$")
PG_CLASS = 1259  # the catalog of a TABLE entry's object (pg_class)


@dataclass(frozen=True)
class Entry:
    line: str
    oid: int
    text: str  # "<desc> <schema> <tag> <owner>"
    dump_id: int = 0
    catalog: int = 0
    deps: tuple[int, ...] = ()  # the dump ids it depends on (a verbose listing's; else none)

    @property
    def is_table(self) -> bool:
        """A table's definition (CREATE TABLE), not its rows nor a partition's attachment."""
        return self.catalog == PG_CLASS and self.text.startswith("TABLE ") \
            and not self.text.startswith(("TABLE DATA ", "TABLE ATTACH "))

    @property
    def is_sequence(self) -> bool:
        """A sequence's definition (CREATE SEQUENCE, or an identity column's), not its value
        (SEQUENCE SET) nor its owner (SEQUENCE OWNED BY)."""
        return self.catalog == PG_CLASS and self.text.startswith("SEQUENCE ") \
            and not self.text.startswith(("SEQUENCE SET ", "SEQUENCE OWNED BY "))

    @property
    def value_text(self) -> str:
        """The text of the SEQUENCE SET entry that sets this sequence's value."""
        return "SEQUENCE SET " + self.text.removeprefix("SEQUENCE ")


def parse_listing(listing: str) -> list[Entry]:
    entries: list[Entry] = []
    for line in listing.splitlines():
        match = _LINE.match(line)
        if match:
            entries.append(Entry(line, int(match[3]), match[4], int(match[1]), int(match[2])))
        elif entries and (depends := _DEPENDS.match(line)):
            last = entries[-1]
            entries[-1] = Entry(last.line, last.oid, last.text, last.dump_id, last.catalog,
                                last.deps + tuple(int(d) for d in depends[1].split()))
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


def data_entries(entries: Iterable[Entry], *schema: Iterable[Entry]) -> list[Entry]:
    """The entries of a data archive that are neither pre- nor post-data: those the backup's
    schema archives (``schema``: schema.pre's and schema.post's listings, taken in the same
    snapshot) do not list too. A data archive of a newer backup also holds its tables'
    post-data (:data:`.dump.WITH_POST_DATA`) and pre-data (:data:`.dump.WITH_PRE_DATA`)."""
    known = {(e.oid, e.text) for listing in schema for e in listing}
    return [e for e in entries if (e.oid, e.text) not in known]


# What in schema.pre may be made after the rows of the tables it depends on, for a table
# created with its rows (:func:`created_with_rows`): a column's separate default, a sequence's
# owner, privileges, comments, labels, views. Nothing that loading a table's rows or building
# its indexes can need. Anything else that depends on such a table (a type or function over
# its row type, a table inheriting from it or partitioning it) keeps that table in schema.pre's
# first part, created before any rows, as before. Its own sequences (serial, identity) are
# made with it (PreDataSplit.sequences).
_LATE_KINDS = ("DEFAULT ", "SEQUENCE OWNED BY ", "ACL ", "COMMENT ", "SECURITY LABEL ",
               "VIEW ", "MATERIALIZED VIEW ")
# What runs a user's code: loading the rows of a table that depends on one (a CHECK constraint,
# a generated column or a domain that calls a function) may read any other table, which
# PostgreSQL does not record as a dependency (a function's body is not parsed for them).
_CODE = ("FUNCTION ", "PROCEDURE ", "AGGREGATE ")
# Entries that pg_restore applies when it reads an archive's table of contents (its session's
# settings), whatever a list selects, or only with --create: never worth a pg_restore of their own.
_READ_ONLY = ("ENCODING ", "STDSTRINGS ", "SEARCHPATH ", "DATABASE ")


@dataclass(frozen=True)
class PreDataSplit:
    """schema.pre in three parts around the data archives (:func:`created_with_rows`)."""

    created_with_rows: frozenset[int]  # table oids: each made by its data archive
    before: list[str]  # listing lines restored before any data archive
    after: list[str]  # those restored once every data archive is in
    # each such table's own sequences (schema.pre's entries), made right after it: the data
    # archive holding the table holds their definitions and values too
    sequences: dict[int, list[Entry]] = field(default_factory=dict)


# No table created with its rows: a restore that did not split schema.pre (it loads it whole,
# before any rows).
NOTHING_CREATED = PreDataSplit(frozenset(), [], [])


def created_with_rows(pre: list[Entry], tables: Collection[int]) -> PreDataSplit:
    """Which of ``tables`` (oids of tables whose rows are in data archives that also hold
    their definitions) can be created by their data archive, right before their rows, rather
    than all of them by schema.pre before any rows load: the tables that depend on no other
    such table and on which nothing depends but their own sequences (those that depend on
    nothing else of theirs) and entries of :data:`_LATE_KINDS`; none where loading any of them
    runs a user's function (:data:`_CODE`), which may read any table. ``pre`` is schema.pre's
    verbose listing (its dependencies). The rest of schema.pre is split into what those
    tables depend on in no way (``before``, in schema.pre's order, which pg_dump sorted by
    dependency) and what depends on them (``after``).

    Creating a table means creating its files, which on one server takes one core (the
    kernel serialises creations in a database's directory); made one at a time between the
    loads of rows, that work overlaps theirs instead of holding them all back."""
    by_id = {e.dump_id: e for e in pre}
    ancestors: dict[int, frozenset[int]] = {}

    def above(dump_id: int) -> frozenset[int]:
        """Every entry of ``pre`` that ``dump_id`` depends on, directly or not."""
        if dump_id in ancestors:
            return ancestors[dump_id]
        ancestors[dump_id] = frozenset()  # a cycle (pg_dump breaks them) ends here
        found: set[int] = set()
        for dep in by_id[dump_id].deps:
            if dep in by_id:
                found.add(dep)
                found |= above(dep)
        ancestors[dump_id] = frozenset(found)
        return ancestors[dump_id]

    wanted = set(tables)
    chosen = {e.dump_id for e in pre if e.is_table and e.oid in wanted}
    if any(by_id[a].text.startswith(_CODE) for d in chosen for a in above(d)):
        chosen = set()  # every table exists before any rows load, as the code may expect
    owned: dict[int, int] = {}
    while True:
        late = {e.dump_id for e in pre if e.dump_id not in chosen and above(e.dump_id) & chosen}
        # a table's own sequence: it depends on that one table and on nothing else late
        owned = {d: next(iter(above(d) & chosen)) for d in late
                 if by_id[d].is_sequence and len(above(d) & chosen) == 1
                 and not any(dep in late for dep in by_id[d].deps)}
        blocking = {d for d in late - owned.keys()
                    if not by_id[d].text.startswith(_LATE_KINDS)}
        blocking |= {d for d in chosen if above(d) & chosen}
        evicted = {a for d in blocking for a in above(d) & chosen}
        if not evicted:
            break
        chosen -= evicted
    sequences: dict[int, list[Entry]] = {}
    for d, table in owned.items():
        sequences.setdefault(by_id[table].oid, []).append(by_id[d])
    return PreDataSplit(
        frozenset(by_id[d].oid for d in chosen),
        [e.line for e in pre if e.dump_id not in chosen and e.dump_id not in late
         and not e.text.startswith(_READ_ONLY)],
        [e.line for e in pre if e.dump_id in late and e.dump_id not in owned], sequences)
