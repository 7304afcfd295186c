"""Whole-database restore: build a staging database, then swap it in by renaming.

The backup is restored into ``<db>__safehold_<id>`` (pre-data archive; the data archives in
parallel, ``jobs`` at a time, each listed while the pre-data loads, then streamed into its own
pg_restore with each table created right before its rows where the archive holds its definition
and nothing else needs it first (:func:`.toclist.created_with_rows`) and its indexes built right
after them; the pre-data that depends on those tables; the rest of post-data with
``pg_restore -j``). Only when all of that succeeded is the swap done, in one transaction: the
existing database is renamed aside and the staging one takes its name; the old one is then
dropped. Until that commit the existing database is untouched, so a failed or killed restore
leaves it as it was (plus, if the process was killed, a staging database to drop). The tools
that load the staging database commit without waiting for WAL flushes
(:meth:`.conn.PgTarget.staging`); the swap's commit waits for them all.

Active connections: sessions on the existing database are terminated just before the swap
(pg_terminate_backend; needs superuser, the database owner's own sessions, or
pg_signal_backend); autovacuum's workers are left to the rename, which ends them
(:func:`sessions_ended`). Clients reconnecting reach the restored database; a session that
slips in before the rename is retried a few times, then the restore fails and changes nothing.
Database-level settings (ALTER DATABASE ... SET) are copied from the replaced database, as
literals (:func:`.quote.setting`: a value its owner chose is never pasted as SQL);
database-level GRANTs are not (pg_dump does not record them without --create).

Leftovers and concurrency: a restore killed outright (SIGKILL, OOM, node loss) cannot drop its
staging database, so each whole restore first drops the ``<db>__safehold_restore_<hex>``
databases a predecessor left behind (logged one by one). To never drop a staging database
that is still being loaded, every whole restore holds a session-level advisory lock, keyed on
that staging-name prefix, on its maintenance connection from start to end (the server releases
it when the session ends, however the process died). A second restore into the same database
waits up to ``LOCK_WAIT`` seconds for it, then fails naming the session that holds it, rather
than queueing silently behind a restore that may run for hours. Keying on the prefix rather
than the full name also serialises two long names that truncate to the same prefix.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Literal

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from safehold.api.errors import IntegrityError
from safehold.engines.base import ConflictError, EngineError, PermissionDenied
from safehold.engines.common import run_parallel
from safehold.engines.postgres import quote
from safehold.engines.postgres.archive import Archives, Spool
from safehold.engines.postgres.catalog import Table, Toc
from safehold.engines.postgres.conn import PgTarget, from_psycopg
from safehold.engines.postgres.dump import POST, PRE, WITH_POST_DATA, WITH_PRE_DATA
from safehold.engines.postgres.toclist import (
    NOTHING_CREATED,
    Entry,
    PreDataSplit,
    created_with_rows,
    data_entries,
)

log = logging.getLogger("safehold.postgres")
SWAP_ATTEMPTS = 5
LOCK_WAIT = 10.0  # seconds a restore waits for another restore into the same database
SESSION_END_WAIT = 1.0  # seconds the swap waits, in small steps, for ending sessions to go
STAGING_TAG = "restore_"


def side_name(database: str, tag: str) -> str:
    """``<db>__safehold_<tag>``, shortened to PostgreSQL's 63-byte identifier limit."""
    suffix = f"__safehold_{tag}"
    head = database.encode()[: 63 - len(suffix)].decode("utf-8", "ignore")
    return head + suffix


