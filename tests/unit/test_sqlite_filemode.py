"""A restored SQLite file (and its temporary file while it is written) is never more open than
the file backed up: 0600 when the backup does not say."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safehold.api.errors import UsageError
from safehold.engines.base import RestoreRequest
from safehold.engines.sqlite import SQLiteEngine
from safehold.engines.sqlite import engine as sqlite_engine
from tests.infra.portable import posix_only
from tests.unit.test_sqlite_engine import (
    SCHEMA,
    MemoryRepo,
    connect,
    dump,
    engine_for,
    leftovers,
    make_items_db,
)

pytestmark = posix_only("mode bits (Windows keeps only the read-only flag)")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """umask 000: whatever mode a file gets, Safehold chose it (the umask cannot narrow it)."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def staging_modes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The temporary file's mode as the rebuild starts writing it and when it is done."""
    seen: list[int] = []
    real = sqlite_engine.rebuild

    def spy(chain: Any, reader: Any, out: Path, **kw: Any) -> None:
        seen.append(mode(out))
        real(chain, reader, out, **kw)
        seen.append(mode(out))

    monkeypatch.setattr(sqlite_engine, "rebuild", spy)
    return seen


def backed_up(tmp_path: Path, source_mode: int) -> tuple[Path, MemoryRepo, list[Any]]:
    db = tmp_path / "src.db"
    conn = connect(db)
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO audit VALUES ('secret')")
    conn.close()
    db.chmod(source_mode)
    repo = MemoryRepo()
    full = repo.backup(engine_for(db, tmp_path), "full")
    return db, repo, [full]


def restore(target: Path, repo: MemoryRepo, chain: list[Any], **kw: Any) -> None:
    SQLiteEngine(target).restore(RestoreRequest(chain=chain, **kw), repo)


@pytest.mark.parametrize("source_mode", [0o600, 0o640, 0o644])
def test_a_new_file_gets_the_source_mode_and_the_temporary_file_0600(
        tmp_path: Path, staging_modes: list[int], source_mode: int) -> None:
    db, repo, chain = backed_up(tmp_path, source_mode)
    assert chain[0].engine_meta["file_mode"] == f"{source_mode:04o}"
    target = tmp_path / "out" / "app.db"
    target.parent.mkdir()
    restore(target, repo, chain, conflict="fail")
    assert dump(target) == dump(db)
    assert mode(target) == source_mode
    assert staging_modes == [0o600, 0o600]


@pytest.mark.parametrize(("source_mode", "target_mode", "restored"), [
    (0o600, 0o666, 0o600),  # a wide target is narrowed to the source
    (0o640, 0o604, 0o600),  # only what both grant
    (0o644, 0o640, 0o640),  # a narrow target is never widened
])
def test_replacing_a_file_grants_only_what_source_and_target_both_did(
        tmp_path: Path, staging_modes: list[int], source_mode: int, target_mode: int,
        restored: int) -> None:
    db, repo, chain = backed_up(tmp_path, source_mode)
    target = tmp_path / "live.db"
    make_items_db(target, rows=10)
    target.chmod(target_mode)
    restore(target, repo, chain)
    assert dump(target) == dump(db)
    assert mode(target) == restored
    assert staging_modes == [0o600, 0o600]


def test_a_backup_that_recorded_no_mode_restores_owner_only(tmp_path: Path) -> None:
    _, repo, chain = backed_up(tmp_path, 0o644)
    chain[0].engine_meta.pop("file_mode")
    target = tmp_path / "old.db"
    restore(target, repo, chain)
    assert mode(target) == 0o600


def test_selective_restore_creates_with_and_narrows_to_the_source_mode(
        tmp_path: Path, staging_modes: list[int]) -> None:
    _, repo, chain = backed_up(tmp_path, 0o600)
    new = tmp_path / "new.db"
    restore(new, repo, chain, include=["audit"], conflict="fail")
    assert mode(new) == 0o600
    existing = tmp_path / "existing.db"
    make_items_db(existing, rows=10)
    existing.chmod(0o644)
    restore(existing, repo, chain, include=["audit"])
    assert mode(existing) == 0o600
    assert staging_modes == [0o600, 0o600] * 2


def test_a_failed_selective_restore_removes_its_file_and_keeps_the_old_mode(tmp_path: Path) -> None:
    _, repo, chain = backed_up(tmp_path, 0o600)
    target = tmp_path / "new.db"
    with pytest.raises(UsageError, match="nope"):
        restore(target, repo, chain, include=["audit", "nope"], conflict="fail")
    assert not target.exists()
    existing = tmp_path / "existing.db"
    make_items_db(existing, rows=10)
    existing.chmod(0o644)
    with pytest.raises(UsageError, match="nope"):
        restore(existing, repo, chain, include=["nope"])
    assert mode(existing) == 0o644  # nothing restored, nothing changed
    assert leftovers(tmp_path) == []


def test_the_backup_snapshot_in_the_scratch_directory_is_0600(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = sqlite_engine.take_snapshot

    @contextlib.contextmanager
    def spy(*args: Any, **kw: Any) -> Iterator[Any]:
        with real(*args, **kw) as snap:
            seen.append(mode(snap.path))
            yield snap

    monkeypatch.setattr(sqlite_engine, "take_snapshot", spy)
    backed_up(tmp_path, 0o644)
    assert seen == [0o600]
