"""Which tables a whole restore creates with their rows (toclist.created_with_rows) and the
pg_restore -L lines that do it (restore._interleaved). The listings are pg_restore -l -v of a
real pg_dump (PostgreSQL 17) of this schema, cut to the entries that matter:

    CREATE SCHEMA s;  CREATE TYPE s.mood AS ENUM ('ok', 'sad');
    CREATE TABLE s.a (id serial PRIMARY KEY, m s.mood);        -- a view and a grant on it
    CREATE TABLE s.b (id int PRIMARY KEY, v text);             -- a function over its row type
    CREATE FUNCTION s.b_label(r s.b) RETURNS text ...;
    CREATE TABLE s.p (id int, v text);  CREATE TABLE s.c (x int) INHERITS (s.p);
    CREATE TABLE s.i (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);
    CREATE VIEW s.va AS SELECT id FROM s.a;  GRANT SELECT ON s.a TO PUBLIC;
    COMMENT ON TABLE s.c IS 'child';
"""

from __future__ import annotations

import pytest

from safehold.api.errors import IntegrityError
from safehold.engines.postgres import restore
from safehold.engines.postgres.catalog import Table
from safehold.engines.postgres.toclist import Entry, created_with_rows, data_entries, parse_listing

PRE = parse_listing("""\
;
; Archive created at 2026-12-06 00:45:40 UTC
;
2590; 0 0 ENCODING - ENCODING
2592; 0 0 SEARCHPATH - SEARCHPATH
2593; 1262 178511 DATABASE - deps postgres
6; 2615 178512 SCHEMA - s postgres
855; 1247 178514 TYPE s mood postgres
;\tdepends on: 6
220; 1259 178526 TABLE s b postgres
;\tdepends on: 6
226; 1255 178533 FUNCTION s b_label(s.b) postgres
;\tdepends on: 220 6
219; 1259 178520 TABLE s a postgres
;\tdepends on: 855 6
2594; 0 0 ACL s TABLE a postgres
;\tdepends on: 219
218; 1259 178519 SEQUENCE s a_id_seq postgres
;\tdepends on: 219 6
2595; 0 0 SEQUENCE OWNED BY s a_id_seq postgres
;\tdepends on: 218
221; 1259 178534 TABLE s p postgres
;\tdepends on: 6
222; 1259 178539 TABLE s c postgres
;\tdepends on: 6 221
2596; 0 0 COMMENT s TABLE c postgres
;\tdepends on: 222
224; 1259 178545 TABLE s i postgres
;\tdepends on: 6
223; 1259 178544 SEQUENCE s i_id_seq postgres
;\tdepends on: 6 224
225; 1259 178550 VIEW s va postgres
;\tdepends on: 219 6
2428; 2604 178523 DEFAULT s a id postgres
;\tdepends on: 218 219 219
""")
POST = parse_listing("""\
2430; 2606 178525 CONSTRAINT s a a_pkey postgres
2432; 2606 178532 CONSTRAINT s b b_pkey postgres
2434; 2606 178549 CONSTRAINT s i i_pkey postgres
""")
# pg_dump -t s.a -t s.i (every section), as a data archive of a and i: its own dump ids
ARCHIVE_AI = parse_listing("""\
219; 1259 178520 TABLE s a postgres
2582; 0 0 ACL s TABLE a postgres
;\tdepends on: 219
218; 1259 178519 SEQUENCE s a_id_seq postgres
;\tdepends on: 219
2583; 0 0 SEQUENCE OWNED BY s a_id_seq postgres
;\tdepends on: 218
224; 1259 178545 TABLE s i postgres
223; 1259 178544 SEQUENCE s i_id_seq postgres
;\tdepends on: 224
2421; 2604 178523 DEFAULT s a id postgres
;\tdepends on: 218 219 219
2573; 0 178520 TABLE DATA s a postgres
;\tdepends on: 219
2575; 0 178545 TABLE DATA s i postgres
;\tdepends on: 224
2584; 0 0 SEQUENCE SET s a_id_seq postgres
;\tdepends on: 218
2585; 0 0 SEQUENCE SET s i_id_seq postgres
;\tdepends on: 223
2423; 2606 178525 CONSTRAINT s a a_pkey postgres
;\tdepends on: 219
2425; 2606 178549 CONSTRAINT s i i_pkey postgres
;\tdepends on: 224
""")
# the rest archive (--exclude-table-data for a and i, every section): b, c and p's rows, the
# whole schema, and the values of every sequence
ARCHIVE_REST = [e for e in parse_listing("\n".join(e.line for e in PRE) + """
2582; 0 178526 TABLE DATA s b postgres
2584; 0 178539 TABLE DATA s c postgres
2583; 0 178534 TABLE DATA s p postgres
2595; 0 0 SEQUENCE SET s a_id_seq postgres
2596; 0 0 SEQUENCE SET s i_id_seq postgres
""")] + POST
A, B, P, C, ID = 178520, 178526, 178534, 178539, 178545
TABLES = {oid: Table(oid=oid, schema="s", name=name, kind="r", bytes=1, rows=1)
          for oid, name in ((A, "a"), (B, "b"), (P, "p"), (C, "c"), (ID, "i"))}
