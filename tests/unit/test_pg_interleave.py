"""Which pg_restore -L lines restore a data archive that holds its tables' post-data
(restore._interleaved, toclist.data_entries): rows in the archive's order, each table's own
indexes, constraints and triggers right after its rows, everything else left to schema.post."""

from __future__ import annotations

from safehold.engines.postgres import dump, restore
from safehold.engines.postgres.catalog import Table, Toc
from safehold.engines.postgres.toclist import Entry, data_entries, parse_listing

# schema.post, as pg_restore -l lists it: its own dump ids
POST = parse_listing("""
3198; 2606 16391 CONSTRAINT public a a_pkey postgres
3200; 2606 16400 CONSTRAINT public b b_pkey postgres
3201; 1259 16402 INDEX public b b_v postgres
3202; 2620 16405 TRIGGER public b b_stamp postgres
3203; 2606 16407 FK CONSTRAINT public b b_a_fkey postgres
3204; 2606 16409 CONSTRAINT public other other_pkey postgres
""")
# a data archive of a and b from another pg_dump of the same snapshot: other dump ids, and
# (as the rest archive does) post-data of a table it does not hold
ARCHIVE = parse_listing("""
3742; 0 16385 TABLE DATA public a postgres
3743; 0 16394 TABLE DATA public b postgres
3744; 0 0 SEQUENCE SET public b_id_seq postgres
3610; 2606 16391 CONSTRAINT public a a_pkey postgres
3611; 2606 16400 CONSTRAINT public b b_pkey postgres
3612; 1259 16402 INDEX public b b_v postgres
3613; 2620 16405 TRIGGER public b b_stamp postgres
3614; 2606 16407 FK CONSTRAINT public b b_a_fkey postgres
3615; 2606 16409 CONSTRAINT public other other_pkey postgres
""")
A = Table(oid=16385, schema="public", name="a", kind="r", bytes=1, rows=1, parts=[16391])
B = Table(oid=16394, schema="public", name="b", kind="r", bytes=1, rows=1,
          parts=[16400, 16402, 16405, 16407])
OWN = {t.oid: [e for e in POST if e.oid in t.parts and e.text.startswith(restore._OWN_ENTRIES)]
       for t in (A, B)}


def ids(lines: list[str]) -> list[str]:
    return [line.split(";")[0] for line in lines]


def test_each_tables_own_entries_follow_its_rows_in_the_archives_order() -> None:
    made: list[Entry] = []
    lines = restore._interleaved(ARCHIVE, (POST,), [A, B], OWN, made)
    # a's rows, a's key, b's rows, b's key, index and trigger, then the sequence value; not the
    # foreign key (it spans tables) nor the post-data of a table the archive does not hold
    assert ids(lines) == ["3742", "3610", "3743", "3611", "3612", "3613", "3744"]
    assert [e.line.split(";")[0] for e in made] == ["3198", "3200", "3201", "3202"]


def test_an_own_entry_the_archive_lacks_is_left_to_schema_post() -> None:
    made: list[Entry] = []
    archive = [e for e in ARCHIVE if "b_v" not in e.text]
    lines = restore._interleaved(archive, (POST,), [A, B], OWN, made)
    assert "3612" not in ids(lines) and "3201" not in [e.line.split(";")[0] for e in made]


def test_an_older_data_archive_is_all_data() -> None:
    older = [e for e in ARCHIVE if "TABLE DATA" in e.text or "SEQUENCE SET" in e.text]
    assert data_entries(older, POST) == older
    assert data_entries(ARCHIVE, POST) == older


def test_the_plan_marks_every_data_archive_as_holding_its_post_data() -> None:
    tables = [Table(oid=1000 + i, schema="public", name=f"t{i}", kind="r", bytes=b, rows=1)
              for i, b in enumerate((40 << 20, 1 << 20, 1 << 20))]
    tasks = dump.plan(Toc(database={}, tables=tables, sequences=[], views=[], functions=[]))
    data = [t for t in tasks if t.section == "data"]
    assert len(data) >= 2
    for task in data:
        assert task.meta()[dump.WITH_POST_DATA] is True and task.meta()[dump.WITH_PRE_DATA]
        assert {"--section=pre-data", "--section=data", "--section=post-data"} <= {*task.args}
    assert all(dump.WITH_POST_DATA not in t.meta() and dump.WITH_PRE_DATA not in t.meta()
               for t in tasks if t.section != "data")
