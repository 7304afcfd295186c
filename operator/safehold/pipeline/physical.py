"""Restoring a physical backup chain into a new data directory (no database connection)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from safehold.api.errors import Unsupported
from safehold.api.manifest import BackupMethod, Manifest, method_of
from safehold.codecs import crypto
from safehold.engines.base import Engine
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.objects import ObjectReader, ProgressHook, ReadTally
from safehold.pipeline.profile import Profile
from safehold.repository.logarchive import SegmentRecord
from safehold.repository.repo import Repository

if TYPE_CHECKING:
    from safehold.pipeline.walarchive import Run  # imports the PostgreSQL driver


def run_data_dir_restore(repo: Repository, backup: Manifest, keks: Sequence[crypto.Kek],
                         data_dir: Path, *, progress: ProgressHook | None = None,
                         profile: Profile | None = None,
                         tally: ReadTally | None = None) -> list[Manifest]:
    """Restore ``backup`` and its chain into the new data directory ``data_dir``; the chain.
    ``tally`` counts the sizes of what it read."""
    from safehold.engines.postgres.physical_restore import (  # only PostgreSQL has them
        chain_problems,
        check_destination,
        restore_data_dir,
    )
    from safehold.engines.recovery import BrokenChain

    if backup.engine != "postgresql" or method_of(backup) != "physical":
        raise Unsupported(
            f"backup {backup.backup_id} is a {method_of(backup)} {backup.engine} backup:"
            " --data-dir restores physical PostgreSQL backups; restore it into a database"
            " with --target instead", hint="leave out --data-dir and give --target")
    check_destination(data_dir)
    chain = repo.chain(backup)
    problems = chain_problems(chain)
    if problems:  # found from manifests, before any key is unwrapped or byte read
        raise BrokenChain("cannot restore this chain: " + "; ".join(problems))
    keys = DataKeys(repo, keks)
    for manifest in chain:  # unwrap keys and check MACs before touching anything
        keys.for_backup(manifest)
    reader = ObjectReader(repo, keys, tags_suffice=True)
    reader.on_bytes = progress
    reader.profile, reader.tally = profile, tally
    restore_data_dir(chain, reader, data_dir)
    return chain


def method_problems(engine: Engine, method: BackupMethod) -> list[str]:
    """What keeps ``engine``'s target from taking ``method`` backups (logical: nothing more
    than its own check)."""
    if method == "logical":
        return []
    check = getattr(engine, "check_physical", None)
    if check is None or not engine.capabilities.physical_types:
        return [f"the {engine.name} engine has no physical backups: use method logical"]
    problems: list[str] = check()
    return problems


def bundle_wal(repo: Repository, source: str, keks: Sequence[crypto.Kek], base: Manifest,
               data_dir: Path, segments: Sequence[SegmentRecord], *,
               to_lsn: str | None = None) -> tuple[list[str], int]:
    """The archived WAL from ``base``'s end into the data directory (walarchive.bundle):
    the segment names and their bytes. ``segments``: the archive as :func:`archived_wal` read
    it for this restore's checks."""
    from safehold.pipeline import walarchive
    from safehold.pipeline.logarchive import LogArchive

    timeline, lsn = wal_start(base)
    return walarchive.bundle(LogArchive(repo, source, keks, tags_suffice=True), timeline, lsn,
                             data_dir, through_lsn=to_lsn, segments=segments)


def wal_start(base: Manifest) -> tuple[int, str]:
    """(timeline, LSN) from which a recovery of ``base`` needs archived WAL: its end (the WAL
    from its start to there is in the backup)."""
    for position in (base.end_position or {}, base.start_position or {}):
        if "lsn" in position and str(position.get("timeline", "")).isdigit():
            return int(position["timeline"]), str(position["lsn"])
    raise Unsupported(f"backup {base.backup_id} records no WAL position and timeline: the WAL"
                      " its recovery replays cannot be found")


def archived_wal(repo: Repository, source: str) -> list[SegmentRecord]:
    """The source's readable log segment records, read once per restore: the checks below and
    the bundle look at this one listing (each record is one storage read)."""
    from safehold.repository.logarchive import readable_segments

    return readable_segments(repo, source)[0]


STREAMING = "is `safehold wal stream` running? It archives a segment once it is full"