TABLES[A].parts, TABLES[B].parts, TABLES[ID].parts = [178525], [178532], [178549]
OWN = {oid: [e for e in POST if e.oid in t.parts] for oid, t in TABLES.items()}


def ids(lines: list[str]) -> list[int]:
    return [int(line.split(";")[0]) for line in lines]


def test_a_verbose_listing_gives_each_entry_its_dependencies() -> None:
    default = PRE[-1]
    assert (default.dump_id, default.catalog, default.oid) == (2428, 2604, 178523)
    assert default.deps == (218, 219, 219) and default.text == "DEFAULT s a id postgres"
    assert PRE[3].deps == () and "depends" not in "".join(e.line for e in PRE)
    assert [e.text.split()[2] for e in PRE if e.is_table] == ["b", "a", "p", "c", "i"]
    assert [e.text.split()[2] for e in PRE if e.is_sequence] == ["a_id_seq", "i_id_seq"]


def test_tables_that_nothing_else_needs_are_created_with_their_rows() -> None:
    split = created_with_rows(PRE, list(TABLES))
    # a: its grant, serial's ownership and default, and the view on it can come later; c
    # inherits from p, which is therefore made first (and c then depends on nothing late); i's
    # identity sequence is made with it. b stays: a function takes its row type.
    assert split.created_with_rows == {A, C, ID}
    assert ids(split.before) == [6, 855, 220, 226, 221]  # schema, type, b, function, p
    assert ids(split.after) == [2594, 2595, 2596, 225, 2428]  # grant, owner, comment, view, default
    assert {t: [e.dump_id for e in seqs] for t, seqs in split.sequences.items()} == \
        {A: [218], ID: [223]}


def test_only_tables_with_rows_in_data_archives_are_candidates() -> None:
    split = created_with_rows(PRE, [A])
    assert split.created_with_rows == {A}
    assert ids(split.before) == [6, 855, 220, 226, 221, 222, 2596, 224, 223]
    assert created_with_rows(PRE, []).after == []


def test_a_data_archive_creates_its_tables_and_their_sequences_right_before_their_rows() -> None:
    split = created_with_rows(PRE, list(TABLES))
    made: list[Entry] = []
    lines = restore._interleaved(ARCHIVE_AI, (POST, PRE), [TABLES[A], TABLES[ID]], OWN, made,
                                 split, "data/0000")
    # a, its sequence, its rows, its key; i likewise; then both sequences' values. Not the
    # grant, the ownership or the default: schema.pre's later part makes those.
    assert ids(lines) == [219, 218, 2573, 2423, 224, 223, 2575, 2425, 2584, 2585]
    assert [e.dump_id for e in made] == [2430, 2434]


