"""`safehold wal fetch` against a real local repository: WAL segments stored by the streamer's
sink come back byte for byte; a file the archive does not hold, a wrong key and a tampered
segment each end with their exit code and leave nothing at the destination. The default
restore_command of a point-in-time restore quotes what the server's shell must not split."""

from __future__ import annotations

import logging
import os
import shlex
import sqlite3
from pathlib import Path

import click
import pytest

from safehold.api.errors import UsageError
from safehold.api.manifest import Manifest
from safehold.cli.config import Config, RepositoryConfig
from safehold.cli.errors import Exit
from safehold.cli.physical_cmds import fetch_command
from safehold.codecs import crypto
from safehold.engines.postgres.walstream import Segment, segment_name
from safehold.pipeline.logarchive import LogArchive
from safehold.pipeline.walarchive import ArchiveSink, next_name, previous_name
from safehold.repository.logarchive import SegmentConflict
from safehold.repository.repo import Repository
from safehold.storage.local import LocalStorage
from tests.integration.cli_helpers import run

SEG = 1 << 20  # small segments: the archive does not care about the size


def segment(n: int, fill: bytes = b"") -> Segment:
    data = (fill or bytes([n % 256])) * SEG
    return Segment(1, segment_name(1, n * SEG, SEG), n * SEG, (n + 1) * SEG, data[:SEG])


