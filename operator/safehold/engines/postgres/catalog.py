"""What a backup holds, read from the catalogs inside the exported snapshot: ``toc.json``.

The table of contents lists every table with its size, row estimate and the data object that
holds its rows, plus, per table, the catalog OIDs of everything pg_dump emits for it (owned
sequences, defaults, indexes, constraints, triggers, rules, policies) and of the types,
functions and sequences it needs. pg_dump archives name their entries by the same OIDs, so a
selective restore can pick a table's entries out of the schema archives exactly (see
:mod:`.selective`) without guessing from names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg2.extensions import cursor as Cursor

from safehold.api.errors import IntegrityError
from safehold.engines import shape

TOC_FORMAT = 1
USER_SCHEMAS = ("n.nspname NOT IN ('pg_catalog', 'information_schema')"
                " AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'")
NOT_EXTENSION = ("NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = {cat}::regclass"
                 " AND e.objid = {oid} AND e.deptype = 'e')")


@dataclass
class Requirement:
    """A type, function or sequence a table needs, and how to look it up by name."""

    oid: int
    kind: str  # "type" | "function" | "sequence" | "schema"
    ident: str  # quoted, for to_reg*(): app.mood, app.f(integer), app.c_id_seq, app
    schema: str = ""  # unquoted, as pg_restore -l prints them
    name: str = ""


@dataclass
class ForeignKey:
    oid: int
    name: str
    references: str  # qualified name of the referenced table


@dataclass
class Table:
    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind: r table, p partitioned, m matview, f foreign
    bytes: int
    rows: int
    object: str | None = None  # the data object holding its rows
    sequences: list[Requirement] = field(default_factory=list)  # owned (serial / identity)
    parts: list[int] = field(default_factory=list)  # defaults, indexes, constraints, triggers...
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    requires: list[Requirement] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def has_rows(self) -> bool:
        return self.kind == "r"


@dataclass
class Toc:
    database: dict[str, str]
    tables: list[Table]
    sequences: list[str]
    views: list[str]
    functions: list[str]
    snapshot: str = ""
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    format: int = TOC_FORMAT

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, data: bytes) -> Toc:
        """A backup's ``toc.json`` object; IntegrityError (exit 4) for anything Safehold did
        not write, rather than a crash: an unencrypted backup's catalog is protected by
        nothing but the storage."""
        try:
            return cls.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(
                f"the backup's toc.json is not a catalog Safehold wrote ({shape.describe(exc)});"
                " the backup is damaged or was not written by Safehold") from None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Toc:
        if not isinstance(data, dict) or data.get("format") != TOC_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"toc.json format {found!r} is not {TOC_FORMAT}")
        shape.check(data, cls, "toc")
        tables = []
        for t in data["tables"]:
            t = dict(t)
            t["sequences"] = [Requirement(**r) for r in t["sequences"]]
            t["requires"] = [Requirement(**r) for r in t["requires"]]
            t["foreign_keys"] = [ForeignKey(**f) for f in t["foreign_keys"]]
            tables.append(Table(**t))
        return cls(**{**data, "tables": tables})


def read_toc(cur: Cursor) -> Toc:
    """The table of contents of the database ``cur`` sees (call inside the snapshot)."""
    cur.execute("""
        SELECT d.datname, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype
        FROM pg_database d WHERE d.datname = current_database()""")
    name, encoding, collate, ctype = cur.fetchone()
    database = {"name": name, "encoding": encoding, "collate": collate, "ctype": ctype}
    cur.execute(f"""
        SELECT c.oid, n.nspname, c.relname, c.relkind,
               CASE WHEN c.relkind IN ('r', 'm') THEN pg_table_size(c.oid) ELSE 0 END,
               greatest(c.reltuples, 0)::bigint
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'm', 'f', 'v', 'S') AND {USER_SCHEMAS}
          AND {NOT_EXTENSION.format(cat="'pg_class'", oid="c.oid")}
        ORDER BY n.nspname, c.relname""")  # noqa: S608 - constant SQL fragments
    rels = cur.fetchall()
    tables = {oid: Table(oid, s, n, k, size, rows) for oid, s, n, k, size, rows in rels
              if k in "rpmf"}
    _owned_sequences(cur, tables)
    _parts(cur, tables)
    _requirements(cur, tables)
    cur.execute(f"""
        SELECT format('%I.%I(%s)', n.nspname, p.proname, oidvectortypes(p.proargtypes))
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {USER_SCHEMAS} AND {NOT_EXTENSION.format(cat="'pg_proc'", oid="p.oid")}
        ORDER BY 1""")  # noqa: S608 - constant SQL fragments
    functions = [r[0] for r in cur.fetchall()]
    cur.execute("SELECT pg_current_snapshot()::text")
    return Toc(
        database=database,
        tables=list(tables.values()),
        sequences=[f"{s}.{n}" for _, s, n, k, _, _ in rels if k == "S"],
        views=[f"{s}.{n}" for _, s, n, k, _, _ in rels if k == "v"],
        functions=functions,
        snapshot=cur.fetchone()[0],
    )


def _owned_sequences(cur: Cursor, tables: dict[int, Table]) -> None:
    # deptype 'a' = OWNED BY (serial), 'i' = identity column.
    cur.execute("""
        SELECT d.refobjid, s.oid, format('%I.%I', n.nspname, s.relname), n.nspname, s.relname
        FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        JOIN pg_namespace n ON n.oid = s.relnamespace
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.deptype IN ('a', 'i')""")
    for table, oid, ident, schema, name in cur.fetchall():
        if table in tables:
            tables[table].sequences.append(Requirement(oid, "sequence", ident, schema, name))


def _parts(cur: Cursor, tables: dict[int, Table]) -> None:
    """OIDs of the archive entries that belong to each table (other than the table itself)."""
    cur.execute("""
        SELECT adrelid, oid FROM pg_attrdef
        UNION ALL SELECT indrelid, indexrelid FROM pg_index
        UNION ALL SELECT tgrelid, oid FROM pg_trigger WHERE NOT tgisinternal
        UNION ALL SELECT ev_class, oid FROM pg_rewrite WHERE rulename <> '_RETURN'
        UNION ALL SELECT polrelid, oid FROM pg_policy
        UNION ALL SELECT conrelid, oid FROM pg_constraint WHERE contype <> 'f'""")
    for table, oid in cur.fetchall():
        if table in tables:
            tables[table].parts.append(oid)
    cur.execute("""
        SELECT c.conrelid, c.oid, c.conname, format('%s.%s', n.nspname, r.relname)
        FROM pg_constraint c JOIN pg_class r ON r.oid = c.confrelid
        JOIN pg_namespace n ON n.oid = r.relnamespace WHERE c.contype = 'f'""")
    for table, oid, name, references in cur.fetchall():
        if table in tables:
            tables[table].foreign_keys.append(ForeignKey(oid, name, references))


def _requirements(cur: Cursor, tables: dict[int, Table]) -> None:
    """Types, functions, non-owned sequences and the schema each table's definition uses."""
    cur.execute(f"""
        WITH owners AS (
            SELECT 'pg_class'::regclass AS classid, oid AS objid, oid AS tab FROM pg_class
            UNION ALL SELECT 'pg_attrdef'::regclass, oid, adrelid FROM pg_attrdef
            UNION ALL SELECT 'pg_constraint'::regclass, oid, conrelid FROM pg_constraint
            UNION ALL SELECT 'pg_trigger'::regclass, oid, tgrelid FROM pg_trigger)
        SELECT DISTINCT o.tab, r.oid, r.kind, r.ident
        FROM owners o JOIN pg_depend d ON d.classid = o.classid AND d.objid = o.objid
        CROSS JOIN LATERAL (
            SELECT t.oid, 'type', format('%I.%I', n.nspname, t.typname)
            FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE d.refclassid = 'pg_type'::regclass
              AND t.oid = (SELECT CASE WHEN a.typelem <> 0 AND a.typcategory = 'A'
                                       THEN a.typelem ELSE a.oid END
                           FROM pg_type a WHERE a.oid = d.refobjid)
              AND {USER_SCHEMAS} AND {NOT_EXTENSION.format(cat="'pg_type'", oid="t.oid")}
            UNION ALL
            SELECT p.oid, 'function', format('%I.%I(%s)', n.nspname, p.proname,
                                             oidvectortypes(p.proargtypes))
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE d.refclassid = 'pg_proc'::regclass AND p.oid = d.refobjid
              AND {USER_SCHEMAS} AND {NOT_EXTENSION.format(cat="'pg_proc'", oid="p.oid")}
            UNION ALL
            SELECT s.oid, 'sequence', format('%I.%I', n.nspname, s.relname)
            FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
            WHERE d.refclassid = 'pg_class'::regclass AND s.oid = d.refobjid
              AND s.relkind = 'S' AND d.deptype = 'n'
            UNION ALL
            SELECT n.oid, 'schema', format('%I', n.nspname) FROM pg_namespace n
            WHERE d.refclassid = 'pg_namespace'::regclass AND n.oid = d.refobjid
              AND n.nspname <> 'public'
        ) AS r(oid, kind, ident)""")  # noqa: S608 - constant SQL fragments
    for table, oid, kind, ident in cur.fetchall():
        t = tables.get(table)
        if t is not None and oid not in {s.oid for s in t.sequences}:
            t.requires.append(Requirement(oid, kind, ident))
    for t in tables.values():
        t.requires.sort(key=lambda r: (r.kind != "schema", r.oid))