def archive_reaches(backups: Sequence[Manifest], base: Manifest,
                    segments: Sequence[SegmentRecord], *, to_time: datetime | None = None,
                    to_lsn: str | None = None, what: str = "the target") -> None:
    """A target the WAL archive (``segments``) cannot bring ``base`` (one of the source's
    ``backups``, as the plan listed them) to fails now
    (OutsideWindow; ``what`` names the target as the user gave it), instead of when the
    restored server starts ("recovery ended before configured recovery target was reached"):
    past the archive's end, naming the window, or past a gap after ``base``, naming the missing
    segment. Archives without times (older streamers) are not checked against a time."""
    from safehold.engines.postgres.walstream import format_lsn, parse_lsn
    from safehold.engines.recovery import OutsideWindow
    from safehold.pipeline.pitr import segment_end, window
    from safehold.pipeline.walarchive import KIND, contiguous_from

    source = base.target
    timeline, lsn = wal_start(base)
    run = contiguous_from(segments, timeline, lsn)
    if to_time is not None:
        win = window(backups, segments)
        if win.end is not None and to_time > win.end:
            raise OutsideWindow(
                f"{what} {to_time.isoformat()} is after the end of the recoverable window of"
                f" {source} ({win.describe()}): the WAL archive holds the commits up to"
                f" {win.end.isoformat()}; {STREAMING}")
        times = [t for r in run.segments if (t := segment_end(r)) is not None]
        if not run.segments or (times and to_time > max(times)):
            raise OutsideWindow(
                f"{what} {to_time.isoformat()} cannot be reached from backup"
                f" {base.backup_id}: {_run_end(run, segments, timeline)}"
                + (f" (the WAL up to there holds the commits up to {max(times).isoformat()})"
                   if times else ""))
    elif to_lsn is not None:
        ends = [parse_lsn(s.end["lsn"]) for s in segments if s.kind == KIND and "lsn" in s.end]
        if ends and parse_lsn(to_lsn) > max(ends):
            raise OutsideWindow(
                f"{what} {to_lsn} is past the end of the WAL archive of {source}"
                f" ({format_lsn(max(ends))}); {STREAMING}")
        if run.end_lsn is None or parse_lsn(to_lsn) > parse_lsn(run.end_lsn):
            raise OutsideWindow(f"{what} {to_lsn} cannot be reached from backup"
                                f" {base.backup_id}: {_run_end(run, segments, timeline)}")


def _run_end(run: Run, segments: Sequence[SegmentRecord], timeline: int) -> str:
    """Why a base backup's WAL stops where it does: a gap, the archive's end, or the server
    having moved on to a later timeline (a failover or a promotion)."""
    from safehold.pipeline.walarchive import KIND, stream_of

    later = sorted({r.stream for r in segments if r.kind == KIND and r.stream.isalnum()
                    and r.stream > stream_of(timeline)})
    if run.missing is None and later:
        return (f"its timeline {timeline} ends at segment"
                f" {run.segments[-1].name if run.segments else run.first} and the archive"
                f" continues on timeline {int(later[0], 16)} (the server failed over or was"
                " promoted): recovery across timelines needs a backup taken on the new one")
    return run.describe_end()


@contextmanager
def new_data_dir(data_dir: Path) -> Iterator[Path]:
    """The restore into ``data_dir`` as one step: when anything inside fails (the WAL bundle,
    the recovery settings) after the chain was already moved into place, what was written is
    removed again, so no data directory is left that would start without its recovery (at the
    base backup's end, silently) and a retry finds it empty. A directory that was not empty
    to begin with (refused by the restore) is never touched."""
    existed = data_dir.is_dir()
    if existed and any(data_dir.iterdir()):  # not ours to clean up: the restore refuses it
        yield data_dir
        return
    try:
        yield data_dir
    except BaseException:
        if data_dir.is_dir() and any(data_dir.iterdir()):
            shutil.rmtree(data_dir, ignore_errors=True)
            if existed:
                data_dir.mkdir(mode=0o700, exist_ok=True)
        raise


def check_wal_cluster(base: Manifest, segments: Sequence[SegmentRecord], source: str) -> None:
    """The archived WAL (``segments``) after ``base``'s start is ``base``'s cluster's
    (ForeignCluster naming both otherwise): found before anything is written, not when the
    restored server stops on "WAL file is from different database system". Segments of older
    streamers carry no system identifier and are not checked."""
    from safehold.engines.postgres.walstream import parse_lsn
    from safehold.pipeline.walarchive import KIND, SYSTEM_IDENTIFIER, ForeignCluster

    wanted = str(base.engine_meta.get("system_identifier") or "")
    start = (base.start_position or {}).get("lsn")
    if not wanted or not start:
        return
    for record in segments:
        system = record.meta.get(SYSTEM_IDENTIFIER)
        if (record.kind == KIND and system is not None and str(system) != wanted
                and "lsn" in record.end and parse_lsn(record.end["lsn"]) > parse_lsn(start)):
            raise ForeignCluster(
                f"the WAL archive of {source} holds segment {record.name} of cluster {system},"
                f" but backup {base.backup_id} is of cluster {wanted}: the archive mixes two"
                " clusters (a target re-pointed at another server); recovery cannot replay"
                " it. Restore a backup of that other cluster, or to a time before it took over")
