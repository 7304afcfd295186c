"""A restore checks an encrypted object by its frames' AES-GCM tags and its sizes, without hashing
its stored bytes (ObjectReader(tags_suffice=True)): every damage and every forgery is still
refused, storage damage is still named as such, and unencrypted objects are still hashed.
Encrypted objects are written without a SHA-256 (NOT_HASHED); ``verify`` checks them by their
tags and CRCs."""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from safehold.api.manifest import NOT_HASHED, Manifest, ObjectRecord
from safehold.codecs.compression import parse_codec
from safehold.codecs.frames import MAGIC, Frame, frame_bytes, parse_frames
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.objects import CorruptObjectError, ObjectReader, ObjectWriter
from safehold.pipeline.profile import Profile
from safehold.repository.repo import Repository
from safehold.repository.trust import establish
from safehold.storage.base import open_storage

FIRST, SECOND = "20261205T120000.000000Z", "20261205T130000.000000Z"
PAYLOAD = b"".join(b"row %08d of a table, %s\n" % (i, os.urandom(8).hex().encode())
                   for i in range(20_000))  # about 40 chunks of 16 KiB


class _Keys(DataKeys):
    """The data key of each backup, as DataKeys gives it once the manifest's MAC is checked."""

    def __init__(self, keys: dict[str, bytes | None]) -> None:
        self.keys = keys

    def for_backup(self, manifest: Manifest) -> bytes | None:
        return self.keys[manifest.backup_id]


def _manifest(backup_id: str, records: list[ObjectRecord], encrypted: bool) -> Manifest:
    now = datetime(2026, 12, 5, tzinfo=UTC)
    return Manifest(backup_id=backup_id, target="t", engine="postgresql", type="full",
                    chain_id=backup_id, started_at=now, finished_at=now, compression="zstd:3",
                    chunk_size=16 << 10, objects=tuple(records),
                    encryption="aes-256-gcm" if encrypted else "none")


class Backups:
    def __init__(self, root: Path, *, encrypted: bool) -> None:
        self.root = root
        self.repo = Repository(open_storage((root / "repo").as_uri()))
        establish(self.repo, "t", None, None, no_encryption=True)
        self.keys: dict[str, bytes | None] = {}
        self.manifests: dict[str, Manifest] = {}
        for backup_id in (FIRST, SECOND):
            key = os.urandom(32) if encrypted else None
            writer = ObjectWriter(self.repo, "t", backup_id, parse_codec("zstd:3"), key,
                                  chunk_size=16 << 10, workers=2)
            writer.put("data/0000", [PAYLOAD])
            writer.put("data/0001", [PAYLOAD[::-1]])
            self.keys[backup_id] = key
            self.manifests[backup_id] = _manifest(backup_id, writer.records, encrypted)

    def path(self, name: str = "data/0000", backup_id: str = SECOND) -> Path:
        return self.root / "repo" / "t" / backup_id / "data" / name

    def read(self, *, tags_suffice: bool, name: str = "data/0000",
             manifest: Manifest | None = None) -> bytes:
        reader = ObjectReader(self.repo, _Keys(self.keys), workers=2, tags_suffice=tags_suffice)
        return b"".join(reader.open(manifest or self.manifests[SECOND], name))


def _frames(path: Path) -> list[Frame]:
    return list(parse_frames([path.read_bytes()]))


def _write(path: Path, frames: list[Frame], tail: bytes = b"") -> None:
    path.write_bytes(MAGIC + b"".join(frame_bytes(f.payload, f.raw_len, f.final)
                                      for f in frames) + tail)


def _flip(frame: Frame, at: int = 40) -> Frame:
    payload = bytearray(frame.payload)
    payload[at] ^= 0x01
    return dataclasses.replace(frame, payload=memoryview(bytes(payload)))


def flip_a_byte(b: Backups) -> None:  # bit rot: the frame's CRC no longer matches
    data = bytearray(b.path().read_bytes())
    first = _frames(b.path())[0]
    data[len(MAGIC) + 13 + len(first.payload) + 13 + 40] ^= 0x01  # inside frame 1's payload
    b.path().write_bytes(bytes(data))


def forge_a_frame(b: Backups) -> None:  # a byte changed and the CRC made to match it
    frames = _frames(b.path())
    frames[1] = _flip(frames[1])
    _write(b.path(), frames)


