"""Helpers the database engine tests share: concurrent sink puts."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from safehold.api.manifest import Manifest
from safehold.codecs.compression import parse_codec
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.objects import ObjectReader, ObjectWriter
from safehold.repository.repo import Repository
from safehold.storage.local import LocalStorage


def check_concurrent_puts(tmp_path: Path, payloads: Mapping[str, bytes], *, piece: int,
                          data_key: bytes | None) -> None:
    """The engines call ``BackupSink.put`` from ``--jobs`` threads: the real ObjectWriter must
    store every object whole when all puts start at once, and read each back byte for byte."""
    repo = Repository(LocalStorage(tmp_path / "repo"))
    writer = ObjectWriter(repo, "t", "20260101T000000.000000Z", parse_codec("zstd"), data_key,
                          chunk_size=64 * 1024)
    barrier = threading.Barrier(len(payloads))

    def put(name: str) -> None:
        barrier.wait()
        data = payloads[name]
        writer.put(name, (data[j:j + piece] for j in range(0, len(data), piece)))

    threads = [threading.Thread(target=put, args=(n,)) for n in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.name for r in writer.records) == sorted(payloads)
    now = datetime.now(UTC)
    manifest = Manifest(backup_id=writer.backup_id, target="t", engine="test", type="full",
                        chain_id=writer.backup_id, started_at=now, finished_at=now,
                        compression="zstd:3", chunk_size=64 * 1024,
                        objects=tuple(writer.records))

    class Keys(DataKeys):
        def __init__(self) -> None:
            pass

        def for_backup(self, backup: Manifest) -> bytes | None:
            return writer.data_key

    reader = ObjectReader(repo, Keys())
    for name, data in payloads.items():
        assert b"".join(reader.open(manifest, name)) == data
