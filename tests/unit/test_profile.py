"""Per-stage timings: every stage is counted where it runs, and the bounding one is named.

Slow stages are made slow with sleeps (a lower bound on their time), so which stage bounds a
run is known in advance; no assertion depends on how fast the machine is.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from safehold.api.manifest import Manifest
from safehold.api.result import PipelineFigures, TaskResult
from safehold.codecs.compression import parse_codec
from safehold.codecs.crypto import ChunkCipher
from safehold.pipeline import stream
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.objects import ObjectReader, ObjectWriter
from safehold.pipeline.profile import BACKUP_STAGES, RESTORE_STAGES, WAITING, Profile
from safehold.repository.repo import Repository
from safehold.repository.trust import establish
from safehold.storage.base import open_storage

CHUNK = 64 * 1024
PAUSE = 0.05


def slow(blocks: Iterable[bytes], pause: float = PAUSE) -> Iterator[bytes]:
    for block in blocks:
        time.sleep(pause)
        yield block


class SlowCodec:
    """lz4 with a pause in every compress and decompress."""

    def __init__(self) -> None:
        self.inner = parse_codec("lz4")
        self.spec = self.inner.spec

    def compress(self, data: bytes) -> bytes:
        time.sleep(PAUSE)
        return self.inner.compress(data)

    def decompress(self, data: bytes, raw_len: int) -> bytes:
        time.sleep(PAUSE)
        return self.inner.decompress(data, raw_len)


def data(chunks: int = 4) -> list[bytes]:
    return [bytes([i]) * CHUNK for i in range(chunks)]


def encode_all(blocks: Iterable[bytes], profile: Profile, codec=None, workers: int = 1) -> bytes:
    stats = stream.StreamStats(profile=profile)
    cipher = ChunkCipher(b"k" * 32, "obj")
    return b"".join(stream.encode(blocks, codec or parse_codec("lz4"), cipher, stats,
                                  chunk_size=CHUNK, workers=workers))


def test_every_stage_is_reported_even_when_idle() -> None:
    assert set(Profile("backup").report().seconds) == {*BACKUP_STAGES, WAITING}
    assert set(Profile("restore").report().seconds) == {*RESTORE_STAGES, WAITING}
    assert Profile("backup").report().bottleneck is None
    with pytest.raises(ValueError, match="backup or restore"):
        Profile("verify")


def test_a_slow_database_is_named_and_one_thread_sums_within_the_wall() -> None:
    profile = Profile("backup")
    encode_all(slow(data()), profile)
    report = profile.report()
    assert report.seconds["read"] >= 4 * PAUSE
    assert report.cpu["read"] < report.seconds["read"]  # asleep, not on a CPU
    assert report.bottleneck == "read"
    for stage in ("compress", "encrypt", "hash"):
        assert report.seconds[stage] > 0, stage
    # one thread does everything: the stages are disjoint slices of the wall time
    assert sum(report.seconds.values()) <= report.wall_seconds
    assert report.bottleneck_line().startswith("bottleneck: reading from the database (")
    assert "cores busy" in report.bottleneck_line() or report.cores_busy is None


def test_slow_compression_is_named_and_the_reader_waits_for_the_pool() -> None:
    profile = Profile("backup")
    encode_all(data(6), profile, codec=SlowCodec(), workers=2)
    report = profile.report()
    assert report.seconds["compress"] >= 6 * PAUSE
    assert report.bottleneck == "compress"
    assert report.seconds[WAITING] > 0
    assert report.bottleneck_line().startswith("bottleneck: compression (")


def _repo(tmp_path: Path) -> Repository:
    return Repository(open_storage((tmp_path / "repo").as_uri()))


def test_writer_counts_the_storage_time_apart(tmp_path: Path, monkeypatch) -> None:
    repo = _repo(tmp_path)
    real_put = repo.storage.put

    def slow_put(key: str, chunks: Iterable[bytes]) -> int:
        return real_put(key, slow(chunks))

    monkeypatch.setattr(repo.storage, "put", slow_put)
    writer = ObjectWriter(repo, "t", "20261126T114217.123456Z", parse_codec("lz4"), None,
                          chunk_size=CHUNK, workers=1)
    writer.profile = profile = Profile("backup")
    writer.put("data", data())
    report = profile.report()
    # header + 4 frames, each written after a pause
    assert report.seconds["write"] >= 5 * PAUSE
    assert report.bottleneck == "write"
    assert report.seconds["read"] < report.seconds["write"]
    assert sum(report.seconds.values()) <= report.wall_seconds


def _manifest(repo: Repository, writer: ObjectWriter, backup_id: str,
              engine: str = "postgres") -> Manifest:
    """The manifest of an unencrypted backup of what ``writer`` stored."""
    return Manifest.model_validate({
        "backup_id": backup_id, "target": "t", "repo_id": repo.ensure_repo_id(),
        "engine": engine, "type": "full", "chain_id": backup_id,
        "started_at": "2026-11-26T11:42:17Z", "finished_at": "2026-11-26T11:42:18Z",
        "compression": writer.codec.spec, "encryption": "none", "chunk_size": CHUNK,
        "objects": [r.model_dump() for r in writer.records], "tools": {},
    })


def test_reader_counts_the_databases_time_between_blocks(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    establish(repo, "t", None, None, no_encryption=True)
    backup_id = "20261126T114217.123456Z"
    writer = ObjectWriter(repo, "t", backup_id, parse_codec("lz4"), None, chunk_size=CHUNK,
                          workers=1)
    writer.put("data", data())
    manifest = _manifest(repo, writer, backup_id, engine="sqlite")
    reader = ObjectReader(repo, DataKeys(repo, []), workers=1)
    reader.profile = profile = Profile("restore")
    restored = list(slow(reader.open(manifest, "data")))
    assert b"".join(restored) == b"".join(data())
    report = profile.report()
    assert report.seconds["write"] >= 3 * PAUSE  # the pause after the last block is not seen
    assert report.bottleneck == "write"
    assert report.seconds["hash"] > 0 and report.seconds["decompress"] > 0
    assert sum(report.seconds.values()) <= report.wall_seconds
    assert report.bottleneck_line().startswith("bottleneck: writing to the database (")


def test_the_figures_travel_in_the_result() -> None:
    profile = Profile("backup")
    encode_all(data(), profile)
    figures = PipelineFigures.model_validate(profile.report().as_dict())
    result = TaskResult(kind="backup", phase="Completed", pipeline=figures)
    back = TaskResult.from_termination_message(result.to_termination_message())
    assert back.pipeline is not None
    assert set(back.pipeline.stage_seconds) == {*BACKUP_STAGES, WAITING}
    assert set(back.pipeline.stage_cpu_seconds) == {*BACKUP_STAGES, WAITING}
    assert back.pipeline.bottleneck in BACKUP_STAGES
    assert back.pipeline.summary and back.pipeline.summary.startswith("bottleneck: ")


def test_compression_inside_the_dump_tool_is_named_with_the_read(tmp_path: Path) -> None:
    """pg_dump --compress: the pipeline only waits for the tool, and the line says the tool
    compressed (cores busy compressing are not 'the database is the limit')."""
    repo = _repo(tmp_path)
    writer = ObjectWriter(repo, "t", "20261126T114217.123456Z", parse_codec("zstd:3"), None,
                          chunk_size=CHUNK, workers=1)
    writer.profile = profile = Profile("backup")
    writer.put("plain", data())  # compressed by the pipeline: not the tool's
    assert profile.report().tool_stages == ()
    writer.put("archive", slow(data()), compressed=True)
    report = profile.report()
    assert report.bottleneck == "read" and report.tool_stages == ("compress",)
    assert report.bottleneck_line().startswith(
        "bottleneck: reading from the database, with compression inside the dump tool (")
    figures = PipelineFigures.model_validate(report.as_dict())
    assert figures.tool_stages == ["compress"]


def test_decompression_inside_the_restore_tool_is_named_with_the_write(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    establish(repo, "t", None, None, no_encryption=True)
    backup_id = "20261126T114217.123456Z"
    writer = ObjectWriter(repo, "t", backup_id, parse_codec("zstd:3"), None, chunk_size=CHUNK,
                          workers=1)
    writer.put("plain", data())
    writer.put("archive", data(), compressed=True)
    manifest = _manifest(repo, writer, backup_id)
    reader = ObjectReader(repo, DataKeys(repo, []), workers=1)
    reader.profile = profile = Profile("restore")
    list(reader.open(manifest, "archive", head=True))  # a listing's head: no load yet
    list(slow(reader.open(manifest, "plain")))
    assert profile.report().tool_stages == ()
    list(slow(reader.open(manifest, "archive")))
    report = profile.report()
    assert report.bottleneck == "write" and report.tool_stages == ("decompress",)
    assert report.bottleneck_line().startswith(
        "bottleneck: writing to the database, with decompression inside the restore tool (")


def test_the_tools_cpu_is_told_apart_from_the_runners() -> None:
    profile = Profile("restore")
    burn = "import time\nwhile time.process_time() < 0.3: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    report = profile.report()
    assert report.tool_cpu_seconds >= 0.25  # counted in clock ticks: 0.29 of the child's 0.3
    assert report.cpu_seconds >= report.tool_cpu_seconds
    assert report.as_dict()["tool_cpu_seconds"] == round(report.tool_cpu_seconds, 3)


def test_a_stage_no_tool_does_is_refused() -> None:
    with pytest.raises(ValueError, match="a backup's tool cannot do 'encrypt'"):
        Profile("backup").done_by_tool("encrypt")
    with pytest.raises(ValueError, match="restore's tool cannot do 'compress'"):
        Profile("restore").done_by_tool("compress")