@pytest.fixture
def archived(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A repository with segments 3, 4, 5 of target `db` (encrypted), and the CLI's env."""
    key = tmp_path / "kek"
    run("keys", "generate", "--out", str(key), env={"SAFEHOLD_CONFIG": str(tmp_path / "n.yaml")})
    kek = crypto.load_key_file(key)
    repo = Repository(LocalStorage(tmp_path / "repo"))
    repo.initialize()
    sink = ArchiveSink(LogArchive(repo, "db", kek=kek))
    for n in (3, 4, 5):
        sink.put(segment(n))
    (tmp_path / "safehold.yaml").write_text("{}\n")
    env = {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": str(key),
           "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": ""}
    return tmp_path, env


def fetch(tmp: Path, env: dict[str, str], name: str, dest: Path, ok: bool = True) -> int:
    return run("wal", "fetch", "-r", f"file://{tmp / 'repo'}", "--name", "db", name, str(dest),
               env=env, ok=ok).exit_code


def test_fetch_returns_the_segment_byte_for_byte(archived: tuple[Path, dict[str, str]]
                                                 ) -> None:
    tmp, env = archived
    dest = tmp / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    dest.write_bytes(b"an older file: replaced")
    fetch(tmp, env, segment(4).name, dest)
    assert dest.read_bytes() == segment(4).data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["RECOVERYXLOG"]  # no temp left


@pytest.mark.parametrize("name", ["000000010000000000000009", "00000002.history",
                                  "000000020000000000000004", "000000010000000000000004.partial"])
def test_a_file_the_archive_does_not_hold_is_exit_3_and_no_file(
        archived: tuple[Path, dict[str, str]], name: str) -> None:
    tmp, env = archived
    res = run("wal", "fetch", "-r", f"file://{tmp / 'repo'}", "--name", "db", name,
              str(tmp / "out"), env=env, ok=False)
    assert res.exit_code == Exit.NOT_FOUND, res.output
    assert name in res.output and not (tmp / "out").exists()


def test_bad_names_keys_and_tampering_are_loud(archived: tuple[Path, dict[str, str]]) -> None:
    tmp, env = archived
    out = tmp / "out"
    assert fetch(tmp, env, "../../etc/passwd", out, ok=False) == Exit.USAGE
    res = run("wal", "fetch", "-r", f"file://{tmp / 'repo'}", "--name", "../db",
              segment(4).name, str(out), env=env, ok=False)
    assert res.exit_code == Exit.USAGE and "invalid target name" in res.output, res.output
    other = tmp / "other"
    run("keys", "generate", "--out", str(other), env=env)
    assert fetch(tmp, {**env, "SAFEHOLD_KEY_FILE": str(other)}, segment(4).name, out,
                 ok=False) == Exit.KEY
    assert fetch(tmp, {**env, "SAFEHOLD_KEY_FILE": ""}, segment(4).name, out,
                 ok=False) == Exit.KEY
    data = next((tmp / "repo").rglob(f"{segment(4).name}/data"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 1
    data.write_bytes(bytes(raw))
    assert fetch(tmp, env, segment(4).name, out, ok=False) == Exit.CORRUPT
    record = next((tmp / "repo").rglob(f"{segment(5).name}/segment.json"))
    record.write_text(record.read_text().replace('"lsn": "0/600000"', '"lsn": "0/600001"'))
    assert fetch(tmp, env, segment(5).name, out, ok=False) == Exit.CORRUPT
    assert not out.exists() and os.listdir(tmp).count("out") == 0
    assert not [p for p in tmp.iterdir() if p.name.startswith(".out.")]


def test_a_restart_repeats_a_segment_harmlessly_and_other_bytes_conflict(
        archived: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture) -> None:
    tmp, env = archived
    repo = Repository(LocalStorage(tmp / "repo"))
    kek = crypto.load_key_file(Path(env["SAFEHOLD_KEY_FILE"]))
    sink = ArchiveSink(LogArchive(repo, "db", kek=kek))
    sink.put(segment(5))  # killed after storing, before confirming: sent again
    sink.put(segment(6))
    with pytest.raises(SegmentConflict):
        sink.put(segment(6, fill=b"x"))
    assert run("wal", "fetch", "-r", f"file://{tmp / 'repo'}", "--name", "db", segment(6).name,
               str(tmp / "six"), env=env).exit_code == 0
    assert (tmp / "six").read_bytes() == segment(6).data
    # a slot that starts after a hole: reported as a gap
    logger = logging.getLogger("safehold.wal")
    logger.addHandler(caplog.handler)  # the CLI's logging setup stops propagation
    try:
        ArchiveSink(LogArchive(repo, "db", kek=kek)).put(segment(9))
    finally:
        logger.removeHandler(caplog.handler)
    assert "GAP in the WAL archive" in caplog.text and segment(6).name in caplog.text


def test_previous_and_next_segment_names() -> None:
    assert previous_name("000000010000000200000000", 16 << 20) == "0000000100000001000000FF"
    assert previous_name("000000010000000000000007", 16 << 20) == "000000010000000000000006"
    assert previous_name("000000010000000000000000", 16 << 20) is None
    assert next_name("0000000100000001000000FF", 16 << 20) == "000000010000000200000000"
    assert next_name("000000020000000000000006", 16 << 20) == "000000020000000000000007"
    assert next_name("000000010000000000000FFF", 1 << 20) == "000000010000000100000000"


def test_the_default_restore_command_quotes_paths_and_percent_signs(tmp_path: Path) -> None:
    key = tmp_path / "my key%.b64"
    config = Config(repositories={"prod": RepositoryConfig(url="file:///srv/back ups/50%")})
    ctx = click.Context(click.Command("restore"), obj={"config": config})
    command = fetch_command(ctx, "prod", "db", (key,), encrypted=True)
    assert command.endswith(" %f %p")
    argv = shlex.split(command[: -len(" %f %p")].replace("%%", "%"))
    assert argv[argv.index("-r") + 1] == "file:///srv/back ups/50%"
    assert argv[argv.index("--name") + 1] == "db"
    assert f"--key-file={key}" in argv and argv[argv.index("wal") + 1] == "fetch"
    assert "%" not in command.replace("%%", "").replace(" %f %p", "")


def test_the_default_restore_command_needs_the_key_as_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEHOLD_KEY_FILE", raising=False)
    ctx = click.Context(click.Command("restore"), obj={"config": Config()})
    with pytest.raises(UsageError, match="did not come from a file"):
        fetch_command(ctx, f"file://{tmp_path}", "db", (), encrypted=True)
    plain = fetch_command(ctx, f"file://{tmp_path}", "db", (), encrypted=False)
    assert "--key-file" not in plain and plain.endswith(" %f %p")


def test_wal_stream_refuses_a_target_that_is_not_postgresql(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    sqlite3.connect(db).close()
    (tmp_path / "safehold.yaml").write_text("{}\n")
    res = run("wal", "stream", "-t", f"sqlite:///{db}", "-r", f"file://{tmp_path / 'repo'}",
              ok=False, env={"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml")})
    assert res.exit_code == Exit.USAGE and "archives PostgreSQL WAL" in res.output, res.output
    assert not (tmp_path / "repo").exists()


def _of(seg: Segment, system: str) -> Segment:
    import dataclasses

    return dataclasses.replace(seg, system_identifier=system)


def test_one_archive_holds_one_clusters_wal(tmp_path: Path) -> None:
    """Segments record their cluster; a streamer of another cluster (a re-pointed target,
    whose segment names start over) is refused before it stores anything, and a restore of a
    backup of one cluster refuses an archive holding another's WAL after its start."""
    from datetime import UTC, datetime

    from safehold.pipeline.physical import check_wal_cluster
    from safehold.pipeline.walarchive import ForeignCluster
    from safehold.repository.logarchive import readable_segments

    repo = Repository(LocalStorage(tmp_path / "repo"))
    repo.initialize()
    ArchiveSink(LogArchive(repo, "db", no_encryption=True)).put(_of(segment(3), "7001"))
    (record,) = readable_segments(repo, "db")[0]
    assert record.meta["system_identifier"] == "7001"
    with pytest.raises(ForeignCluster, match="holds the WAL of cluster 7001; this server is"
                                             " cluster 7002"):
        ArchiveSink(LogArchive(repo, "db", no_encryption=True)).put(_of(segment(4), "7002"))
    assert [r.name for r in readable_segments(repo, "db")[0]] == [segment(3).name]
    ArchiveSink(LogArchive(repo, "db", no_encryption=True)).put(_of(segment(4), "7001"))

    def base(system: str) -> Manifest:
        now = datetime.now(UTC)
        return Manifest.model_validate({
            "backup_id": "20261203T000000.000001Z", "target": "db", "engine": "postgresql",
            "type": "full", "started_at": now, "finished_at": now,
            "chain_id": "20261203T000000.000001Z", "compression": "zstd:3",
            "chunk_size": 1 << 20, "start_position": {"lsn": f"0/{3 * SEG:X}", "timeline": "1"},
            "engine_meta": {"system_identifier": system}})

    archived = readable_segments(repo, "db")[0]
    check_wal_cluster(base("7001"), archived, "db")  # its own cluster's WAL: fine
    with pytest.raises(ForeignCluster, match=f"segment {segment(3).name} of cluster 7001, but"
                                             " backup 20261203T000000.000001Z is of cluster"
                                             " 7002"):
        check_wal_cluster(base("7002"), archived, "db")


def _timed(seg: Segment, minute: int) -> Segment:
    import dataclasses
    from datetime import UTC, datetime

    return dataclasses.replace(seg, covered_until=datetime(2026, 12, 3, 10, minute, tzinfo=UTC))


def _base(end_segment: int) -> Manifest:
    from datetime import UTC, datetime

    at = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    return Manifest.model_validate({
        "backup_id": "20261203T100000.000001Z", "target": "db", "engine": "postgresql",
        "type": "full", "started_at": at, "finished_at": at,
        "chain_id": "20261203T100000.000001Z", "compression": "zstd:3", "chunk_size": 1 << 20,
        "start_position": {"lsn": f"0/{(end_segment - 1) * SEG:X}", "timeline": "1"},
        "end_position": {"lsn": f"0/{end_segment * SEG + 40:X}", "timeline": "1",
                         "time": at.isoformat()}})


@pytest.fixture
def gapped(tmp_path: Path) -> Repository:
    """Segments 3, 4, 5 (commits to 10:05), then 8, 9 (to 10:09): 6 and 7 were lost."""
    repo = Repository(LocalStorage(tmp_path / "repo"))
    repo.initialize()
    sink = ArchiveSink(LogArchive(repo, "db", no_encryption=True))
    for n in (3, 4, 5, 8, 9):
        sink.put(_timed(segment(n), n))
    return repo


def test_a_run_of_segments_ends_at_a_gap(gapped: Repository) -> None:
    from safehold.pipeline.walarchive import contiguous_from
    from safehold.repository.logarchive import readable_segments

    records = readable_segments(gapped, "db")[0]
    run = contiguous_from(records, 1, f"0/{3 * SEG + 5:X}")
    assert ([r.name for r in run.segments], run.missing) == (
        [segment(n).name for n in (3, 4, 5)], segment(6).name)
    assert "segment 000000010000000000000006 after 000000010000000000000005 is missing" \
        in run.describe_end()
    after = contiguous_from(records, 1, f"0/{8 * SEG:X}")  # a base backup after the gap
    assert ([r.name for r in after.segments], after.missing) == (
        [segment(n).name for n in (8, 9)], None)
    upto = contiguous_from(records, 1, f"0/{3 * SEG:X}", through_lsn=f"0/{3 * SEG + 9:X}")
    assert [r.name for r in upto.segments] == [segment(n).name for n in (3, 4)]
    late = contiguous_from(records, 1, f"0/{2 * SEG:X}")  # the archive starts after it
    assert (late.segments, late.missing) == ([], segment(2).name)
    assert "later segments are there" in late.describe_end()
    assert contiguous_from(records, 2, f"0/{3 * SEG:X}").segments == []  # another timeline


def test_a_target_past_a_gap_is_refused_before_anything_is_written(gapped: Repository) -> None:
    """A target after the gap is refused for a base before it, naming the missing segment and
    how far that base's WAL goes (the server would fail on start), and fine for a base after
    it."""
    from datetime import UTC, datetime

    from safehold.engines.recovery import OutsideWindow
    from safehold.pipeline.physical import archive_reaches
    from safehold.repository.logarchive import readable_segments

    records = readable_segments(gapped, "db")[0]
    backups = gapped.scan("db")[0]
    base = _base(3)
    at = datetime(2026, 12, 3, 10, 4, tzinfo=UTC)
    archive_reaches(backups, base, records, to_time=at)  # before the gap: fine
    archive_reaches(backups, base, records, to_lsn=f"0/{5 * SEG + 7:X}")
    with pytest.raises(OutsideWindow, match=r"10:07:00\+00:00 cannot be reached from backup"
                                            r" 20261203T100000.000001Z: .* segment"
                                            r" 000000010000000000000006 after .*missing.*"
                                            r" holds the commits up to 2026-12-03T10:05"):
        archive_reaches(backups, base, records, to_time=at.replace(minute=7))
    with pytest.raises(OutsideWindow, match="0/80000A cannot be reached from backup"):
        archive_reaches(backups, base, records, to_lsn=f"0/{8 * SEG + 10:X}")
    archive_reaches(backups, _base(8), records, to_time=at.replace(minute=9))  # after the gap
    with pytest.raises(OutsideWindow, match="does not hold segment 000000010000000000000002"):
        archive_reaches(backups, _base(2), records, to_time=at)


def test_a_target_after_a_failover_is_refused_naming_the_new_timeline(tmp_path: Path) -> None:
    """The server failed over: the archive's timeline 1 ends at segment 5, timeline 2 goes on.
    The window reaches 10:08, but a timeline-1 base cannot: refused, naming both timelines."""
    import dataclasses
    from datetime import UTC, datetime

    from safehold.engines.recovery import OutsideWindow
    from safehold.pipeline.physical import archive_reaches
    from safehold.repository.logarchive import readable_segments

    repo = Repository(LocalStorage(tmp_path / "repo"))
    repo.initialize()
    sink = ArchiveSink(LogArchive(repo, "db", no_encryption=True))
    for n in (3, 4, 5):
        sink.put(_timed(segment(n), n))
    for n in (7, 8):
        two = dataclasses.replace(segment(n), timeline=2, name=segment_name(2, n * SEG, SEG))
        sink.put(_timed(two, n))
    records = readable_segments(repo, "db")[0]
    at = datetime(2026, 12, 3, 10, 5, tzinfo=UTC)
    archive_reaches(repo.scan("db")[0], _base(3), records, to_time=at)
    with pytest.raises(OutsideWindow, match=r"its timeline 1 ends at segment"
                                            r" 000000010000000000000005 and the archive"
                                            r" continues on timeline 2 .*failed over"):
        archive_reaches(repo.scan("db")[0], _base(3), records, to_time=at.replace(minute=8))
    with pytest.raises(OutsideWindow, match="continues on timeline 2"):
        archive_reaches(repo.scan("db")[0], _base(3), records, to_lsn=f"0/{7 * SEG + 10:X}")
