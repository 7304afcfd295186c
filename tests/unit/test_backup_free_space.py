"""A backup's first contact with its database (real engines, real local repository): the size
is asked once; a missing or unreachable database fails before anything reaches the repository;
a backup bigger than the free space is refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from safehold.api.errors import Exit
from safehold.engines.base import DatabaseMissing, Engine, EngineError, open_engine
from safehold.pipeline.backup import (
    BackupOptions,
    check_database,
    check_free_space,
    run_backup,
)
from safehold.repository.repo import Repository
from safehold.storage.base import NoSpaceError, open_storage
from tests.infra.portable import sqlite_url
from tests.infra.procs import free_port
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


def stored(repo: Repository, target: str) -> list[str]:
    return [o.key for o in repo.storage.list("") if o.key.startswith(f"{target}/")]


def test_a_known_size_is_not_asked_again(engine) -> None:
    opened, asked = engine
    assert check_database(opened, 1024) == 1024
    assert asked == []


def test_without_a_known_size_the_engine_is_asked_once(engine) -> None:
    opened, asked = engine
    assert check_database(opened) == asked[0] and len(asked) == 1 and asked[0]


def test_a_backup_bigger_than_the_free_space_is_refused(repo: Repository) -> None:
    with pytest.raises(NoSpaceError, match="MiB free but the database is"):
        check_free_space(repo, 1 << 62)
    check_free_space(repo, None)  # no estimate: nothing to refuse


def test_storage_without_a_limit_refuses_nothing(repo: Repository,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repo.storage, "free_space", lambda: None)  # as S3, GCS and Azure report
    check_free_space(repo, 1 << 62)


def test_a_missing_sqlite_file_fails_before_the_repository_is_written(
        tmp_path: Path, repo: Repository) -> None:
    missing = open_engine(sqlite_url(tmp_path / "no-such.db"))
    with pytest.raises(DatabaseMissing, match=r"no-such\.db does not exist"):
        run_backup(missing, repo, BackupOptions(target="orders", no_encryption=True), None)
    assert stored(repo, "orders") == []


def test_an_unreachable_database_fails_before_the_repository_is_written(
        repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL target on a refused port, with storage that reports no limit."""
    port = free_port()  # nothing listens: connections are refused, no server needed
    monkeypatch.setattr(repo.storage, "free_space", lambda: None)  # as an object store
    unreachable = open_engine(f"postgresql://nobody@127.0.0.1:{port}/app")
    with pytest.raises(EngineError, match=re.escape(f"127.0.0.1:{port}")):
        run_backup(unreachable, repo, BackupOptions(target="app", no_encryption=True), None)
    assert stored(repo, "app") == []


def test_a_mistyped_path_creates_no_repository(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The newcomer's typo: exit 3 naming the file, and the repository is not even created."""
    from safehold.cli.main import cli

    (tmp_path / "safehold.yaml").write_text("{}\n")
    argv = ["--config", str(tmp_path / "safehold.yaml"), "backup",
            "-t", sqlite_url(tmp_path / "ap.db"), "-r", (tmp_path / "repo").as_uri(),
            "--no-encryption"]
    assert cli.main(argv, prog_name="safehold", standalone_mode=False) == Exit.NOT_FOUND
    assert "ap.db does not exist" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()
