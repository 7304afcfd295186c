"""A consistent logical backup: several pg_dump processes sharing one exported snapshot.

One connection opens a REPEATABLE READ transaction, exports its snapshot, takes ACCESS SHARE
locks on every table (so none can be dropped or rewritten before its pg_dump starts) and reads
the table of contents. Then ``pg_dump --snapshot=<id> -Fc -Z0`` processes run, each on its own
slice of the work: up to ``jobs`` data dumps at once, and beside them the two schema dumps,
which read only the catalog (as ``pg_dump -j N`` keeps a leader connection beside its N
workers):

* ``schema.pre``  -- ``--section=pre-data``: schemas, types, functions, tables, sequences, views
* ``data/NNNN``   -- ``--section=data``: one big table, a batch of small ones (``-t`` each), and
  one "rest" archive (``--exclude-table-data`` for everything dumped elsewhere) that also
  carries sequence values and large objects, so nothing can fall between the slices. Each also
  holds ``--section=post-data`` and ``--section=pre-data`` (the rest: all of both), so that a
  whole restore creates each table right before its rows and builds its indexes right after
  them, in the same pg_restore and transaction (:data:`WITH_PRE_DATA`, :data:`WITH_POST_DATA`)
* ``schema.post`` -- ``--section=post-data``: indexes, constraints, triggers, rules, policies

All see exactly the exported snapshot, so the archives together equal one ``pg_dump -Fc`` of
that instant while writers go on. They are streamed straight into the sink: nothing is staged
on disk. The exporting transaction stays open until the last pg_dump has finished.

Compression: when pg_dump can compress with the backup's codec (``tools.compresses``:
PostgreSQL 16+ tools built with it), pg_dump compresses and the pipeline only encrypts and
hashes; else archives are written uncompressed (``-Z0``) and the pipeline compresses. Not for
the bytes saved but for the restore: an uncompressed archive holds one data block per row, and
pg_restore sends each as a CopyData message of its own, which costs the server a message per
row; a compressed one is inflated into large buffers, sent as few large messages. 990 MB of
rows restored with ``pg_restore -j2`` from a ``zstd:1`` archive: server 11.3-11.4 CPU-s, wall
6.55-6.61 s, against 12.0-12.5 CPU-s and 6.75-7.10 s from a ``-Z0`` one (PostgreSQL 17).

Concurrency: each pg_dump's output is consumed by its own thread calling ``sink.put``. The
pipeline's ObjectWriter supports that (each put has its own encoder and storage stream; the
records list is appended under the GIL; storage puts of distinct keys are independent), which
``tests/integration/test_engine_postgres.py::test_object_writer_takes_concurrent_puts`` checks.
A BackupSink that is not thread-safe would need a lock around ``put`` here.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from safehold.api.manifest import ObjectRecord
from safehold.engines.base import BackupSink
from safehold.engines.common import run_parallel
from safehold.engines.postgres import quote
from safehold.engines.postgres.catalog import Table, Toc
from safehold.engines.postgres.conn import PgTarget
from safehold.engines.postgres.procs import ProcessSet
from safehold.engines.postgres.tools import ClientTools

PRE, POST, TOC_OBJECT = "schema.pre", "schema.post", "toc.json"
SPLIT_BYTES = 16 << 20  # a table this big gets a pg_dump of its own
BATCH_BYTES = 128 << 20  # small tables share a pg_dump up to this much data...
BATCH_TABLES = 200  # ...and this many tables (each costs a -t argument)
ARCHIVE_FORMAT = "pg_dump-custom"
# The data archives' meta key saying they also hold their tables' post-data entries. A whole
# restore then builds each table's indexes, constraints and triggers right after its rows, on
# the same connection and in the same transaction, while its pages are still in shared buffers.
# 200 small tables, their rows and primary keys on two connections: 0.89-1.04 s against
# 1.03-1.12 s with each connection's indexes built after all its rows by a pg_restore of their
# own, server CPU 1.42-1.68 s against 1.66-1.74 s (PostgreSQL 18, checksums and fsync on).
# Archives without the key (older backups) are restored as before: rows, then the indexes from
# ``schema.post``.
WITH_POST_DATA = "with_post_data"
# The data archives' meta key saying they also hold their tables' pre-data entries (each
# table's CREATE TABLE). A whole restore then creates a table that nothing else in schema.pre
# needs first (toclist.created_with_rows) right before its rows, on the connection that loads
# them, instead of creating every table before any rows load. Creating tables is creating
# files, which the server does on one core: 200 small tables, restored from files with two
# pg_restores, 1.20-1.27 s against 1.40-1.45 s with every table created first (PostgreSQL 17).
WITH_PRE_DATA = "with_pre_data"
# a data archive's pg_dump sections
DATA_SECTIONS = ("--section=pre-data", "--section=data", "--section=post-data")


@dataclass
class DumpTask:
    name: str
    section: str
    args: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    rest: bool = False
    compression: str = "none"  # how pg_dump compresses the archive: "zstd:3", or "none"

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"format": ARCHIVE_FORMAT, "compression": self.compression,
                                "section": self.section}
        if self.section == "data":
            meta["tables"] = [t.qualified for t in self.tables]
            meta["rest"] = self.rest
            meta[WITH_POST_DATA] = "--section=post-data" in self.args
            meta[WITH_PRE_DATA] = "--section=pre-data" in self.args
        return meta


def pattern(t: Table) -> str:
    """A pg_dump -t pattern matching exactly one table: quoted, so nothing is a wildcard."""
    return quote.qualified(t.schema, t.name)


def plan(toc: Toc, ways: int = 2, compression: str = "none") -> list[DumpTask]:
    """Pre-data, the data slices biggest first, post-data.

    A table of ``SPLIT_BYTES`` or more gets an archive of its own. The small ones are dealt
    into batches of about equal bytes (biggest first, each to the lightest batch with room):
    once they hold ``SPLIT_BYTES`` between them, at least ``ways`` batches, so that many
    pg_dumps, compressors and later pg_restores work on them at once (200 small tables in one
    batch were one process end to end: half as fast as ``pg_restore -j2``); more when a batch
    would pass ``BATCH_BYTES`` or ``BATCH_TABLES``, and then a multiple of ``ways``: three
    equal batches on two workers left the third to run alone, a third of the work on one core
    (200 tables of 254 MB restored 1.6x slower than ``pg_restore -j2``). The last batch is the
    "rest" archive. ``compression`` is how pg_dump compresses them all.
    """
    tables = sorted((t for t in toc.tables if t.has_rows), key=lambda t: (-t.bytes, t.oid))
    slices: list[list[Table]] = [[t] for t in tables if t.bytes >= SPLIT_BYTES]
    small = [t for t in tables if t.bytes < SPLIT_BYTES]
    total = sum(t.bytes for t in small)
    count = max(-(-total // BATCH_BYTES), -(-len(small) // BATCH_TABLES),
                ways if total >= SPLIT_BYTES else 1)
    if total >= SPLIT_BYTES:
        count = -(-count // ways) * ways
    batches: list[list[Table]] = [[] for _ in range(max(1, min(count, len(small))))]
    loads = [(0, i) for i in range(len(batches))]  # a heap of (bytes, batch) with room left
    for t in small:
        load, i = heapq.heappop(loads)
        batches[i].append(t)
        if len(batches[i]) < BATCH_TABLES:
            heapq.heappush(loads, (load + t.bytes, i))
    *dealt, batch = batches
    slices.extend(dealt)
    tasks = [DumpTask(PRE, "pre-data", ["--section=pre-data"])]
    explicit = [t for s in slices for t in s]
    for i, tables_ in enumerate(slices):
        args = [*DATA_SECTIONS, "--strict-names", *(f"--table={pattern(t)}" for t in tables_)]
        tasks.append(DumpTask(f"data/{i:04d}", "data", args, tables_))
    # The rest: the last batch plus whatever has data but no table row of its own.
    rest_args = [*DATA_SECTIONS, *(f"--exclude-table-data={pattern(t)}" for t in explicit)]
    tasks.append(DumpTask(f"data/{len(slices):04d}", "data", rest_args, batch, rest=True))
    tasks.sort(key=lambda t: -t.bytes)  # stable: pre-data stays ahead of the small slices
    tasks.insert(0, tasks.pop(next(i for i, t in enumerate(tasks) if t.name == PRE)))
    tasks.append(DumpTask(POST, "post-data", ["--section=post-data"]))
    for task in tasks:
        task.compression = compression
        for t in task.tables:
            t.object = task.name
    return tasks


def run_dumps(tasks: list[DumpTask], *, target: PgTarget, tools: ClientTools, snapshot: str,
              sink: BackupSink, jobs: int, lock_wait_ms: int) -> list[ObjectRecord]:
    """Run the pg_dumps, each streamed into ``sink.put``: the data ones on ``jobs`` threads of
    their own, in plan order (biggest first), and the schema ones beside them from the start;
    the records in ``tasks`` order. The first failure stops the others and is raised.

    The schema dumps take no data thread: they are catalog reads of a few hundredths of a
    second each, and queued behind the data (post-data last) they ran alone at the end, after
    the last data dump had drained through the pipeline (200 small tables: 0.1-0.15 s of a 1.3 s
    backup with one core idle). The data dumps do not share threads with them either: threads
    that finished a schema dump and then waited on a semaphore for a data slot were admitted in
    no particular order, and a freed slot went to whichever thread asked first, so a small table
    could go ahead of a bigger one and the bigger one then ran alone at the end (tables of 400,
    300, 200 and 100 MB: the 200 MB one last, 1.8 s of an 8.3 s backup on one pg_dump).
    """
    base = [tools.path("pg_dump"), "--format=custom", f"--snapshot={snapshot}",
            f"--lock-wait-timeout={lock_wait_ms}"]
    procs = ProcessSet()

    def dump(task: DumpTask) -> ObjectRecord:
        compressed = task.compression != "none"
        compress = f"--compress={task.compression}" if compressed else "--compress=0"
        tool = procs.start([*base, compress, *task.args], target, f"pg_dump of {task.name}",
                           stdout=True)
        return sink.put(task.name, tool.stdout_blocks(), meta=task.meta(), compressed=compressed)

    schema = [t for t in tasks if t.section != "data"]
    data = [t for t in tasks if t.section == "data"]

    def part(task: DumpTask | None) -> list[ObjectRecord]:
        """One schema dump, or (None) all the data dumps, ``jobs`` at a time."""
        if task is not None:
            return [dump(task)]
        return run_parallel(dump, data, jobs=max(1, jobs), name="safehold-pg_dump",
                            on_failure=procs.stop)

    try:
        parts = run_parallel(part, [*schema, None], jobs=len(schema) + 1,
                             name="safehold-pg_dump-schema", on_failure=procs.stop)
    finally:
        procs.close()
    records = [record for done in parts for record in done]
    by_name = {task.name: record for task, record in zip([*schema, *data], records, strict=True)}
    return [by_name[task.name] for task in tasks]