def reorder(b: Backups) -> None:
    frames = _frames(b.path())
    frames[1], frames[2] = frames[2], frames[1]
    _write(b.path(), frames)


def drop_a_middle_frame(b: Backups) -> None:
    frames = _frames(b.path())
    _write(b.path(), frames[:3] + frames[4:])


def drop_the_final_frame(b: Backups) -> None:
    _write(b.path(), _frames(b.path())[:-1])


def mark_an_early_frame_final(b: Backups) -> None:
    frames = _frames(b.path())
    _write(b.path(), [*frames[:2], dataclasses.replace(frames[2], final=True)])


def add_bytes_after_the_end(b: Backups) -> None:
    _write(b.path(), _frames(b.path()), tail=b"\0" * 16)


def swap_in_another_object(b: Backups) -> None:  # same backup, same key, another object
    b.path().write_bytes(b.path("data/0001").read_bytes())


def swap_in_another_backups_object(b: Backups) -> None:  # the same name from another backup
    b.path().write_bytes(b.path(backup_id=FIRST).read_bytes())


def splice_in_another_backups_frame(b: Backups) -> None:
    frames = _frames(b.path())
    frames[1] = _frames(b.path(backup_id=FIRST))[1]
    _write(b.path(), frames)


def misstate_a_raw_size(b: Backups) -> None:
    frames = _frames(b.path())
    frames[1] = dataclasses.replace(frames[1], raw_len=frames[1].raw_len + 1)
    _write(b.path(), frames)


DAMAGE: dict[str, tuple[Callable[[Backups], None], str]] = {
    "flip": (flip_a_byte, "frame 1 fails its CRC check"),
    "forge": (forge_a_frame, "authentication failed"),
    "reorder": (reorder, "authentication failed"),
    "drop-middle": (drop_a_middle_frame, "authentication failed"),
    "drop-final": (drop_the_final_frame, "no final frame"),
    "early-final": (mark_an_early_frame_final, "authentication failed"),
    "trailing": (add_bytes_after_the_end, "unexpected data after the final frame"),
    "other-object": (swap_in_another_object, "authentication failed"),
    "other-backup": (swap_in_another_backups_object, "authentication failed"),
    "other-frame": (splice_in_another_backups_frame, "authentication failed"),
    "raw-size": (misstate_a_raw_size, "decodes to|expected"),
}


@pytest.fixture
def sealed(tmp_path: Path) -> Backups:
    return Backups(tmp_path, encrypted=True)


def test_an_intact_encrypted_object_reads_back_without_its_hash(sealed: Backups) -> None:
    assert sealed.read(tags_suffice=True) == PAYLOAD
    # No SHA-256 is computed: a manifest whose hash is wrong (which only a holder of the data
    # key could have MAC'd) reads all the same, where a full check refuses it.
    record = sealed.manifests[SECOND].object("data/0000")
    wrong = sealed.manifests[SECOND].model_copy(update={"objects": (
        record.model_copy(update={"sha256": "00" * 32}),)})
    assert sealed.read(tags_suffice=True, manifest=wrong) == PAYLOAD
    with pytest.raises(CorruptObjectError, match="sha256"):
        sealed.read(tags_suffice=False, manifest=wrong)
    profile = Profile("restore")
    reader = ObjectReader(sealed.repo, _Keys(sealed.keys), workers=2, tags_suffice=True)
    reader.profile = profile
    b"".join(reader.open(sealed.manifests[SECOND], "data/0000"))
    assert profile.seconds["hash"] == 0.0 and profile.cpu["decrypt"] > 0.0


def test_encrypted_objects_are_stored_without_a_sha256(tmp_path: Path) -> None:
    sealed, plain = (Backups(tmp_path / "sealed", encrypted=True),
                     Backups(tmp_path / "plain", encrypted=False))
    for manifest in sealed.manifests.values():
        assert {o.sha256 for o in manifest.objects} == {NOT_HASHED}
    for manifest in plain.manifests.values():
        assert all(len(o.sha256) == 64 for o in manifest.objects)
    profile = Profile("backup")
    writer = ObjectWriter(sealed.repo, "t", "20261205T140000.000000Z", parse_codec("zstd:3"),
                          os.urandom(32), chunk_size=16 << 10, workers=2)
    writer.profile = profile
    writer.put("data/0000", [PAYLOAD])
    assert profile.seconds["hash"] == 0.0 and profile.cpu["encrypt"] > 0.0
    for tags_suffice in (True, False):  # a restore and verify
        assert sealed.read(tags_suffice=tags_suffice) == PAYLOAD


