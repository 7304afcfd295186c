"""The repository's log archive: segments framed, encrypted and bound like backups."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from safehold.api.manifest import Manifest
from safehold.codecs import crypto
from safehold.codecs.compression import parse_codec
from safehold.codecs.frames import MAGIC, Frame, frame_bytes, parse_frames
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


# -- a reader that applies: encrypted segments checked by their tags --------------------------

def _segment_file(repo: Repository, name: str) -> Path:
    return Path(repo.storage.url.removeprefix("file://")) / seg(name).data_key


def _rewrite(path: Path, change: Callable[[list[Frame]], list[Frame]]) -> None:
    frames = change(list(parse_frames([path.read_bytes()])))
    path.write_bytes(MAGIC + b"".join(frame_bytes(f.payload, f.raw_len, f.final)
                                      for f in frames))


def _forged(frames: list[Frame]) -> list[Frame]:
    """Frame 1 with a byte changed and its CRC made to match."""
    payload = bytearray(frames[1].payload)
    payload[20] ^= 0x01
    frames[1] = dataclasses.replace(frames[1], payload=memoryview(bytes(payload)))
    return frames


SEGMENT = os.urandom(12_000)  # incompressible: 12 frames of 1 KiB
SEGMENT_DAMAGE: dict[str, tuple[Callable[[Repository], None], str]] = {
    "flip": (lambda repo: _flip_stored(repo), "frame 1 fails its CRC check"),
    "forge": (lambda repo: _rewrite(_segment_file(repo, "binlog.000001"), _forged),
              "authentication failed"),
    "reorder": (lambda repo: _rewrite(_segment_file(repo, "binlog.000001"),
                                      lambda f: [f[0], f[2], f[1], *f[3:]]),
                "authentication failed"),
    "drop-final": (lambda repo: _rewrite(_segment_file(repo, "binlog.000001"),
                                         lambda f: f[:-1]), "no final frame"),
    "other-segment": (lambda repo: _segment_file(repo, "binlog.000001").write_bytes(
        _segment_file(repo, "binlog.000002").read_bytes()), "authentication failed"),
}


def _flip_stored(repo: Repository) -> None:
    path = _segment_file(repo, "binlog.000001")
    data = bytearray(path.read_bytes())
    first = next(iter(parse_frames([bytes(data)])))
    data[len(MAGIC) + 13 + len(first.payload) + 13 + 20] ^= 0x01  # inside frame 1's payload
    path.write_bytes(bytes(data))


@pytest.fixture
def sealed(repo: Repository) -> Repository:
    archive = LogArchive(repo, "app", kek=KEK, chunk_size=1024, codec=parse_codec("none"))
    put(archive, "binlog.000001", SEGMENT)
    put(archive, "binlog.000002", SEGMENT[::-1], 1)
    return repo


def test_an_applying_reader_checks_encrypted_segments_by_their_tags(sealed: Repository) -> None:
    """PITR replays and restore_command open the archive with ``tags_suffice``: no SHA-256 of
    the stored or the raw bytes. A record whose hashes are wrong (which only a holder of its
    data key could have MAC'd) reads all the same there; ``verify`` and a full reader refuse it."""
    applying = LogArchive(sealed, "app", [KEK], tags_suffice=True)
    record = applying.get(seg("binlog.000001"))
    assert applying.read(record) == SEGMENT and applying.verify(record) == len(SEGMENT)
    key = applying.data_key(record)
    assert key is not None
    wrong = record.model_copy(update={"object": record.object.model_copy(update={
        "sha256": "00" * 32, "meta": {"raw_sha256": "00" * 32}})})
    wrong = wrong.model_copy(update={"mac": crypto.manifest_mac(key, wrong.signing_bytes())})
    assert applying.read(wrong) == SEGMENT
    with pytest.raises(CorruptObjectError, match="size or hash"):
        applying.verify(wrong)
    with pytest.raises(CorruptObjectError, match="size or hash"):
        LogArchive(sealed, "app", [KEK]).read(wrong)
    # the sizes are still compared
    longer = record.model_copy(update={"object": record.object.model_copy(update={
        "raw_size": record.object.raw_size + 1})})
    longer = longer.model_copy(update={"mac": crypto.manifest_mac(key, longer.signing_bytes())})
    with pytest.raises(CorruptObjectError, match="size or hash"):
        applying.read(longer)


@pytest.mark.parametrize("damage", SEGMENT_DAMAGE, ids=list(SEGMENT_DAMAGE))
def test_every_damage_to_a_segment_is_refused_by_the_tags_alone(sealed: Repository,
                                                                damage: str) -> None:
    harm, message = SEGMENT_DAMAGE[damage]
    harm(sealed)
    for tags_suffice in (True, False):
        reader = LogArchive(sealed, "app", [KEK], tags_suffice=tags_suffice)
        with pytest.raises(CorruptObjectError, match=message) as caught:
            reader.read(reader.get(seg("binlog.000001")))
        assert "binlog.000001" in str(caught.value)


def test_an_unencrypted_segment_is_hashed_by_an_applying_reader(repo: Repository) -> None:
    """Without tags only the SHA-256 binds the frames to the record: a frame changed with its
    CRC made to match is refused even by a reader that trusts tags."""
    archive = LogArchive(repo, "app", no_encryption=True, chunk_size=1024,
                         codec=parse_codec("none"))
    put(archive, "binlog.000001", SEGMENT)
    _rewrite(_segment_file(repo, "binlog.000001"), _forged)
    applying = LogArchive(repo, "app", tags_suffice=True)
    with pytest.raises(CorruptObjectError, match="size or hash"):
        applying.read(applying.get(seg("binlog.000001")))
