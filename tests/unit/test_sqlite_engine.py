"""The SQLite engine against real database files.

The pipeline is stood in for by an in-memory repository: a sink that keeps each object's bytes
and a chain reader that hands them back in odd-sized chunks (as decoded pipeline chunks would
arrive, never page-aligned).
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from safehold.api.errors import UsageError
from safehold.api.manifest import BackupType, Manifest, ObjectRecord
from safehold.engines.base import (
    BackupRequest,
    ConflictError,
    DatabaseMissing,
    EngineError,
    RestoreRequest,
    UnsupportedError,
    open_engine,
)
from safehold.engines.sqlite import SQLiteEngine
from safehold.engines.sqlite.pages import RUN_HEADER
from tests.infra.portable import WINDOWS

READ_CHUNK = 7777  # deliberately not a divisor of any page size


class MemoryRepo:
    """Objects of every backup in a dict; doubles as the ChainReader."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.backups: list[Manifest] = []

    def open(self, backup: Manifest, name: str, *, head: bool = False) -> Iterator[bytes]:
        data = self.objects[(backup.backup_id, name)]
        for off in range(0, len(data), READ_CHUNK):
            yield data[off:off + READ_CHUNK]

    def backup(self, engine: SQLiteEngine, type: BackupType, chain: Sequence[Manifest] = ()
               ) -> Manifest:
        backup_id = f"b{len(self.backups)}"
        sink = MemorySink(self, backup_id)
        outcome = engine.backup(BackupRequest(type=type, chain=chain), sink, self)
        parent = None if type == "full" else chain[-1] if type == "incremental" else chain[0]
        now = datetime.now(UTC)
        manifest = Manifest(
            backup_id=backup_id, target="test", engine="sqlite", type=type,
            server_version=outcome.server_version,
            parent_id=parent.backup_id if parent else None,
            chain_id=chain[0].backup_id if chain else backup_id,
            started_at=now, finished_at=now, start_position=outcome.start_position,
            end_position=outcome.end_position, compression="none", chunk_size=1 << 20,
            objects=tuple(sink.records), engine_meta=outcome.engine_meta,
        )
        self.backups.append(manifest)
        return manifest

    def size(self, backup: Manifest, name: str) -> int:
        return len(self.objects[(backup.backup_id, name)])


class MemorySink:
    def __init__(self, repo: MemoryRepo, backup_id: str) -> None:
        self.repo, self.backup_id = repo, backup_id
        self.records: list[ObjectRecord] = []

    def put(self, name: str, data: Iterable[bytes], *, meta: Mapping[str, Any] | None = None
            ) -> ObjectRecord:
        raw = b"".join(data)
        self.repo.objects[(self.backup_id, name)] = raw
        record = ObjectRecord(name=name, raw_size=len(raw), stored_size=len(raw),
                              sha256=hashlib.sha256(raw).hexdigest(), chunks=1,
                              meta=dict(meta or {}))
        self.records.append(record)
        return record


class FailingRepo(MemoryRepo):
    """Raises part-way through one object, after handing out some of its bytes."""

    def __init__(self, base: MemoryRepo, fail_on: tuple[str, str]) -> None:
        super().__init__()
        self.objects, self.backups, self.fail_on = base.objects, base.backups, fail_on

    def open(self, backup: Manifest, name: str, *, head: bool = False) -> Iterator[bytes]:
        for i, chunk in enumerate(super().open(backup, name)):
            if (backup.backup_id, name) == self.fail_on and i == 2:
                raise ConnectionError("storage went away")
            yield chunk


# -- helpers ----------------------------------------------------------------------------------

def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=30)


def make_items_db(path: Path, rows: int = 20_000, *, wal: bool = False) -> None:
    """A few MB: one table of rows ~150 bytes each, with an index."""
    conn = connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER,"
                 " note TEXT)")
    conn.execute("CREATE INDEX items_name ON items(name)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items (name, qty, note) VALUES (?, ?, ?)",
                     ((f"item-{i:06d}", i % 97, f"note {i} " + "x" * (i % 120))
                      for i in range(rows)))
    conn.execute("COMMIT")
    conn.close()


def dump(path: Path) -> list[str]:
    conn = connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def copy_of(path: Path, dest: Path) -> Path:
    """A consistent copy of ``path`` taken with the backup API (the reference state)."""
    src, dst = connect(path), connect(dest)
    src.backup(dst)
    src.close()
    dst.close()
    return dest