def test_an_unencrypted_object_without_its_sha256_is_refused(tmp_path: Path) -> None:
    """Nothing else would check it: an unencrypted manifest is not MAC'd, so an edit that
    drops the hash must not turn the check off."""
    plain = Backups(tmp_path, encrypted=False)
    record = plain.manifests[SECOND].object("data/0000")
    edited = plain.manifests[SECOND].model_copy(update={"objects": (
        record.model_copy(update={"sha256": NOT_HASHED}),)})
    for tags_suffice in (True, False):
        with pytest.raises(CorruptObjectError, match="no SHA-256 for this unencrypted object"):
            plain.read(tags_suffice=tags_suffice, manifest=edited)


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_every_damage_and_forgery_is_refused_by_the_tags_alone(sealed: Backups,
                                                               damage: str) -> None:
    harm, message = DAMAGE[damage]
    harm(sealed)
    for tags_suffice in (True, False):  # the restore's reader and verify's
        with pytest.raises(CorruptObjectError, match=message) as caught:
            sealed.read(tags_suffice=tags_suffice)
        assert f"backup {SECOND}, object 'data/0000'" in str(caught.value)


def test_a_frame_damaged_in_storage_is_named_as_damage_not_forgery(sealed: Backups) -> None:
    """The CRC is left until a tag fails, then tells the two apart."""
    flip_a_byte(sealed)
    with pytest.raises(CorruptObjectError) as caught:
        sealed.read(tags_suffice=True)
    assert "fails its CRC check" in str(caught.value)
    assert "authentication" not in str(caught.value)


def test_a_damaged_crc_field_alone_leaves_the_data_intact(sealed: Backups) -> None:
    """The CRC field is not data: the tags prove every payload byte, so a restore reads the
    object; verify, which checks every CRC too, reports the damaged field."""
    data = bytearray(sealed.path().read_bytes())
    data[len(MAGIC) + 9] ^= 0xFF  # frame 0's stored CRC
    sealed.path().write_bytes(bytes(data))
    assert sealed.read(tags_suffice=True) == PAYLOAD
    with pytest.raises(CorruptObjectError, match="fails its CRC check"):
        sealed.read(tags_suffice=False)


def test_a_missing_or_added_byte_fails_the_size_check(sealed: Backups) -> None:
    record = sealed.manifests[SECOND].object("data/0000")
    wrong = sealed.manifests[SECOND].model_copy(update={"objects": (
        record.model_copy(update={"stored_size": record.stored_size + 1}),)})
    with pytest.raises(CorruptObjectError, match="the manifest says"):
        sealed.read(tags_suffice=True, manifest=wrong)


@pytest.mark.parametrize("damage", ["flip", "forge"])
def test_unencrypted_objects_are_hashed_all_the_same(tmp_path: Path, damage: str) -> None:
    """Without tags, only the SHA-256 binds the frames to the manifest: a frame changed with
    its CRC made to match is refused by the hash even by a reader that trusts tags."""
    plain = Backups(tmp_path, encrypted=False)
    assert plain.read(tags_suffice=True) == PAYLOAD
    DAMAGE[damage][0](plain)
    with pytest.raises(CorruptObjectError, match="CRC" if damage == "flip" else "sha256|zstd"):
        plain.read(tags_suffice=True)


def test_frames_left_unchecked_by_parse_frames_keep_their_crc() -> None:
    frame = frame_bytes(b"payload", 7, True)
    damaged = frame[:-1] + b"P"
    with pytest.raises(ValueError, match="fails its CRC check"):
        list(parse_frames([MAGIC + damaged]))
    (kept,) = parse_frames([MAGIC + damaged], check_crc=False)
    assert kept.crc == zlib.crc32(b"payload") and kept.damaged() is not None
    (whole,) = parse_frames([MAGIC + frame])
    assert whole.damaged() is None
