"""How a PostgreSQL backup's tables are dealt into pg_dump archives (dump.plan)."""

from __future__ import annotations

from collections import Counter

from safehold.engines.postgres import dump
from safehold.engines.postgres.catalog import Table, Toc

MB = 1 << 20


def toc(*sizes: int, kind: str = "r") -> Toc:
    tables = [Table(oid=1000 + i, schema="public", name=f"t{i}", kind=kind, bytes=size, rows=1)
              for i, size in enumerate(sizes)]
    return Toc(database={}, tables=tables, sequences=[], views=[], functions=[])


def data_tasks(tasks: list[dump.DumpTask]) -> list[dump.DumpTask]:
    return [t for t in tasks if t.section == "data"]


def check_cover(t: Toc, tasks: list[dump.DumpTask]) -> None:
    """Every table with rows is in exactly one data archive; the rest archive excludes exactly
    the tables the others name, and names no table with -t itself."""
    names = Counter(tab.qualified for task in data_tasks(tasks) for tab in task.tables)
    assert names == Counter(tab.qualified for tab in t.tables if tab.has_rows)
    rest = [task for task in tasks if task.rest]
    assert len(rest) == 1 and not any(a.startswith("--table=") for a in rest[0].args)
    excluded = {a.split("=", 1)[1] for a in rest[0].args if a.startswith("--exclude-table-data=")}
    named = {a.split("=", 1)[1] for task in data_tasks(tasks) if not task.rest
             for a in task.args if a.startswith("--table=")}
    assert excluded == named
    assert [tasks[0].name, tasks[-1].name] == [dump.PRE, dump.POST]
    for task in data_tasks(tasks):
        assert all(tab.object == task.name for tab in task.tables)


def test_many_small_tables_are_dealt_into_balanced_batches() -> None:
    """200 tables of 0.5-1 MB: two archives of about equal bytes (one was a single process for
    the whole database, end to end), three with ways=3."""
    t = toc(*(MB // 2 + (i * 2731) % (MB // 2) for i in range(200)))
    for ways in (2, 3):
        tasks = dump.plan(t, ways=ways)
        check_cover(t, tasks)
        loads = [task.bytes for task in data_tasks(tasks)]
        assert len(loads) == ways
        assert max(loads) - min(loads) <= MB, loads  # within one table of each other
        assert all(len(task.tables) <= dump.BATCH_TABLES for task in data_tasks(tasks))


def test_batches_come_in_multiples_of_ways() -> None:
    """260 MB of small tables need three batches of BATCH_BYTES; with two workers that is four
    (the third of three ran alone, a third of the work on one core), with three ways three."""
    t = toc(*(MB + MB // 3 for _ in range(200)))
    for ways, batches in ((1, 3), (2, 4), (3, 3), (4, 4)):
        tasks = dump.plan(t, ways=ways)
        check_cover(t, tasks)
        loads = [task.bytes for task in data_tasks(tasks)]
        assert len(loads) == batches, (ways, loads)
        assert max(loads) - min(loads) <= 2 * MB, loads
        assert max(loads) <= dump.BATCH_BYTES


def test_big_tables_get_their_own_archive_and_a_tiny_rest_stays_one() -> None:
    t = toc(40 * MB, 20 * MB, *(10 << 10 for _ in range(30)))  # 300 KB of small tables
    tasks = dump.plan(t, ways=4)
    check_cover(t, tasks)
    data = data_tasks(tasks)
    assert [len(task.tables) for task in data] == [1, 1, 30]  # biggest first
    assert data[-1].rest and not data[0].rest


def test_batch_limits_hold_however_few_ways() -> None:
    """More tables than BATCH_TABLES, or more bytes than BATCH_BYTES, make more batches."""
    t = toc(*(1000 for _ in range(3 * dump.BATCH_TABLES + 1)))
    tasks = dump.plan(t, ways=1)
    check_cover(t, tasks)
    assert sorted(len(task.tables) for task in data_tasks(tasks)) == [150, 150, 150, 151]
    heavy = toc(*(15 * MB for _ in range(20)))  # 300 MB of tables just under SPLIT_BYTES
    tasks = dump.plan(heavy, ways=1)
    check_cover(heavy, tasks)
    assert all(task.bytes <= dump.BATCH_BYTES for task in data_tasks(tasks))


def test_no_tables_with_rows_still_has_the_rest_archive() -> None:
    """Sequences and large objects travel in the rest archive, even with no table rows."""
    for t in (toc(), toc(MB, kind="m")):
        tasks = dump.plan(t, ways=2)
        check_cover(t, tasks)
        assert [task.name for task in tasks] == [dump.PRE, "data/0000", dump.POST]