def integrity(path: Path) -> list[str]:
    conn = connect(path)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if "safehold" in p.name)


def engine_for(path: Path, tmp_path: Path, **kwargs: Any) -> SQLiteEngine:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return SQLiteEngine(path, scratch_dir=scratch, **kwargs)


def restore(path: Path, repo: MemoryRepo, chain: Sequence[Manifest], **kwargs: Any) -> None:
    SQLiteEngine(path).restore(RestoreRequest(chain=chain, **kwargs), repo)


# -- URL, registry, checks ------------------------------------------------------------------

def test_url_names_an_absolute_path_and_registers_the_scheme() -> None:
    url, path = ("sqlite:///C:/lib/my%20app/app.db", "C:/lib/my app/app.db") if WINDOWS else (
        "sqlite:///var/lib/my%20app/app.db", "/var/lib/my app/app.db")  # docs/install.md
    engine = open_engine(url)
    assert isinstance(engine, SQLiteEngine)
    assert engine.path == Path(path)
    assert engine.capabilities.backup_types == ("full", "incremental", "differential")
    assert engine.capabilities.selective_restore and not engine.capabilities.point_in_time


@pytest.mark.parametrize(("url", "message"), [
    ("sqlite://dbhost/app.db", "three slashes"),
    ("sqlite://app.db", "three slashes"),
    ("sqlite:app.db", "relative path"),
    ("sqlite:///app.db?mode=ro", "no query"),
])
def test_url_rejects_hosts_and_relative_paths(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SQLiteEngine.from_url(url)


def test_check_backup_accepts_a_database_and_names_problems(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_items_db(db, rows=10)
    report = engine_for(db, tmp_path).check("backup")
    assert report.ok and report.problems == ()
    assert report.server_version == sqlite3.sqlite_version

    missing = engine_for(tmp_path / "missing.db", tmp_path).check("backup")
    assert not missing.ok and "does not exist" in missing.problems[0]

    text = tmp_path / "notes.db"
    text.write_text("hello, this is not a database at all")
    report = engine_for(text, tmp_path).check("backup")
    assert not report.ok and "not a SQLite 3 database" in report.problems[0]

    no_scratch = SQLiteEngine(db, scratch_dir=tmp_path / "nope").check("backup")
    assert not no_scratch.ok and "scratch directory" in no_scratch.problems[0]


def test_check_restore_needs_a_writable_directory_not_a_file(tmp_path: Path) -> None:
    assert SQLiteEngine(tmp_path / "new.db").check("restore").ok
    report = SQLiteEngine(tmp_path / "absent" / "new.db").check("restore")
    assert not report.ok and "does not exist" in report.problems[0]
    (tmp_path / "dir.db").mkdir()
    report = SQLiteEngine(tmp_path / "dir.db").check("restore")
    assert not report.ok and "not a regular file" in report.problems[0]


def test_estimate_size_counts_the_wal(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    assert SQLiteEngine(db).estimate_size() is None
    make_items_db(db, rows=100, wal=True)
    holder = connect(db)  # keeps the WAL from being checkpointed away on close
    holder.execute("PRAGMA wal_autocheckpoint=0")
    holder.execute("INSERT INTO items (name) VALUES ('in the wal')")
    wal = Path(f"{db}-wal").stat().st_size
    assert wal > 0
    assert SQLiteEngine(db).estimate_size() == db.stat().st_size + wal
    holder.close()


# -- full backups -----------------------------------------------------------------------------

@pytest.mark.parametrize("wal", [False, True], ids=["rollback", "wal"])
def test_full_backup_restores_the_same_database(tmp_path: Path, wal: bool) -> None:
    db = tmp_path / "app.db"
    make_items_db(db, wal=wal)
    repo = MemoryRepo()
    full = repo.backup(engine_for(db, tmp_path), "full")

    meta = full.engine_meta
    assert meta["changed_pages"] == meta["page_count"] > 100
    assert repo.size(full, "pages") == meta["page_count"] * meta["page_size"]
    assert repo.size(full, "pagemap") == 8 * meta["page_count"]
    assert full.object("pages").meta == {"format": "raw", "page_size": meta["page_size"]}
    assert full.end_position is not None
    assert full.end_position["page_count"] == str(meta["page_count"])
    assert leftovers(tmp_path / "scratch") == []

    target = tmp_path / "restored" / "app.db"
    target.parent.mkdir()
    restore(target, repo, [full])
    assert dump(target) == dump(db)
    assert integrity(target) == ["ok"]
    assert leftovers(target.parent) == []


WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
batch = int(sys.argv[2])
while True:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO log (payload) VALUES (randomblob(300))", [()] * batch)
    conn.execute("COMMIT")
"""


def count_rows(path: Path) -> int:
    conn = connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM log").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("wal", [False, True], ids=["rollback", "wal"])
def test_backups_under_a_concurrent_writer_are_consistent(tmp_path: Path, wal: bool) -> None:
    """A writer process commits 10 rows per transaction nonstop; every backup must capture a
    whole number of transactions, ids 1..n with no gaps, and a database SQLite accepts."""
    batch = 10
    db = tmp_path / "app.db"
    conn = connect(db)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, payload BLOB)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO log (payload) VALUES (randomblob(300))", [()] * 5000)
    conn.execute("COMMIT")
    conn.close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(batch)])
    try:
        deadline = time.monotonic() + 30
        while count_rows(db) < 5000 + 20 * batch:
            assert writer.poll() is None and time.monotonic() < deadline, "writer is not writing"
            time.sleep(0.01)
        engine = engine_for(db, tmp_path, step_pages=4)  # many steps: writes land in between
        repo = MemoryRepo()
        before = count_rows(db)
        full = repo.backup(engine, "full")
        # the incremental must have writes to take, whatever the machine's load did to the
        # writer during the full (on a busy CI machine it once committed nothing meanwhile)
        while count_rows(db) <= before:
            assert writer.poll() is None and time.monotonic() < deadline + 30, \
                "the writer made no progress"
            time.sleep(0.01)
        incr = repo.backup(engine, "incremental", [full])
        after = count_rows(db)
    finally:
        writer.kill()
        writer.wait()
    for n, chain in enumerate([[full], [full, incr]]):
        target = tmp_path / f"restored-{n}.db"
        restore(target, repo, chain)
        assert integrity(target) == ["ok"]
        conn = connect(target)
        rows, max_id = conn.execute("SELECT count(*), max(id) FROM log").fetchone()
        conn.close()
        assert before <= rows <= after
        assert rows % batch == 0 and max_id == rows


# -- chains -----------------------------------------------------------------------------------

def test_chain_restores_every_point_exactly(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_items_db(db)
    engine = engine_for(db, tmp_path)
    repo = MemoryRepo()
    states: dict[str, Path] = {}

    def take(type: BackupType, chain: Sequence[Manifest]) -> Manifest:
        backup = repo.backup(engine, type, chain)
        states[backup.backup_id] = copy_of(db, tmp_path / f"state-{backup.backup_id}.db")
        return backup

    conn = connect(db)
    full = take("full", [])
    conn.execute("UPDATE items SET qty = -1 WHERE id BETWEEN 100 AND 300")
    incr1 = take("incremental", [full])
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items (name, note) VALUES (?, ?)",
                     ((f"grow-{i}", "y" * 200) for i in range(5000)))  # grows the file
    conn.execute("COMMIT")
    incr2 = take("incremental", [full, incr1])
    conn.execute("DELETE FROM items WHERE id > 8000")
    conn.execute("VACUUM")  # shrinks the file and moves pages around
    diff = take("differential", [full, incr1, incr2])
    conn.execute("CREATE TABLE extra (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")
    conn.execute("INSERT INTO extra VALUES ('a', randomblob(5000))")
    incr3 = take("incremental", [full, diff])
    conn.close()

    assert diff.parent_id == full.backup_id
    assert incr3.parent_id == diff.backup_id
    for chain in ([full], [full, incr1], [full, incr1, incr2], [full, diff],
                  [full, diff, incr3]):
        target = tmp_path / f"restore-{chain[-1].backup_id}.db"
        restore(target, repo, chain)
        assert dump(target) == dump(states[chain[-1].backup_id]), chain[-1].backup_id
        assert chain[-1].end_position is not None
        assert int(chain[-1].end_position["page_count"]) * 4096 == target.stat().st_size
    assert dump(tmp_path / f"restore-{incr3.backup_id}.db") == dump(db)


def test_incremental_size_scales_with_the_change(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_items_db(db)
    engine = engine_for(db, tmp_path)
    repo = MemoryRepo()
    full = repo.backup(engine, "full")
    unchanged = repo.backup(engine, "incremental", [full])
    assert unchanged.engine_meta["changed_pages"] == 0
    assert repo.size(unchanged, "pages") == 0

    conn = connect(db)  # 1% of the rows, one contiguous key range
    conn.execute("UPDATE items SET qty = qty + 1 WHERE id BETWEEN 5000 AND 5199")
    conn.close()
    incr = repo.backup(engine, "incremental", [full, unchanged])
    full_pages, incr_pages = repo.size(full, "pages"), repo.size(incr, "pages")
    assert 0 < incr_pages < full_pages // 20
    changed = incr.engine_meta["changed_pages"]
    assert 0 < changed < full.engine_meta["page_count"] // 20
    # Runs: every changed page once, plus one 8-byte header per run of contiguous pages.
    runs, remainder = divmod(incr_pages - changed * 4096, RUN_HEADER.size)
    assert remainder == 0 and 1 <= runs <= changed
    assert incr.object("pages").meta["format"] == "runs"


def test_page_size_change_needs_a_full_backup(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_items_db(db, rows=2000)
    engine = engine_for(db, tmp_path)
    repo = MemoryRepo()
    full = repo.backup(engine, "full")
    conn = connect(db)
    conn.execute("PRAGMA page_size=8192")
    conn.execute("VACUUM")
    conn.close()
    with pytest.raises(UnsupportedError, match=r"changed from 4096 to 8192.*take a full backup"):
        repo.backup(engine, "incremental", [full])
    assert leftovers(tmp_path / "scratch") == []
    assert repo.backup(engine, "full").engine_meta["page_size"] == 8192


def test_incremental_without_a_parent_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_items_db(db, rows=10)
    with pytest.raises(EngineError, match="full backup first"):
        MemoryRepo().backup(engine_for(db, tmp_path), "incremental", [])


def test_backup_of_a_missing_database_says_so(tmp_path: Path) -> None:
    with pytest.raises(DatabaseMissing, match=r"missing\.db does not exist"):
        MemoryRepo().backup(engine_for(tmp_path / "missing.db", tmp_path), "full")
    assert not (tmp_path / "missing.db").exists()


def test_restore_refuses_a_chain_with_a_missing_link(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_items_db(db, rows=500)
    engine = engine_for(db, tmp_path)
    repo = MemoryRepo()
    full = repo.backup(engine, "full")
    incr1 = repo.backup(engine, "incremental", [full])
    incr2 = repo.backup(engine, "incremental", [full, incr1])
    with pytest.raises(EngineError, match="does not follow"):
        restore(tmp_path / "out.db", repo, [full, incr2])
    with pytest.raises(EngineError, match="must start with a full backup"):
        restore(tmp_path / "out.db", repo, [incr1, incr2])
    assert not (tmp_path / "out.db").exists()


# -- whole restore: safety --------------------------------------------------------------------

@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[Path, MemoryRepo, list[Manifest]]:
    """A database with a full and an incremental backup, and a different existing target."""
    db = tmp_path / "src.db"
    make_items_db(db, rows=5000)
    engine = engine_for(db, tmp_path)
    repo = MemoryRepo()
    full = repo.backup(engine, "full")
    conn = connect(db)
    conn.execute("UPDATE items SET note = 'changed' WHERE id < 2000")
    conn.close()
    incr = repo.backup(engine, "incremental", [full])
    return db, repo, [full, incr]


def test_conflict_fail_refuses_an_existing_target(
        tmp_path: Path, backed_up: tuple[Path, MemoryRepo, list[Manifest]]) -> None:
    _, repo, chain = backed_up
    target = tmp_path / "live" / "app.db"
    target.parent.mkdir()
    make_items_db(target, rows=10)
    before = target.read_bytes()
    with pytest.raises(ConflictError, match=r"already exists.*'fail'"):
        restore(target, repo, chain, conflict="fail")
    assert target.read_bytes() == before
    assert leftovers(target.parent) == []


def test_restore_into_a_new_path(
        tmp_path: Path, backed_up: tuple[Path, MemoryRepo, list[Manifest]]) -> None:
    db, repo, chain = backed_up
    target = tmp_path / "fresh" / "app.db"
    target.parent.mkdir()
    restore(target, repo, chain, conflict="fail")
    assert dump(target) == dump(db)
    if not WINDOWS:  # mode bits: Windows keeps only the read-only flag
        assert target.stat().st_mode & 0o777 == 0o644 & ~_umask()
    with pytest.raises(EngineError, match="does not exist; create it"):
        restore(tmp_path / "absent" / "app.db", repo, chain)


def _umask() -> int:
    import os
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_failure_midway_leaves_the_old_database_untouched(
        tmp_path: Path, backed_up: tuple[Path, MemoryRepo, list[Manifest]]) -> None:
    _, repo, chain = backed_up
    target = tmp_path / "live" / "app.db"
    target.parent.mkdir()
    make_items_db(target, rows=3000, wal=True)
    before = target.read_bytes()
    failing = FailingRepo(repo, fail_on=(chain[1].backup_id, "pages"))
    with pytest.raises(ConnectionError):
        SQLiteEngine(target).restore(RestoreRequest(chain=chain), failing)
    assert target.read_bytes() == before
    assert leftovers(target.parent) == []
    assert integrity(target) == ["ok"]


def test_damaged_pages_are_caught_before_the_target_is_touched(
        tmp_path: Path, backed_up: tuple[Path, MemoryRepo, list[Manifest]]) -> None:
    _, repo, chain = backed_up
    key = (chain[1].backup_id, "pages")
    data = bytearray(repo.objects[key])
    data[RUN_HEADER.size + 1000] ^= 0xFF  # flip a bit inside the first changed page
    repo.objects[key] = bytes(data)
    target = tmp_path / "app.db"
    make_items_db(target, rows=10)
    before = target.read_bytes()
    with pytest.raises(EngineError, match="differs from backup"):
        restore(target, repo, chain)
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_replacing_discards_the_old_databases_wal(
        tmp_path: Path, backed_up: tuple[Path, MemoryRepo, list[Manifest]]) -> None:
    """A stale -wal next to the new file would be replayed into it; the restore must fold it
    into the old file first and remove it before the swap."""
    db, repo, chain = backed_up
    live = tmp_path / "live.db"
    make_items_db(live, rows=3000, wal=True)
    holder = connect(live)
    holder.execute("PRAGMA wal_autocheckpoint=0")
    holder.execute("DELETE FROM items WHERE id < 2500")  # lands in the WAL only
    target = tmp_path / "copy" / "app.db"
    target.parent.mkdir()
    for suffix in ("", "-wal"):  # what a crashed application leaves behind
        Path(f"{target}{suffix}").write_bytes(Path(f"{live}{suffix}").read_bytes())
    holder.close()
    assert Path(f"{target}-wal").stat().st_size > 0

    restore(target, repo, chain)
    assert not Path(f"{target}-wal").exists()
    assert dump(target) == dump(db)
    assert integrity(target) == ["ok"]


def test_replacing_a_damaged_database_discards_its_journal(
        tmp_path: Path, backed_up: tuple[Path, MemoryRepo, list[Manifest]]) -> None:
    """The old file may be unreadable (often the reason for the restore): its side files are
    removed unread rather than rolled back into the new database."""
    db, repo, chain = backed_up
    target = tmp_path / "broken.db"
    target.write_bytes(b"SQLite format 3\0" + b"\xff" * 5000)
    Path(f"{target}-journal").write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"j" * 600)
    restore(target, repo, chain)
    assert not Path(f"{target}-journal").exists()
    assert dump(target) == dump(db)


# -- selective restore ------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE authors (id INTEGER PRIMARY KEY, name TEXT NOT NULL,
                      shout TEXT GENERATED ALWAYS AS (upper(name)) VIRTUAL);
CREATE TABLE books (id INTEGER PRIMARY KEY AUTOINCREMENT, author_id INTEGER, title TEXT,
                    edits INTEGER NOT NULL DEFAULT 0);
CREATE INDEX books_author ON books(author_id);
CREATE UNIQUE INDEX books_title ON books(title);
CREATE TRIGGER books_edited AFTER UPDATE OF title ON books
BEGIN UPDATE books SET edits = edits + 1 WHERE id = NEW.id; END;
CREATE TABLE audit (msg TEXT);
CREATE TABLE tags (tag TEXT PRIMARY KEY, weight REAL) WITHOUT ROWID;
CREATE VIEW author_books AS SELECT a.name, b.title FROM authors a JOIN books b
    ON b.author_id = a.id;
"""


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, MemoryRepo, list[Manifest]]:
    db = tmp_path / "library.db"
    conn = connect(db)
    conn.executescript(SCHEMA)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO authors (name) VALUES (?)", ((f"a{i}",) for i in range(200)))
    conn.executemany("INSERT INTO books (author_id, title) VALUES (?, ?)",
                     ((i % 200, f"title {i}") for i in range(3000)))
    conn.executemany("INSERT INTO audit VALUES (?)", ((f"event {i}",) for i in range(500)))
    conn.executemany("INSERT INTO tags VALUES (?, ?)", ((f"t{i}", i / 7) for i in range(300)))
    conn.execute("COMMIT")
    conn.execute("DELETE FROM books WHERE id > 2990")  # AUTOINCREMENT counter stays at 3000
    conn.execute("DELETE FROM audit WHERE rowid % 3 = 0")  # rowid gaps must survive
    conn.close()
    engine = engine_for(db, tmp_path)
    repo = MemoryRepo()
    full = repo.backup(engine, "full")
    conn = connect(db)
    conn.execute("UPDATE books SET title = title || '!' WHERE id <= 10")  # trigger: edits = 1
    conn.close()
    incr = repo.backup(engine, "incremental", [full])
    return db, repo, [full, incr]


def rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    conn = connect(path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def test_selective_restore_into_an_existing_database(
        tmp_path: Path, library: tuple[Path, MemoryRepo, list[Manifest]]) -> None:
    db, repo, chain = library
    target = tmp_path / "app.db"
    conn = connect(target)
    conn.execute("CREATE TABLE books (id INTEGER PRIMARY KEY, other TEXT)")
    conn.execute("INSERT INTO books VALUES (1, 'local data')")
    conn.execute("CREATE TABLE local (x)")
    conn.execute("INSERT INTO local VALUES ('keep me')")
    conn.close()
    before = dump(target)

    with pytest.raises(ConflictError, match=r"table 'books' already exists.*'fail'"):
        restore(target, repo, chain, include=["authors", "books"], conflict="fail")
    assert dump(target) == before  # authors was not created either: one transaction
    assert leftovers(tmp_path) == []

    restore(target, repo, chain, include=["authors", "books"], conflict="replace")
    for query in ("SELECT id, name, shout FROM authors ORDER BY id",
                  "SELECT * FROM books ORDER BY id",
                  "SELECT * FROM sqlite_sequence WHERE name = 'books'",
                  "SELECT type, name, sql FROM sqlite_master WHERE tbl_name IN"
                  " ('authors', 'books') ORDER BY name"):
        assert rows(target, query) == rows(db, query), query
    assert rows(target, "SELECT max(edits) FROM books") == [(1,)]
    assert rows(target, "SELECT x FROM local") == [("keep me",)]
    assert rows(target, "SELECT name FROM sqlite_master WHERE name IN ('audit', 'tags',"
                        " 'author_books')") == []
    assert integrity(target) == ["ok"]
    assert leftovers(tmp_path) == []

    conn = connect(target)  # the indexes and the trigger work in their new home
    conn.execute("UPDATE books SET title = 'renamed' WHERE id = 20")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO books (title) VALUES ('renamed')")
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT * FROM books WHERE author_id = 3").fetchall()
    conn.close()
    assert rows(target, "SELECT edits FROM books WHERE id = 20") == [(1,)]
    assert "books_author" in str(plan)


def test_selective_restore_into_a_new_database_keeps_rowids(
        tmp_path: Path, library: tuple[Path, MemoryRepo, list[Manifest]]) -> None:
    db, repo, chain = library
    target = tmp_path / "new.db"
    restore(target, repo, chain, include=["AUDIT", "tags"], conflict="fail")
    assert rows(target, "SELECT rowid, msg FROM audit ORDER BY rowid") == \
        rows(db, "SELECT rowid, msg FROM audit ORDER BY rowid")
    assert rows(target, "SELECT * FROM tags") == rows(db, "SELECT * FROM tags")
    assert rows(target, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") \
        == [("audit",), ("tags",)]


def test_selective_restore_names_unknown_tables_and_views(
        tmp_path: Path, library: tuple[Path, MemoryRepo, list[Manifest]]) -> None:
    _, repo, chain = library
    target = tmp_path / "app.db"
    with pytest.raises(UsageError,
                       match=r"no table 'nope'; its tables are: audit, authors, books, tags$"):
        restore(target, repo, chain, include=["books", "nope"])
    with pytest.raises(UsageError, match="'author_books' is a view, not a table"):
        restore(target, repo, chain, include=["author_books"])
    assert not target.exists()  # a failed selective restore leaves no empty file behind
    assert rows(target, "SELECT name FROM sqlite_master") == []
    assert leftovers(tmp_path) == []