def restore_database(archives: Archives, toc: Toc, conflict: Literal["fail", "replace"],
                     jobs: int, admin: Connection) -> None:
    """Restore the whole database through a staging database swapped in at the end (above).
    ``admin`` is an autocommit connection to a maintenance database (``admin_connection``),
    the caller's to close: the restore's lock is held on it until then."""
    target = archives.target
    staging = side_name(target.database, f"{STAGING_TAG}{secrets.token_hex(4)}")
    try:
        with admin.cursor() as cur:
            _lock_target(cur, target)
            for leftover in leftover_stagings(cur, target.database):
                log.warning("dropping %s, left behind by an interrupted restore", leftover)
                _drop_quietly(admin, leftover)
            cur.execute("SELECT oid FROM pg_database WHERE datname = %s", (target.database,))
            exists = cur.fetchone() is not None
            if exists and conflict == "fail":
                raise ConflictError(f"database {target.database!r} already exists on"
                                    f" {target.describe()} and the conflict policy is 'fail';"
                                    " use --conflict replace or restore to another name")
        names = [n for n, meta in toc.objects.items() if meta.get("section") == "data"]
        # Data archives that hold their tables' definitions create some of them (below);
        # schema.pre is then spooled and listed with its dependencies, to split it.
        staged = bool(names) and all(toc.objects[n].get(WITH_PRE_DATA)
                                     and toc.objects[n].get(WITH_POST_DATA) for n in names)

        # The staging database is created and the pre-data loaded into it on a thread of
        # their own, while the schema archives are spooled and listed and the data archives
        # are listed: not after (each a pause of the server before the data).
        with archives.spooled(POST) as post, \
                (archives.spooled(PRE, dependencies=True) if staged
                 else contextlib.nullcontext()) as pre, \
                ThreadPoolExecutor(1, thread_name_prefix="safehold-pre-data") as pool:
            split = _splitter(pre, {t.oid for t in toc.tables if t.object in names})

            def schema() -> None:
                with admin.cursor() as cur:
                    _create(cur, staging, toc, target)
                if pre is None:
                    archives.load(PRE, staging)
                elif lines := split().before:
                    archives.load_file(pre.path, staging, lines, doing="restoring pre-data")

            ready = pool.submit(schema)
            try:
                _load_data(archives, toc, names, staging, jobs, post, ready.result, pre, split)
                _swap(admin, target, staging, exists)
            except BaseException:
                archives.procs.stop()
                futures_wait([ready])  # its pg_restore is killed; nothing may hold staging
                _drop_quietly(admin, staging)
                raise
    except psycopg2.Error as exc:
        raise from_psycopg(exc, target, "restoring the database") from None
    finally:
        archives.procs.close()


def _staging_prefix(database: str) -> str:
    """What every staging name of ``database`` starts with (the same for all: fixed-size tag)."""
    return side_name(database, STAGING_TAG + "0" * 8)[:-8]


def leftover_stagings(cur: psycopg2.extensions.cursor, database: str) -> list[str]:
    """Staging databases of ``database``; only called while holding its restore lock, so none
    of them belongs to a running restore."""
    prefix = _staging_prefix(database)
    cur.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,))
    pattern = re.compile(re.escape(prefix) + "[0-9a-f]{8}")
    return sorted(name for (name,) in cur.fetchall() if pattern.fullmatch(name))


def lock_key(database: str) -> int:
    """The advisory-lock key every whole restore into ``database`` holds."""
    digest = hashlib.sha256(f"safehold-restore:{_staging_prefix(database)}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _lock_target(cur: psycopg2.extensions.cursor, target: PgTarget) -> None:
    """Take the session-level restore lock of the target database, waiting up to LOCK_WAIT."""
    key = lock_key(target.database)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        if cur.fetchone()[0]:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    # A bigint advisory key shows in pg_locks as classid (high half) and objid (low half).
    cur.execute("""SELECT a.pid, coalesce(a.client_addr::text, 'local'), a.backend_start
                   FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                   WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                     AND l.classid::bigint = %s AND l.objid::bigint = %s""",
                ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF))
    holder = cur.fetchone()
    who = f" (server pid {holder[0]}, client {holder[1]}, since {holder[2]:%Y-%m-%d %H:%M:%S})" \
        if holder else ""
    raise EngineError(f"another restore into database {target.database!r} on"
                      f" {target.describe()} is running{who}; waited {LOCK_WAIT:.0f}s for it."
                      " Retry when it has finished (or end that session if it is stuck)")


def _create(cur: psycopg2.extensions.cursor, staging: str, toc: Toc, target: PgTarget) -> None:
    db = toc.database
    cur.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
    if not cur.fetchone()[0]:
        raise PermissionDenied(f"role {target.user!r} lacks CREATEDB, which a whole-database"
                               " restore needs for its staging database; ALTER ROLE"
                               f" {target.user} CREATEDB")
    cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING %s LC_COLLATE %s"
                        " LC_CTYPE %s").format(sql.Identifier(staging)),
                (db["encoding"], db["collate"], db["ctype"]))


