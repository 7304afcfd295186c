"""Target policy records and manifest binding through the pipeline (real SQLite, local storage):
namespaces, the repository id, format-1 repositories. The attacks through the CLI are in
tests/integration/test_trust_repository.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from safehold.api.manifest import Manifest
from safehold.codecs import crypto
from safehold.engines.base import open_engine
from safehold.pipeline.backup import BackupOptions, run_backup
from safehold.pipeline.keys import DataKeys, backup_context, read_wrapped_key
from safehold.pipeline.restore import run_restore
from safehold.repository.policy import (
    EncryptionKeyRequired,
    PolicyConflict,
    RepositoryTampered,
    read_policy,
)
from safehold.repository.repo import Repository
from safehold.storage.base import open_storage
from tests.infra.portable import sqlite_url
from tests.integration.cli_helpers import dump, make_db


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(open_storage((tmp_path / "repo").as_uri()))


@pytest.fixture
def kek() -> crypto.Kek:
    return crypto.Kek.from_key(crypto.generate_key())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "orders.db"
    make_db(path, rows=50, tables=1)
    return path


def backup(db: Path, repo: Repository, kek: crypto.Kek | None, **options: object) -> Manifest:
    return run_backup(open_engine(sqlite_url(db)), repo,
                      BackupOptions(target="orders", **options), kek)  # type: ignore[arg-type]


def test_first_backup_records_the_policy_and_the_repository_id(
        db: Path, repo: Repository, kek: crypto.Kek) -> None:
    m = backup(db, repo, kek, namespace="shop")
    policy = read_policy(repo, "orders")
    assert policy is not None and policy.encryption == "aes-256-gcm"
    assert policy.repo_id == repo.config().repo_id == m.repo_id
    assert policy.repo_id and policy.repo_id.startswith("r-")
    assert policy.namespace == m.namespace == "shop" and m.full_name == "shop/orders"
    assert policy.mac_key_id == kek.key_id and policy.verified_by([kek])
    assert m.format == 2 and m.mac


def test_two_namespaces_orders_never_pass_for_each_other(
        db: Path, repo: Repository, kek: crypto.Kek, tmp_path: Path) -> None:
    backup(db, repo, kek, namespace="shop")
    with pytest.raises(PolicyConflict, match="belongs to 'shop/orders'"):
        backup(db, repo, kek, namespace="billing")
    with pytest.raises(PolicyConflict, match="belongs to 'shop/orders'"):
        backup(db, repo, kek)  # no namespace is another full name too
    # billing/orders backed up into a repository of its own, its folder copied into this one
    other = Repository(open_storage((tmp_path / "other").as_uri()))
    other.save_config(repo.config())  # even with the same repository id (a cloned bucket)
    forged = backup(db, other, kek, namespace="billing")
    for info in other.storage.list(f"orders/{forged.backup_id}/"):
        repo.storage.put_bytes(info.key, other.storage.get_bytes(info.key))
    read = repo.resolve("orders", forged.backup_id)
    with pytest.raises(RepositoryTampered, match="belongs to 'billing/orders'"):
        DataKeys(repo, [kek]).for_backup(read)


def test_invalid_namespace_is_a_usage_error(db: Path, repo: Repository,
                                            kek: crypto.Kek) -> None:
    with pytest.raises(PolicyConflict, match="invalid namespace 'Shop/x'"):
        backup(db, repo, kek, namespace="Shop/x")


def test_no_key_and_no_choice_writes_nothing(db: Path, repo: Repository) -> None:
    with pytest.raises(EncryptionKeyRequired, match="safehold keys generate"):
        backup(db, repo, None)
    assert read_policy(repo, "orders") is None
    assert repo.backup_ids("orders") == ([], [])


def test_the_manifest_mac_binds_the_namespace_and_repository_id(
        db: Path, repo: Repository, kek: crypto.Kek) -> None:
    m = backup(db, repo, kek, namespace="shop")
    key = f"orders/{m.backup_id}/manifest.json"
    body = json.loads(repo.storage.get_bytes(key))
    for field, value in (("namespace", None), ("repo_id", "r-0")):
        repo.storage.put_bytes(key, json.dumps({**body, field: value}).encode())
        with pytest.raises(crypto.TamperedError):
            DataKeys(repo, [kek]).for_backup(repo.resolve("orders", "latest"))


def make_format_1(repo: Repository, kek: crypto.Kek, m: Manifest) -> None:
    """Rewrite a backup as a safehold before format 2 wrote it: no repository id, no policy."""
    data_key = crypto.unwrap_key([kek], read_wrapped_key(repo, "orders", m.backup_id),
                                 backup_context(m.backup_id))
    old = m.model_copy(update={"format": 1, "namespace": None, "repo_id": None, "mac": None})
    old = old.model_copy(update={"mac": crypto.manifest_mac(data_key, old.signing_bytes())})
    body = old.model_dump(mode="json", exclude={"namespace", "repo_id"})
    repo.storage.put_bytes(f"orders/{m.backup_id}/manifest.json", json.dumps(body).encode())
    config = json.loads(repo.storage.get_bytes("safehold-repo.json"))
    del config["repo_id"]
    config["format"] = 1
    repo.storage.put_bytes("safehold-repo.json", json.dumps(config).encode())
    repo.storage.delete("orders/target.json")


def test_format_1_repositories_are_read_with_a_warning_and_upgraded_on_the_next_backup(
        db: Path, repo: Repository, kek: crypto.Kek, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    first = backup(db, repo, kek)
    make_format_1(repo, kek, first)
    legacy = repo.resolve("orders", "latest")
    assert legacy.format == 1
    out = tmp_path / "restored.db"
    with caplog.at_level(logging.WARNING):
        run_restore(open_engine(sqlite_url(out)), repo, legacy, [kek])
    assert dump(out) == dump(db)
    assert "format-1 manifest" in caplog.text
    # the next backup gives the repository its id and the target its record, from the evidence
    backup(db, repo, kek)
    policy = read_policy(repo, "orders")
    assert policy is not None and policy.encryption == "aes-256-gcm"
    assert repo.config().repo_id == policy.repo_id
    DataKeys(repo, [kek]).for_backup(repo.resolve("orders", first.backup_id))  # still readable


def test_format_1_unencrypted_copy_over_an_encrypted_legacy_backup_is_refused(
        db: Path, repo: Repository, kek: crypto.Kek) -> None:
    """No record yet (format 1), but a key is supplied and the target has wrapped keys."""
    first = backup(db, repo, kek)
    make_format_1(repo, kek, first)
    key = f"orders/{first.backup_id}/manifest.json"
    body = json.loads(repo.storage.get_bytes(key))
    repo.storage.put_bytes(key, json.dumps({**body, "encryption": "none", "mac": None}).encode())
    for keks in ([kek], []):
        with pytest.raises(RepositoryTampered, match="is not encrypted"):
            DataKeys(repo, keks).for_backup(repo.resolve("orders", "latest"))


def test_rotation_re_signs_an_unencrypted_targets_policy(
        db: Path, repo: Repository, kek: crypto.Kek, tmp_path: Path) -> None:
    from safehold.repository.trust import resign_policies

    backup(db, repo, kek, no_encryption=True)
    new = crypto.Kek.from_key(crypto.generate_key())
    assert resign_policies(repo, [kek], new) == 1
    policy = read_policy(repo, "orders")
    assert policy is not None and policy.mac_key_id == new.key_id and policy.verified_by([new])
    out = tmp_path / "restored.db"  # the new key alone reads the unencrypted target
    run_restore(open_engine(sqlite_url(out)), repo, repo.resolve("orders", "latest"), [new])
    assert dump(out) == dump(db)
    with pytest.raises(RepositoryTampered, match="not authenticated"):
        DataKeys(repo, [kek]).for_backup(repo.resolve("orders", "latest"))


def test_a_manifest_of_a_newer_format_asks_for_an_upgrade(
        db: Path, repo: Repository, kek: crypto.Kek) -> None:
    from safehold.api.manifest import ManifestFormatError

    m = backup(db, repo, kek)
    key = f"orders/{m.backup_id}/manifest.json"
    body = json.loads(repo.storage.get_bytes(key))
    repo.storage.put_bytes(key, json.dumps({**body, "format": 3}).encode())
    with pytest.raises(ManifestFormatError, match="upgrade safehold"):
        repo.resolve("orders", "latest")


def test_a_repository_id_removed_from_the_config_is_not_replaced_by_a_new_one(
        db: Path, repo: Repository, kek: crypto.Kek) -> None:
    first = backup(db, repo, kek)
    config = json.loads(repo.storage.get_bytes("safehold-repo.json"))
    repo.storage.put_bytes("safehold-repo.json", json.dumps(
        {k: v for k, v in config.items() if k != "repo_id"}).encode())
    with pytest.raises(RepositoryTampered, match=f"name {first.repo_id}"):
        backup(db, repo, kek)
    assert "repo_id" not in json.loads(repo.storage.get_bytes("safehold-repo.json"))
    with pytest.raises(RepositoryTampered, match="belongs to repository"):
        DataKeys(repo, [kek]).for_backup(repo.resolve("orders", "latest"))


def test_format_1_evidence_is_any_encrypted_manifest_even_without_key_records(
        db: Path, repo: Repository, kek: crypto.Kek) -> None:
    """Legacy target, keys.json deleted, a forged unencrypted latest: a key-less read refuses."""
    first = backup(db, repo, kek)
    make_format_1(repo, kek, first)
    forged = {**json.loads(repo.storage.get_bytes(f"orders/{first.backup_id}/manifest.json")),
              "backup_id": "20991231T000000.000000Z", "chain_id": "20991231T000000.000000Z",
              "encryption": "none", "mac": None}
    repo.storage.delete(f"orders/{first.backup_id}/keys.json")
    repo.storage.put_bytes("orders/20991231T000000.000000Z/manifest.json",
                           json.dumps(forged).encode())
    with pytest.raises(RepositoryTampered, match="has encrypted backups"):
        DataKeys(repo, []).for_backup(repo.resolve("orders", "latest"))


def test_writers_creating_a_repository_at_once_agree_on_its_id(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url = (tmp_path / "repo").as_uri()
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: Repository(open_storage(url)).ensure_repo_id(), range(16)))
    assert len(ids) == 1 and Repository(open_storage(url)).config().repo_id in ids


def test_two_first_backups_at_once_one_record_wins_and_the_other_obeys_it(
        repo: Repository, kek: crypto.Kek, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loser read "no record" just before the winner created one (no lease between them)."""
    from safehold.repository import trust
    from safehold.repository.policy import TargetPolicy, create_policy

    winner = TargetPolicy(target="orders", repo_id=repo.ensure_repo_id(), encryption="none")
    real, calls = trust.read_policy, []

    def stale_once(r: Repository, t: str) -> TargetPolicy | None:
        calls.append(t)
        return None if len(calls) == 1 else real(r, t)

    monkeypatch.setattr(trust, "read_policy", stale_once)
    assert create_policy(repo, winner)
    with pytest.raises(PolicyConflict, match="created unencrypted"):
        trust.establish(repo, "orders", None, kek, no_encryption=False)
    policy = read_policy(repo, "orders")
    assert policy is not None and policy.encryption == "none"  # not overwritten
    assert len(calls) == 2  # it did lose the race, and read the winner's record


