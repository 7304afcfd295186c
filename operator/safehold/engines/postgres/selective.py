"""Selective restore: chosen tables, with what they need, into an existing database, atomically.

For each requested table the pre-data archive gives its definition, owned sequences, defaults,
comments and privileges; its data archive gives its rows and sequence values; the post-data
archive gives its indexes, constraints, triggers, rules and policies (entries chosen by OID,
see :mod:`.toclist`). Types, functions, schemas and sequences the tables use are created only
when the target lacks them (a sequence created so gets the backup's value; one the target has
keeps its own, since setval cannot be rolled back). All of it runs as ONE psql transaction, fed
by pg_restore scripts streamed from the repository: any error rolls everything back and the
target is unchanged. psql commits at the end of its input, so a failing object stream kills
psql before its input is closed (:func:`.procs.feed`), and every object is read to its end,
its SHA-256 checked, before that end is reached.

Foreign keys to tables outside the restore are kept when the referenced table exists in the
target (its current rows must then satisfy them, or the restore fails and rolls back); when it
does not exist they are skipped with a warning, because the constraint cannot be created.
With ``conflict="replace"`` existing tables are dropped first (in the same transaction); if
other objects depend on them (views, foreign keys from tables not restored) the restore stops
with a ConflictError naming them. With ``conflict="fail"`` any existing table refuses the
restore. Partitions are tables of their own: list them as well as their parent.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

from psycopg2 import sql

from safehold.engines.base import ConflictError, DatabaseMissing
from safehold.engines.postgres import quote
from safehold.engines.postgres.archive import Archives, conninfo
from safehold.engines.postgres.catalog import Requirement, Table, Toc
from safehold.engines.postgres.conn import connect, from_psycopg
from safehold.engines.postgres.dump import POST, PRE
from safehold.engines.postgres.procs import Feeder
from safehold.engines.postgres.toclist import data_entries, select, wanted_texts

log = logging.getLogger("safehold.postgres")
_LOOKUP = {"type": "to_regtype", "function": "to_regprocedure", "sequence": "to_regclass",
           "schema": "to_regnamespace"}
# pg_restore 17+ writes this into every script; older servers reject the unknown setting.
_NEW_SETTING = b"SET transaction_timeout = 0;\n"


def resolve(toc: Toc, include: Iterable[str]) -> list[Table]:
    """The backup's tables named by ``include`` (``schema.table``, or a bare unique name)."""
    by_qualified = {t.qualified: t for t in toc.tables}
    by_name: dict[str, list[Table]] = defaultdict(list)
    for t in toc.tables:
        by_name[t.name].append(t)
    chosen: dict[int, Table] = {}
    for raw in include:
        name = raw.strip()
        matches = [by_qualified[name]] if name in by_qualified else by_name.get(name, [])
        if len(matches) > 1:
            raise ValueError(f"table name {name!r} is ambiguous in this backup: write one of "
                             + ", ".join(t.qualified for t in matches))
        if not matches:
            known = ", ".join(sorted(by_qualified)[:30]) or "no tables"
            raise DatabaseMissing(f"table {name!r} is not in this backup; it holds: {known}")
        chosen.setdefault(matches[0].oid, matches[0])
    return list(chosen.values())


def _quoted(qualified: str, toc: Toc) -> str | None:
    table = next((t for t in toc.tables if t.qualified == qualified), None)
    if table is None:
        return None
    return quote.qualified(table.schema, table.name)