def test_the_rest_archive_leaves_the_values_of_sequences_made_elsewhere() -> None:
    split = created_with_rows(PRE, list(TABLES))
    rest = [TABLES[B], TABLES[P], TABLES[C]]
    lines = restore._interleaved(ARCHIVE_REST, (POST, PRE), rest, OWN, [], split, "data/0001")
    # b's and p's tables exist already; c is made here, in the archive's order of rows (it
    # inherits from p, made by schema.pre's first part). a_id_seq and i_id_seq get their
    # values from the archive that makes them, which the rest may run ahead of.
    assert ids(lines) == [2582, 2432, 222, 2584, 2583]


def test_an_archive_without_the_definitions_it_should_hold_is_refused() -> None:
    split = created_with_rows(PRE, list(TABLES))
    no_table = [e for e in ARCHIVE_AI if e.dump_id != 224]
    with pytest.raises(IntegrityError, match=r"data archive data/0000 lacks the definition of"
                       r" table s.i, which its toc.json says it holds \(with_pre_data\): the"
                       " backup is damaged"):
        restore._interleaved(no_table, (POST, PRE), [TABLES[A], TABLES[ID]], OWN, [], split,
                             "data/0000")
    no_sequence = [e for e in ARCHIVE_AI if e.dump_id != 218]
    with pytest.raises(IntegrityError, match=r"lacks the definition of sequence s\.a_id_seq,"):
        restore._interleaved(no_sequence, (POST, PRE), [TABLES[A], TABLES[ID]], OWN, [], split,
                             "data/0000")
    no_value = [e for e in ARCHIVE_AI if e.dump_id != 2585]
    with pytest.raises(IntegrityError, match=r"lacks the value \(SEQUENCE SET\) of sequence"
                       " s.i_id_seq, which"):
        restore._interleaved(no_value, (POST, PRE), [TABLES[A], TABLES[ID]], OWN, [], split,
                             "data/0000")


def test_without_a_split_a_data_archive_only_loads_rows() -> None:
    """A backup whose data archives lack their pre-data, or a restore that did not split
    schema.pre: every table exists before the rows load; the archive's definitions are
    schema.pre's to make, and every sequence value is set (twice, as before: the same)."""
    lines = restore._interleaved(ARCHIVE_AI, (POST, PRE), [TABLES[A], TABLES[ID]], OWN, [])
    assert ids(lines) == [2573, 2423, 2575, 2425, 2584, 2585]
    assert [e.dump_id for e in data_entries(ARCHIVE_REST, PRE, POST)] == \
        [2582, 2584, 2583, 2595, 2596]


def test_a_dependency_cycle_or_an_unknown_id_does_not_hang_or_fail() -> None:
    looped = parse_listing("""\
10; 1259 100 TABLE s x postgres
;\tdepends on: 11 999
11; 1247 101 TYPE s x_t postgres
;\tdepends on: 10
""")
    split = created_with_rows(looped, [100])
    assert split.created_with_rows == frozenset()  # the type depends on it: made first
    assert ids(split.before) == [10, 11]


def test_no_table_is_created_with_its_rows_where_loading_rows_runs_a_users_code() -> None:
    """A CHECK constraint (or a generated column, a domain) that calls a function runs it for
    every row loaded, and its body may read any table: PostgreSQL records no dependency on
    what a function's body reads. pg_dump of CREATE TABLE b (id int CHECK (note())) where
    note() inserts into seen:"""
    listing = parse_listing("""\
220; 1255 200974 FUNCTION public note() postgres
218; 1259 200975 TABLE public b postgres
;\tdepends on: 220
217; 1259 200971 TABLE public seen postgres
""")
    split = created_with_rows(listing, [200975, 200971])
    assert split.created_with_rows == frozenset() and ids(split.before) == [220, 218, 217]
    # without the check, both would be made with their rows
    plain = [e for e in listing if e.dump_id != 220]
    assert created_with_rows([Entry(e.line, e.oid, e.text, e.dump_id, e.catalog)
                              for e in plain], [200975, 200971]).created_with_rows == \
        {200975, 200971}
