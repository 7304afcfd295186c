"""Repository reading from storage alone: listing, references, chains, config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from safehold.api.manifest import Manifest
from safehold.repository import layout
from safehold.repository.repo import RepoConfig, Repository, RepositoryError
from safehold.storage.local import LocalStorage

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def manifest(n: int, kind: str = "full", parent: str | None = None, chain: str | None = None
             ) -> Manifest:
    bid = layout.new_backup_id(T0 + timedelta(minutes=n))
    return Manifest(backup_id=bid, target="app", engine="sqlite", type=kind,  # type: ignore[arg-type]
                    parent_id=parent, chain_id=chain or bid, started_at=T0, finished_at=T0,
                    compression="zstd:3", chunk_size=1 << 20)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(LocalStorage(tmp_path / "repo"))


def test_ids_sort_in_time_order() -> None:
    ids = [layout.new_backup_id(T0 + timedelta(microseconds=i * 999_983)) for i in range(50)]
    assert ids == sorted(ids) and all(layout.is_backup_id(i) for i in ids)


def test_backups_without_manifest_are_incomplete(repo: Repository) -> None:
    full = manifest(0)
    repo.write_manifest(full)
    repo.storage.put_bytes(layout.object_key("app", layout.new_backup_id(T0 + timedelta(hours=1)),
                                          "pages"), b"x")
    complete, incomplete = repo.backup_ids("app")
    assert complete == [full.backup_id]
    assert len(incomplete) == 1
    assert [m.backup_id for m in repo.backups("app")] == [full.backup_id]
    assert repo.targets() == ["app"]


def test_resolve_latest_and_errors(repo: Repository) -> None:
    with pytest.raises(RepositoryError, match=r"^target 'app' has no backups"):
        repo.resolve("app", "latest")
    # a Restore naming a backupId: the message names the id it asked for
    wanted = "20200101T000000.000000Z"
    with pytest.raises(RepositoryError,
                       match=rf"^no backup '{wanted}': target 'app' has no backups in "):
        repo.resolve("app", wanted)
    a, b = manifest(0), manifest(1)
    repo.write_manifest(a)
    repo.write_manifest(b)
    assert repo.resolve("app", "latest") == b
    assert repo.resolve("app", a.backup_id) == a
    with pytest.raises(RepositoryError, match="safehold list"):
        repo.resolve("app", "20200101T000000.000000Z")


def test_chain_follows_parents_and_reports_a_missing_link(repo: Repository) -> None:
    full = manifest(0)
    inc1 = manifest(1, "incremental", full.backup_id, full.backup_id)
    inc2 = manifest(2, "incremental", inc1.backup_id, full.backup_id)
    diff = manifest(3, "differential", full.backup_id, full.backup_id)
    for m in (full, inc1, inc2, diff):
        repo.write_manifest(m)
    assert repo.chain(inc2) == [full, inc1, inc2]
    assert repo.chain(diff) == [full, diff]
    repo.delete_backup("app", inc1.backup_id)
    with pytest.raises(RepositoryError, match=f"depends on {inc1.backup_id}, which is missing"):
        repo.chain(inc2)


def test_config_roundtrip_and_future_format(repo: Repository) -> None:
    fresh = repo.config()  # an empty repository has the defaults
    assert (fresh.format, fresh.kdf, fresh.active_key_id) == (RepoConfig.format, None, None)
    repo.update_config(active_key_id="k-1", retired_key_ids=("k-0",))
    assert repo.config().active_key_id == "k-1" and repo.config().retired_key_ids == ("k-0",)
    repo.storage.put_bytes(layout.CONFIG, b'{"format": 99}')
    with pytest.raises(RepositoryError, match="upgrade safehold"):
        repo.config()


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "-lead", "x" * 129])
def test_target_names_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid target name"):
        layout.check_target_name(bad)
