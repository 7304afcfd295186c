"""The free-space check before a backup (real SQLite engine, real local repository): it asks
the database for its size once, and not at all when the storage reports no limit."""

from __future__ import annotations

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


def test_storage_without_a_limit_never_asks_the_database(
        repo: Repository, engine, monkeypatch: pytest.MonkeyPatch) -> None:
    opened, asked = engine
    monkeypatch.setattr(repo.storage, "free_space", lambda: None)  # as S3, GCS and Azure report
    check_free_space(repo, opened)
    check_free_space(repo, opened, need=1 << 62)
    assert asked == []
