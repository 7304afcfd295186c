"""The free-space check before a backup (real SQLite engine, real local repository): it asks
the database for its size once, also when the storage reports no limit (an unreachable
database fails there, before the repository is written)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from safehold.engines.base import Engine, open_engine
from safehold.pipeline.backup import check_free_space
from safehold.repository.repo import Repository
from safehold.storage.base import NoSpaceError, open_storage
from tests.infra.portable import sqlite_url
from tests.integration.cli_helpers import make_db


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(open_storage((tmp_path / "repo").as_uri()))


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Engine, list[int | None]]:
    """The engine, and the answers its estimate_size() gave (one per call)."""
    make_db(tmp_path / "orders.db", rows=50, tables=1)
    opened, asked = open_engine(sqlite_url(tmp_path / "orders.db")), []
    real = opened.estimate_size

    def counted() -> int | None:
        asked.append(real())
        return asked[-1]

    monkeypatch.setattr(opened, "estimate_size", counted)
    return opened, asked


def test_a_known_size_is_not_asked_again(repo: Repository, engine) -> None:
    opened, asked = engine
    check_free_space(repo, opened, need=1024)
    assert asked == []


def test_without_a_known_size_the_engine_is_asked_once(repo: Repository, engine) -> None:
    opened, asked = engine
    check_free_space(repo, opened)
    assert len(asked) == 1 and asked[0]


def test_a_backup_bigger_than_the_free_space_is_refused(repo: Repository, engine) -> None:
    opened, _ = engine
    with pytest.raises(NoSpaceError, match="MiB free but the database is"):
        check_free_space(repo, opened, need=1 << 62)


def test_storage_without_a_limit_still_asks_the_database(
        repo: Repository, engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3, GCS and Azure report no free space; the question is still the run's first contact
    with the database, so an unreachable one fails before the repository is written."""
    opened, asked = engine
    monkeypatch.setattr(repo.storage, "free_space", lambda: None)
    check_free_space(repo, opened)
    assert len(asked) == 1
    check_free_space(repo, opened, need=1 << 62)  # no limit: nothing to refuse
    assert len(asked) == 1


def test_an_unreachable_database_fails_before_the_repository_is_written(
        repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL target on a port where nothing listens (connection refused: no server
    needed), with storage that reports no limit: nothing of the target reaches the
    repository."""
    import socket

    from safehold.engines.base import EngineError
    from safehold.pipeline.backup import BackupOptions, run_backup

    with socket.socket() as s:  # a free port, closed again: connections to it are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(repo.storage, "free_space", lambda: None)  # as an object store
    unreachable = open_engine(f"postgresql://nobody@127.0.0.1:{port}/app")
    with pytest.raises(EngineError, match=re.escape(f"127.0.0.1:{port}")):
        run_backup(unreachable, repo, BackupOptions(target="app", no_encryption=True), None)
    assert [o.key for o in repo.storage.list("") if o.key.startswith("app/")] == []