def _splitter(pre: Spool | None, tables: Collection[int]) -> Callable[[], PreDataSplit]:
    """schema.pre's split (:func:`.toclist.created_with_rows`), worked out once, by the first
    thread to need it (once ``pre`` is listed); with no spooled ``pre``, no table is created
    by a data archive."""
    lock = threading.Lock()
    done: list[PreDataSplit] = []

    def split() -> PreDataSplit:
        with lock:
            if not done:
                done.append(NOTHING_CREATED if pre is None
                            else created_with_rows(pre.entries(), tables))
            return done[0]
    return split


# Post-data entries that belong to one table alone and may be made as soon as its rows are in.
_OWN_ENTRIES = ("INDEX ", "CONSTRAINT ", "TRIGGER ")


def _load_data(archives: Archives, toc: Toc, names: list[str], staging: str, jobs: int,
               post: Spool, pre_data: Callable[[], object], pre: Spool | None,
               split: Callable[[], PreDataSplit]) -> None:
    """Once ``pre_data`` returns (the tables exist, but those the data archives create; it
    raises if they never will), the data archives (``names``), ``jobs`` at a time, biggest
    first, each listed before that (and before the schema archives' listings are needed), each
    with the indexes, constraints (not foreign keys) and triggers of its tables, as
    ``pg_restore -j`` builds a table's indexes while other tables still load; then the
    pre-data that depends on the tables the data archives created (``split().after``: their
    defaults, views, privileges); then the rest of the post-data archive (foreign keys, index
    attachments, rules, policies, materialized view data, comments: what may span tables)
    with ``pg_restore -j``.

    An archive that holds its tables' post-data (:data:`.dump.WITH_POST_DATA`) is restored by
    one pg_restore with each table's own entries right after its rows (:func:`_interleaved`),
    and, when it holds their pre-data too and schema.pre was spooled (``pre``), each table
    that ``split`` says it creates right before its rows; one of an older backup, whole, and
    then its tables' own entries from ``schema.post``."""
    sizes = {n: sum(t.bytes for t in toc.tables if t.object == n) for n in names}
    owner = {oid: t.oid for t in toc.tables if t.object in sizes for oid in t.parts}
    owning = threading.Lock()
    owned: dict[int, list[Entry]] | None = None

    def own() -> dict[int, list[Entry]]:
        """Each data table's own schema.post entries, sorted out once, by the first thread
        to need them (once ``post`` is listed)."""
        nonlocal owned
        with owning:
            if owned is None:
                owned = {t.oid: [] for t in toc.tables if t.object in sizes}
                for e in post.entries():  # in schema.post's order (which pg_restore -L keeps)
                    if e.oid in owner and e.text.startswith(_OWN_ENTRIES):
                        owned[owner[e.oid]].append(e)
            return owned

    done: set[str] = set()  # the schema.post lines made with a data archive

    def load(name: str) -> None:
        tables = [t for t in toc.tables if t.object == name]
        if toc.objects[name].get(WITH_POST_DATA):
            made: list[Entry] = []
            schema = (post.entries(),) if pre is None else (post.entries(), pre.entries())
            archives.load(name, staging, lambda listing: _interleaved(
                listing, schema, tables, own(), made, split(), name),
                pre_data)
        else:
            archives.load(name, staging, ready=pre_data)
            made = [e for t in tables for e in own()[t.oid]]
            if made:
                archives.load_file(post.path, staging, [e.line for e in made],
                                   doing=f"restoring {name}'s indexes")
        done.update(e.line for e in made)

    run_parallel(load, sorted(names, key=lambda n: -sizes[n]), jobs=jobs,
                 name="safehold-pg_restore", on_failure=archives.procs.stop)
    pre_data()  # also when there was no data archive to wait for it
    if pre is not None and split().after:
        archives.load_file(pre.path, staging, split().after,
                           doing="restoring the pre-data that depends on the tables")
    rest = [e.line for e in post.entries() if e.line not in done]
    if rest:
        archives.load_file(post.path, staging, rest, jobs=jobs)


