"""The repository's log archive: segments framed, encrypted and bound like backups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from safehold.api.manifest import Manifest
from safehold.codecs import crypto
from safehold.pipeline.logarchive import LogArchive
from safehold.pipeline.objects import CorruptObjectError
from safehold.repository import logarchive as la
from safehold.repository.policy import RepositoryTampered
from safehold.repository.repo import Repository
from safehold.storage.local import LocalStorage

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEK = crypto.Kek.from_key(b"k" * 32)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(LocalStorage(tmp_path / "repo"))


def seg(name: str, stream: str = "server-1") -> la.SegmentId:
    return la.SegmentId("app", "binlog", stream, name)


def put(archive: LogArchive, name: str, data: bytes, n: int = 0, stream: str = "server-1"
        ) -> la.SegmentRecord:
    return archive.put(seg(name, stream), [data[: len(data) // 2], data[len(data) // 2:]],
                       start={"file": name, "pos": "4"}, end={"file": name, "pos": str(len(data))},
                       first_time=T0 + timedelta(hours=n),
                       last_time=T0 + timedelta(hours=n, minutes=59))


def test_put_list_open_verify_encrypted(repo: Repository) -> None:
    archive = LogArchive(repo, "app", kek=KEK, chunk_size=1024)
    data = bytes(range(256)) * 40
    record = put(archive, "binlog.000001", data)
    put(archive, "binlog.000002", b"second", 1)
    assert record.encryption == "aes-256-gcm" and record.mac and record.object.chunks == 10
    assert data not in (Path(repo.storage.url.removeprefix("file://")) / la.logs_prefix("app")
                        ).joinpath("binlog/server-1/binlog.000001/data").read_bytes()
    reader = LogArchive(repo, "app", [KEK])
    listed = reader.list("binlog")
    assert [r.name for r in listed] == ["binlog.000001", "binlog.000002"]
    assert reader.read(listed[0]) == data and reader.verify(listed[1]) == 6
    # a retried put of the same bytes is a no-op; other bytes under the name are refused
    assert put(archive, "binlog.000001", data) == record
    with pytest.raises(la.SegmentConflict, match="already archived with other content"):
        put(archive, "binlog.000001", data + b"x")
    assert reader.read(reader.get(seg("binlog.000001"))) == data


def test_swapped_or_edited_segments_are_refused(repo: Repository) -> None:
    archive = LogArchive(repo, "app", kek=KEK)
    put(archive, "binlog.000001", b"one" * 100)
    put(archive, "binlog.000002", b"two" * 100, 1)
    storage = repo.storage
    one, two = seg("binlog.000001"), seg("binlog.000002")
    # the data (and key) of one segment moved under the other's record
    storage.put_bytes(two.data_key, storage.get_bytes(one.data_key))
    reader = LogArchive(repo, "app", [KEK])
    with pytest.raises(CorruptObjectError):
        reader.read(reader.get(two))
    # a record copied under another name is refused before anything is decoded
    storage.put_bytes(two.record_key, storage.get_bytes(one.record_key))
    with pytest.raises(RepositoryTampered, match="copied or moved"):
        reader.get(two)
    # an edited position breaks the MAC
    text = storage.get_bytes(one.record_key).replace(b'"pos": "300"', b'"pos": "301"')
    storage.put_bytes(one.record_key, text)
    with pytest.raises(RepositoryTampered, match="MAC mismatch"):
        reader.read(reader.get(one))
    # a record claiming another namespace (re-MAC'd cannot be faked without the key: the MAC
    # check comes first; an unencrypted target has only this check)
    plain_repo = Repository(LocalStorage(Path(repo.storage.url.removeprefix("file://")) / "p"))
    mine = LogArchive(plain_repo, "app", no_encryption=True, namespace="shop")
    rec = put(mine, "binlog.000001", b"x")
    forged = rec.model_copy(update={"namespace": "other"})
    with pytest.raises(RepositoryTampered, match="namespace 'other'"):
        LogArchive(plain_repo, "app").data_key(forged)
    # an unencrypted record in an encrypted target is a downgrade
    plain = LogArchive(repo, "app", [KEK])
    rec = reader.get(one).model_copy(update={"encryption": "none", "mac": None})
    with pytest.raises(RepositoryTampered, match="must be"):
        plain.data_key(rec)


def test_unencrypted_target_and_bad_names(repo: Repository) -> None:
    archive = LogArchive(repo, "app", no_encryption=True)
    record = put(archive, "binlog.000001", b"plain")
    assert record.mac is None and LogArchive(repo, "app").read(record) == b"plain"
    with pytest.raises(ValueError, match="invalid log stream"):
        la.SegmentId("app", "binlog", "../x", "a")
    with pytest.raises(ValueError, match="unknown log kind"):
        la.SegmentId("app", "redo", "s", "a")


def full(hours: int) -> Manifest:
    t = T0 + timedelta(hours=hours)
    return Manifest(backup_id=f"2026120{1}T{hours:02d}0000.000000Z", target="app",
                    engine="mysql", type="full", chain_id="x", started_at=t, finished_at=t,
                    compression="zstd:3", chunk_size=1 << 20)


def test_retention_keeps_what_kept_backups_and_the_window_need(repo: Repository) -> None:
    archive = LogArchive(repo, "app", no_encryption=True)
    records = [put(archive, f"binlog.00000{i}", b"x", n=i * 2) for i in range(1, 6)]
    # segments end at 12:59+2i h: 14:59, 16:59, 18:59, 20:59, 22:59
    gone = la.expendable(records, [full(8)])  # oldest kept full at 20:00, less 1 h slack
    assert [r.name for r in gone] == ["binlog.000001", "binlog.000002", "binlog.000003"]
    gone = la.expendable(records, [full(8)], window_start=T0 + timedelta(hours=5))
    assert [r.name for r in gone] == ["binlog.000001"]
    assert la.expendable(records, []) == records  # nothing kept: no restore can use them
    for r in gone:
        la.delete_segment(repo, r.id)
    assert [r.name for r in archive.list()] == [f"binlog.00000{i}" for i in range(2, 6)]