def test_a_writer_that_saw_the_repository_before_its_id_never_rewrites_a_new_targets_record(
        db: Path, repo: Repository, kek: crypto.Kek, monkeypatch: pytest.MonkeyPatch) -> None:
    """First backups of many targets at once (the operator starts them together): a slow
    writer read the config before another created the id, and the records before the other's
    first backup completed. It neither calls that tampering nor replaces the other target's
    record with a namespace-less legacy one (which refused every later backup and restore)."""
    from safehold.repository import trust
    from safehold.repository.repo import RepoConfig

    shop = backup(db, repo, kek, namespace="shop")  # the fast writer: id, record, backup
    real_config, real_read = Repository.config, trust.read_policy
    seen: list[str] = []

    def config_before_the_id(self: Repository) -> RepoConfig:
        seen.append("config")
        return RepoConfig() if len(seen) == 1 else real_config(self)

    monkeypatch.setattr(Repository, "config", config_before_the_id)
    assert trust.prepare_repository(repo) == shop.repo_id  # records already there: not tamper

    seen.clear()
    monkeypatch.setattr(trust, "read_policy", lambda r, t: None)  # looked before its record
    assert trust.prepare_repository(repo) == shop.repo_id
    monkeypatch.setattr(trust, "read_policy", real_read)
    policy = read_policy(repo, "orders")
    assert policy is not None and policy.namespace == "shop" and policy.verified_by([kek])
    monkeypatch.setattr(Repository, "config", real_config)
    again = backup(db, repo, kek, namespace="shop")  # the target's next backup is fine
    DataKeys(repo, [kek]).for_backup(repo.resolve("orders", again.backup_id))