def _interleaved(listing: list[Entry], schema: Sequence[list[Entry]], tables: list[Table],
                 own: dict[int, list[Entry]], made: list[Entry],
                 split: PreDataSplit | None = None, name: str = "") -> list[str]:
    """The ``pg_restore -L`` lines restoring data archive ``name`` that holds its tables'
    post-data: its data entries (those ``schema``, the schema archives' listings, lack) in the
    archive's order (it is read as a stream), each table's rows followed by the table's own
    entries (:data:`_OWN_ENTRIES`; this archive's lines for them).

    A table that ``split`` says its data archive creates is preceded by its definition and its
    own sequences' (this archive's entries; a table without rows here comes first), and the
    values of those sequences are set by this archive only: the rest archive holds them too,
    and may reach them before the archive that creates them has. The ``schema.post`` entries
    so made are added to ``made``; the archive's other entries are left to the schema
    archives, as are own entries it lacks."""
    mine = {(e.oid, e.text): e for e in listing}
    ours = {t.oid for t in tables}
    split = split or NOTHING_CREATED
    created = ours & split.created_with_rows
    wanted = {s.oid for t in created for s in split.sequences.get(t, [])}
    found = {e.oid: e for e in listing if (e.is_table and e.oid in created)
             or (e.is_sequence and e.oid in wanted)}
    labels = {t.oid: f"table {t.qualified}" for t in tables if t.oid in created}
    labels |= {s.oid: f"sequence {_named(s)}" for t in created for s in split.sequences.get(t, [])}
    if lacking := sorted(label for oid, label in labels.items() if oid not in found):
        raise IntegrityError(_lacks(name, "the definition of", lacking))
    elsewhere = {s.value_text for t, seqs in split.sequences.items() if t not in ours
                 for s in seqs}
    data = [e for e in data_entries(listing, *schema) if e.text not in elsewhere]
    values = {e.text for e in data}
    if unset := sorted(_named(s) for t in created for s in split.sequences.get(t, [])
                       if s.value_text not in values):
        raise IntegrityError(_lacks(name, "the value (SEQUENCE SET) of sequence", unset))
    loaded = {e.oid for e in data if e.text.startswith("TABLE DATA ")}

    def define(table: int) -> list[str]:
        return [found[table].line, *(found[s.oid].line for s in split.sequences.get(table, []))]

    lines = [line for t in sorted(created - loaded) for line in define(t)]
    for entry in data:
        if entry.oid in created and entry.text.startswith("TABLE DATA "):
            lines += define(entry.oid)
        lines.append(entry.line)
        if entry.text.startswith("TABLE DATA ") and entry.oid in ours:
            for e in own[entry.oid]:
                if (e.oid, e.text) in mine:
                    lines.append(mine[(e.oid, e.text)].line)
                    made.append(e)
    return lines


def _named(sequence: Entry) -> str:
    """``schema.name`` of a SEQUENCE entry (``SEQUENCE <schema> <name> <owner>``), for a
    message: pg_restore prints names unquoted, so one with a space reads ambiguously."""
    schema, _, rest = sequence.text.removeprefix("SEQUENCE ").partition(" ")
    return f"{schema}.{rest.rsplit(' ', 1)[0]}"


def _lacks(archive: str, what: str, names: list[str]) -> str:
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return (f"data archive {archive} lacks {what} {', '.join(names[:3])}{more}, which its"
            " toc.json says it holds (with_pre_data): the backup is damaged or was not"
            " written by Safehold")


# The backend type of autovacuum's workers in pg_stat_activity (PostgreSQL 10 and newer).
AUTOVACUUM = "autovacuum worker"


