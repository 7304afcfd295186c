"""Objects an engine's tool compressed itself (a pg_dump archive compressed by pg_dump): stored
encrypted but not compressed again, their codec recorded per object, bound by the MAC, and
manifests without such objects written and MAC'd byte for byte as before the field existed."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from safehold.api.manifest import Manifest, ObjectRecord
from safehold.codecs import crypto
from safehold.codecs.compression import parse_codec
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.objects import CorruptObjectError, ObjectReader, ObjectWriter, ReadTally
from safehold.repository.repo import Repository
from safehold.repository.trust import establish
from safehold.storage.base import open_storage

BACKUP_ID = "20261205T120000.000000Z"
# compressible, so that compressing it again would show in the stored size
PAYLOAD = b"".join(b"row %08d of a table pg_dump compressed\n" % i for i in range(40_000))


def _manifest(objects: tuple[ObjectRecord, ...], **kw: Any) -> Manifest:
    now = datetime(2026, 12, 5, tzinfo=UTC)
    return Manifest(backup_id=BACKUP_ID, target="t", engine="postgresql", type="full",
                    chain_id=BACKUP_ID, started_at=now, finished_at=now, compression="zstd:3",
                    chunk_size=64 << 10, objects=objects, **kw)


def _record(name: str, compression: str | None = None) -> ObjectRecord:
    return ObjectRecord(name=name, raw_size=10, stored_size=20, sha256="ab" * 32, chunks=1,
                        compression=compression)


def test_unset_object_codecs_leave_the_manifest_as_it_was_written_before() -> None:
    plain = _manifest((_record("a"), _record("b")))
    written = json.loads(plain.to_json())
    assert all("compression" not in o for o in written["objects"])
    signed = json.loads(plain.signing_bytes())
    assert all("compression" not in o for o in signed["objects"])
    # a manifest written before the field: read and written again byte for byte, same MAC bytes
    assert Manifest.from_json(plain.to_json()).to_json() == plain.to_json()
    mixed = _manifest((_record("a"), _record("b", "none")))
    objects = json.loads(mixed.to_json())["objects"]
    assert ["compression" in o for o in objects] == [False, True]
    assert Manifest.from_json(mixed.to_json()) == mixed


def test_no_ratio_is_claimed_when_the_dump_tool_compressed() -> None:
    """Such an object's raw size is pg_dump's compressed output: raw / stored would say 1.0."""
    plain = _manifest((_record("a"),))
    assert plain.compression_ratio == 0.5 and plain.ratio_text() == "ratio 0.50"
    dumped = _manifest((_record("a"), _record("b", "none")))
    assert dumped.tool_compressed and dumped.compression_ratio is None
    assert dumped.ratio_text() == "compressed by the dump tool"
    tally = ReadTally()
    tally.add(_record("a"))
    assert tally.as_dict(1.0)["compression_ratio"] == 0.5
    tally.add(_record("b", "none"))
    assert tally.as_dict(1.0)["compression_ratio"] is None


def test_the_mac_binds_each_objects_codec() -> None:
    key = os.urandom(32)
    signed = _manifest((_record("a", "none"),))
    mac = crypto.manifest_mac(key, signed.signing_bytes())
    for forged in (_manifest((_record("a"),)), _manifest((_record("a", "zstd:3"),))):
        assert crypto.manifest_mac(key, forged.signing_bytes()) != mac


def _written(tmp_path: Path, *, encrypted: bool) -> tuple[Repository, ObjectWriter]:
    repo = Repository(open_storage((tmp_path / "repo").as_uri()))
    establish(repo, "t", None, None, no_encryption=True)
    writer = ObjectWriter(repo, "t", BACKUP_ID, parse_codec("zstd:3"),
                          os.urandom(32) if encrypted else None, chunk_size=64 << 10, workers=2)
    blocks = [PAYLOAD[i:i + 50_000] for i in range(0, len(PAYLOAD), 50_000)]
    writer.put("plain", blocks)
    writer.put("archive", blocks, meta={"compression": "zstd:3"}, compressed=True)
    return repo, writer


class _Keys(DataKeys):
    def __init__(self, key: bytes | None) -> None:
        self.key = key

    def for_backup(self, manifest: Manifest) -> bytes | None:
        return self.key


def test_compressed_objects_are_encrypted_but_not_compressed_again(tmp_path: Path) -> None:
    repo, writer = _written(tmp_path, encrypted=True)
    plain, archive = writer.records
    assert (plain.compression, archive.compression) == (None, "none")
    assert plain.stored_size < len(PAYLOAD) // 5  # the pipeline compressed this one...
    assert archive.stored_size > len(PAYLOAD)  # ...and only framed and sealed that one
    manifest = _manifest(tuple(writer.records), encryption="aes-256-gcm")
    reader = ObjectReader(repo, _Keys(writer.data_key), workers=2)
    for name in ("plain", "archive"):
        assert b"".join(reader.open(manifest, name)) == PAYLOAD
    # the stored bytes are sealed: the payload is nowhere in them
    stored = (tmp_path / "repo" / "t" / BACKUP_ID / "data" / "archive").read_bytes()
    assert PAYLOAD[:4096] not in stored


def test_a_forged_codec_names_the_object_not_a_usage_error(tmp_path: Path) -> None:
    """Unencrypted backups are guarded by nothing but storage permissions: an edited codec
    must still fail as damage to the object, never decode with the wrong codec."""
    repo, writer = _written(tmp_path, encrypted=False)
    reader = ObjectReader(repo, _Keys(None), workers=2)
    plain, archive = writer.records
    for record, codec, problem in (
            (archive, "rot13", "unknown compression codec 'rot13'"),
            (archive, None, "zstd"),  # the backup's codec over frames it never wrote
            (plain, "none", "none chunk decodes to")):  # zstd frames passed off as raw bytes
        forged = _manifest((record.model_copy(update={"compression": codec}),))
        with pytest.raises(CorruptObjectError, match=problem) as caught:
            b"".join(reader.open(forged, record.name))
        assert record.name in str(caught.value)