def restore_tables(archives: Archives, toc: Toc, include: Sequence[str],
                   conflict: Literal["fail", "replace"], *, server_major: int) -> None:
    target = archives.target
    tables = resolve(toc, include)
    chosen = {t.qualified for t in tables}
    oids: set[int] = set()
    for t in tables:
        oids |= {t.oid, *t.parts, *(s.oid for s in t.sequences)}
    conn = connect(target)
    try:
        with conn.cursor() as cur:
            def exists(fn: str, ident: str) -> bool:
                cur.execute(sql.SQL("SELECT {}(%s) IS NOT NULL").format(sql.Identifier(fn)),
                            (ident,))
                return bool(cur.fetchone()[0])

            existing = [t for t in tables if exists("to_regclass", _quoted(t.qualified, toc)
                                                    or "")]
            if existing and conflict == "fail":
                raise ConflictError(
                    f"{target.describe()} already has table(s) "
                    + ", ".join(t.qualified for t in existing)
                    + "; use --conflict replace to drop and restore them")
            needed: dict[int, Requirement] = {r.oid: r for t in tables for r in t.requires}
            oids |= {oid for oid, r in needed.items()
                     if not (r.kind == "sequence" and r.ident in chosen)
                     and not exists(_LOOKUP[r.kind], r.ident)}
            for t in tables:
                for fk in t.foreign_keys:
                    ref = _quoted(fk.references, toc)
                    if fk.references in chosen or (ref and exists("to_regclass", ref)):
                        oids.add(fk.oid)
                    else:
                        log.warning("skipping foreign key %s of %s: the table it references, %s,"
                                    " is neither restored nor present in the target",
                                    fk.name, t.qualified, fk.references)
        conn.rollback()
    except Exception as exc:
        import psycopg2

        if isinstance(exc, psycopg2.Error):
            raise from_psycopg(exc, target, "inspecting the target") from None
        raise
    finally:
        conn.close()

    texts = wanted_texts(tables)
    # A sequence the tables use without owning it (DEFAULT nextval('seq')) keeps its value
    # when the target has it: setval cannot be rolled back, so it is never touched. One the
    # restore creates gets the backup's value, in the same transaction that creates it.
    created = [r for oid, r in needed.items() if r.kind == "sequence" and oid in oids]
    texts += tuple(f"SEQUENCE SET {schema} {name} "
                   for schema, name in (_schema_and_name(r) for r in created))
    objects = {t.object for t in tables if t.object}
    if created:
        objects |= {n for n, meta in toc.objects.items() if meta.get("rest")}
    pre, post = archives.listing(PRE), archives.listing(POST)
    parts = [(PRE, select(pre, oids, texts))]
    for obj in sorted(objects):  # their rows; their definitions and indexes come from schema.*
        parts.append((obj, select(data_entries(archives.listing(obj), pre, post), oids, texts)))
    parts.append((POST, select(post, oids, texts)))
    drop = ""
    if existing:
        drop = "DROP TABLE " + ", ".join(_quoted(t.qualified, toc) or "" for t in existing)
        drop += ";\n"
    strip = archives.tools.major >= 17 and server_major < 17

    def script() -> Iterator[bytes]:
        yield ("SET client_min_messages = warning;\n" + drop).encode()
        for name, lines in parts:
            if lines:
                blocks = archives.script(name, lines)
                yield from (_without(blocks, _NEW_SETTING) if strip else blocks)

    psql = archives.procs.start(
        [archives.tools.path("psql"), "--no-psqlrc", "--quiet", "--no-password",
         "--set=ON_ERROR_STOP=1", "--single-transaction", f"--dbname={conninfo(target.database)}",
         "--file=-"],
        target, "restoring tables " + ", ".join(sorted(chosen)), stdin=True)
    # A failed script() kills psql before its stdin is closed (see procs.feed): psql's single
    # transaction then never reaches the end of input that would commit it.
    feeder = Feeder(psql, script(), drain=False)
    try:
        psql.wait()
    except BaseException:
        psql.kill()
        feeder.join()  # a damaged object or a failed pg_restore is the cause
        raise
    feeder.join()


def _schema_and_name(req: Requirement) -> tuple[str, str]:
    if req.schema and req.name:
        return req.schema, req.name
    schema, name = quote.split_identifiers(req.ident)
    return schema, name


def _without(blocks: Iterator[bytes], line: bytes, head: int = 16384) -> Iterator[bytes]:
    """``blocks`` without the first occurrence of ``line`` in the script's first bytes."""
    buf = b""
    for block in blocks:
        buf += block
        if len(buf) >= head:
            break
    yield buf.replace(line, b"", 1)
    yield from blocks