def sessions_ended(cur: psycopg2.extensions.cursor, databases: Sequence[str],
                   timeout: float = SESSION_END_WAIT) -> bool:
    """Wait up to ``timeout`` seconds, in steps of a few milliseconds, until no other session
    is connected to any of ``databases``; whether none is. Only the sessions of roles count
    (``usesysid IS NOT NULL``: clients and their parallel workers). Autovacuum's workers have
    no role: a role that is not superuser (nor pg_read_all_stats) sees their backend_type as
    null, but their usesysid is null for every viewer.

    ``ALTER DATABASE ... RENAME`` waits for the database's other sessions itself, but it looks
    again only every 100 ms. The sessions in the way of a swap are just ending: those of the
    pg_restore processes that loaded the staging database (a client's exit does not wait for
    its server process to end) and those just terminated on the target. Without this wait a
    restore lost 100 ms about one time in five.

    An autovacuum worker does not end by itself soon: right after a load it vacuums and
    analyzes the tables just filled, for seconds. The rename (as ``DROP DATABASE``) ends such
    workers itself, so they are not waited for here (:func:`end_autovacuum` ends them
    earlier where the role may). Waiting for them cost a restore this whole timeout whenever
    a worker had started on the staging database (here every traced restore of 1 GB, about
    one untraced restore in five)."""
    deadline = time.monotonic() + timeout
    while True:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s)"
                    " AND pid <> pg_backend_pid() AND usesysid IS NOT NULL", (list(databases),))
        if cur.fetchone()[0] == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)


def end_autovacuum(cur: psycopg2.extensions.cursor, databases: Sequence[str]) -> None:
    """End the autovacuum workers on ``databases`` and wait briefly for them to go, where the
    role may see and signal them (a superuser; a role with pg_read_all_stats and, from
    PostgreSQL 18, pg_signal_autovacuum_worker).

    ``ALTER DATABASE ... RENAME`` ends them too, but then sleeps 100 ms before it looks again;
    a role that may not signal them leaves it at that. Vacuuming starts again on its own."""
    try:
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = ANY(%s) AND backend_type = %s",
                    (list(databases), AUTOVACUUM))
    except psycopg2.errors.InsufficientPrivilege:
        return
    if not cur.fetchone()[0]:
        return
    deadline = time.monotonic() + 0.1
    while time.monotonic() < deadline:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s)"
                    " AND backend_type = %s", (list(databases), AUTOVACUUM))
        if cur.fetchone()[0] == 0:
            return
        time.sleep(0.002)


def _swap(admin: Connection, target: PgTarget, staging: str, exists: bool) -> None:
    name = target.database
    with admin.cursor() as cur:
        if not exists:
            sessions_ended(cur, [staging])
            end_autovacuum(cur, [staging])
            cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(staging), sql.Identifier(name)))
            return
        _copy_settings(cur, name, staging)
        old = side_name(name, f"old_{secrets.token_hex(4)}")
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            # Only clients: a role that is not superuser may not terminate autovacuum's
            # workers (nor wait for them: sessions_ended); the rename ends them.
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s AND pid <> pg_backend_pid()"
                        " AND usesysid IS NOT NULL", (name,))
            sessions_ended(cur, [name, staging])  # a client that reconnects: see below
            end_autovacuum(cur, [name, staging])
            try:
                cur.execute("BEGIN")
                cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(name), sql.Identifier(old)))
                cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(staging), sql.Identifier(name)))
                cur.execute("COMMIT")
                break
            except psycopg2.errors.ObjectInUse:
                cur.execute("ROLLBACK")
                if attempt == SWAP_ATTEMPTS:
                    raise EngineError(
                        f"database {name!r} kept getting new connections; could not swap in"
                        " the restored copy (the existing database is unchanged): stop the"
                        " clients and retry") from None
                time.sleep(0.2 * attempt)
        log.info("restored database swapped in as %s; dropping the replaced one", name)
        cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(old)))


def _copy_settings(cur: psycopg2.extensions.cursor, source: str, dest: str) -> None:
    cur.execute("""SELECT unnest(s.setconfig) FROM pg_db_role_setting s
                   JOIN pg_database d ON d.oid = s.setdatabase
                   WHERE d.datname = %s AND s.setrole = 0""", (source,))
    for (stored,) in cur.fetchall():
        name, value = quote.setting(stored)  # values are owner-chosen: never pasted as SQL
        cur.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            sql.Identifier(dest), sql.Identifier(*name.split(".")), value))


def _drop_quietly(admin: Connection, staging: str) -> None:
    try:
        with admin.cursor() as cur:
            if admin.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                cur.execute("ROLLBACK")
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(staging)))
    except psycopg2.Error as exc:
        log.warning("could not drop the staging database %s: %s; drop it by hand", staging,
                    exc)
