"""PostgreSQL WAL segments in the repository's log archive (kind ``wal``, stream = timeline).

:class:`ArchiveSink` is the WAL streamer's sink (:mod:`safehold.engines.postgres.walstream`):
``put`` returns once the segment is durable in the repository (framed, compressed, encrypted
and MAC'd like every log segment), and only then does the streamer confirm it to the slot.
:func:`fetch` is ``restore_command``'s side: one segment by its WAL file name, checked end to
end before it appears at its destination.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from safehold import fsutil
from safehold.api.errors import UsageError
from safehold.engines.postgres.walstream import Segment, format_lsn
from safehold.pipeline.logarchive import LogArchive
from safehold.pipeline.streamer_status import StatusBoard
from safehold.repository.logarchive import (
    SegmentId,
    SegmentNotFound,
    SegmentRecord,
    segment_ids,
)

log = logging.getLogger("safehold.wal")

KIND = "wal"
COVERED_UNTIL = "covered_until"  # meta: every commit before it is in this segment or earlier
SYSTEM_IDENTIFIER = "system_identifier"  # meta: the cluster whose WAL it is
SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}$")
# what else a server asks its restore_command for: timeline history files, and (never by
# Safehold) partial segments and backup history files
OTHER_WAL_FILE = re.compile(
    r"^[0-9A-F]{8}\.history$|^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)$")


class ForeignCluster(UsageError):
    """WAL of one PostgreSQL cluster meeting a backup or an archive of another."""


def stream_of(timeline: int) -> str:
    """A WAL stream is one timeline: ``00000001``."""
    return f"{timeline:08X}"


def next_name(name: str, seg_size: int) -> str:
    """The name of the segment after ``name`` on the same timeline."""
    per_id = 0x100000000 // seg_size
    log_id, seg = int(name[8:16], 16), int(name[16:], 16) + 1
    if seg == per_id:
        log_id, seg = log_id + 1, 0
    return f"{name[:8]}{log_id:08X}{seg:08X}"


def previous_name(name: str, seg_size: int) -> str | None:
    """The name of the segment before ``name`` on the same timeline (None for the first)."""
    per_id = 0x100000000 // seg_size
    log_id, seg = int(name[8:16], 16), int(name[16:], 16)
    if seg == 0:
        if log_id == 0:
            return None
        log_id, seg = log_id - 1, per_id - 1
    else:
        seg -= 1
    return f"{name[:8]}{log_id:08X}{seg:08X}"


class ArchiveSink:
    """Stores each complete WAL segment of one target in its log archive."""

    def __init__(self, archive: LogArchive, tools: dict[str, str] | None = None,
                 board: StatusBoard | None = None) -> None:
        self.archive, self.tools, self.board = archive, tools or {}, board
        self._first = True

    def put(self, segment: Segment) -> None:
        seg = SegmentId(self.archive.target, KIND, stream_of(segment.timeline), segment.name)
        if self._first:
            self._check_cluster(seg, segment.system_identifier)
            self._check_continuity(seg, len(segment.data))
            self._first = False
        position = {"timeline": str(segment.timeline)}
        meta: dict[str, object] = {"wal_segment_size": len(segment.data)}
        if segment.covered_until is not None:
            meta[COVERED_UNTIL] = segment.covered_until.isoformat()
        if segment.system_identifier is not None:
            meta[SYSTEM_IDENTIFIER] = segment.system_identifier
        # last_time (the server's clock at the segment's last byte) bounds every record in it
        # from above, which is what retention needs; the window's end is covered_until
        end = {**position, "lsn": format_lsn(segment.end_lsn)}
        self.archive.put(seg, [segment.data],
                         start={**position, "lsn": format_lsn(segment.start_lsn)}, end=end,
                         last_time=segment.last_sent, meta=meta, tools=self.tools)
        if self.board is not None:  # the lag in time: how old the newest covered commit is
            self.board.archived(segment.name, end, segment.covered_until)
            self.board.refresh_window()

    def _check_cluster(self, seg: SegmentId, system: str | None) -> None:
        """The archive's WAL is one cluster's: a target pointed at another server (a new
        cluster restarts the same segment names) is refused before anything is stored."""
        from safehold.repository.logarchive import read_record

        repo = self.archive.repo
        newest = segment_ids(repo, seg.target, KIND, seg.stream)[0]
        if system is None or not newest:
            return
        known = read_record(repo, max(newest, key=lambda s: s.name)).meta.get(SYSTEM_IDENTIFIER)
        if known is not None and str(known) != system:
            raise ForeignCluster(
                f"the WAL archive of {seg.target} holds the WAL of cluster {known}; this server"
                f" is cluster {system} (another initdb, or a restored copy): its WAL cannot"
                " continue that archive. Give this server's target another name (or"
                " repository), then take a physical full backup of it",
                hint="a new target name for the new cluster")

    def _check_continuity(self, seg: SegmentId, seg_size: int) -> None:
        """The first segment of a run follows the archive's newest one (or repeats one): a
        slot created anew (dropped, lost) starts later, and the archive then has a gap."""
        before = previous_name(seg.name, seg_size)
        if before is None:
            return
        repo = self.archive.repo
        if repo.storage.exists(SegmentId(seg.target, KIND, seg.stream, before).record_key):
            return
        older = [s.name for s in segment_ids(repo, seg.target, KIND, seg.stream)[0]
                 if s.name < seg.name]
        if older:
            log.error("GAP in the WAL archive of %s: the newest archived segment is %s, the"
                      " replication slot starts at %s (was the slot dropped or lost?);"
                      " point-in-time restores cannot cross it: take a full backup now",
                      seg.target, older[-1], seg.name)


def fetch(archive: LogArchive, name: str, dest: Path) -> int:
    """Write archived WAL file ``name`` to ``dest`` (a temporary file renamed into place once
    every byte passed its checks: nothing appears on any failure); its size.

    SegmentNotFound when the archive does not hold it: for PostgreSQL the end of the archive.
    """
    if not SEGMENT_NAME.match(name):
        if OTHER_WAL_FILE.match(name):
            raise SegmentNotFound(
                f"{name} is not in the log archive of {archive.target}: it holds WAL segments"
                " only (timeline history, partial and backup history files are not archived)")
        raise UsageError(f"{name!r} is not a WAL file name: PostgreSQL passes one as %f, e.g."
                         " 000000010000000000000003")
    record = archive.get(SegmentId(archive.target, KIND, name[:8], name))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".safehold",
                                   dir=dest.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {dest}: {exc.strerror} ({dest.parent})") from None
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            for block in archive.open(record):
                fsutil.write_sliced(out, block)
                size += len(block)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


BUNDLE_DIR = "safehold_wal"  # inside the data directory: what a bundled recovery replays
# the server runs these in its data directory; the bundle is removed once recovery ends
BUNDLE_RESTORE_COMMAND = f'cp "{BUNDLE_DIR}/%f" "%p"'
BUNDLE_END_COMMAND = f"rm -rf {BUNDLE_DIR}"


@dataclass(frozen=True)
class Run:
    """The archived WAL a recovery from one base backup replays: the segments of its timeline
    from the one holding its end (the WAL before is in the backup: pg_basebackup -X fetch),
    without a gap, in order."""

    segments: list[SegmentRecord]
    first: str  # the segment holding the base backup's end
    missing: str | None  # the first segment missing after them while later ones exist (a gap)

    @property
    def end_lsn(self) -> str | None:
        return self.segments[-1].end.get("lsn") if self.segments else None

    def describe_end(self) -> str:
        """Where the run stops, for an error message."""
        if not self.segments:
            return (f"the WAL archive does not hold segment {self.first}, where its recovery"
                    " starts" + ("" if self.missing is None or self.missing != self.first else
                                 " (later segments are there: the streamer started after the"
                                 " backup, or lost its slot)")
                    + ("; is `safehold wal stream` running? It archives a segment once it is"
                       " full" if self.missing is None else ""))
        last = self.segments[-1].name
        if self.missing is None:
            return f"the archive's newest segment is {last}"
        return (f"the archive has a gap: segment {self.missing} after {last} is missing (was"
                " the replication slot dropped or lost while the streamer was down?); recovery"
                " cannot cross it, a full backup taken after the gap starts a new window")


def contiguous_from(segments: Sequence[SegmentRecord], timeline: int, start_lsn: str,
                    through_lsn: str | None = None) -> Run:
    """The :class:`Run` of ``segments`` (a target's readable records) from the one holding
    ``start_lsn`` on ``timeline``: up to the segment after ``through_lsn``'s when given
    (recovery to an LSN reads at most that far), else to the first gap or the archive's end."""
    from safehold.engines.postgres.walstream import parse_lsn, segment_name

    stream = stream_of(timeline)
    records = sorted((r for r in segments if r.kind == KIND and r.stream == stream),
                     key=lambda r: r.name)
    seg_size = int(records[0].meta.get("wal_segment_size") or 16 << 20) if records \
        else 16 << 20
    first = segment_name(timeline, parse_lsn(start_lsn), seg_size)
    last = (segment_name(timeline, parse_lsn(through_lsn) + seg_size, seg_size)
            if through_lsn else None)
    run: list[SegmentRecord] = []
    expected = first
    for record in records:
        if record.name < first or record.name == (run[-1].name if run else None):
            continue
        if last is not None and record.name > last:
            return Run(run, first, None)
        if record.name != expected:
            return Run(run, first, expected)
        run.append(record)
        expected = next_name(record.name, seg_size)
    return Run(run, first, None)


def bundle(archive: LogArchive, timeline: int, start_lsn: str, data_dir: Path, *,
           through_lsn: str | None = None,
           segments: Sequence[SegmentRecord] | None = None) -> tuple[list[str], int]:
    """Copy the archived WAL a recovery of ``data_dir`` replays into ``data_dir/safehold_wal``:
    the segments of ``timeline`` from the one holding ``start_lsn`` (the base backup's end)
    on, up to the one after ``through_lsn``'s, else to the archive's end (a time target stops
    at the first commit after it, which may lie in any later segment). Each passes the same
    checks as ``fetch``. Returns the names copied and their bytes. ``segments``: the archive's
    readable records when the caller has read them already (else they are read here).

    A gap in the archive ends the bundle: recovery cannot cross it either.
    """
    from safehold.repository.logarchive import readable_segments

    if segments is None:
        segments = readable_segments(archive.repo, archive.target)[0]
    if not any(r.kind == KIND and r.stream == stream_of(timeline) for r in segments):
        raise SegmentNotFound(f"the log archive of {archive.target} holds no WAL of timeline"
                              f" {timeline}: is `safehold wal stream` running?")
    run = contiguous_from(segments, timeline, start_lsn, through_lsn)
    if run.missing is not None:
        log.warning("the WAL archive of %s has a gap: %s is missing; the bundle ends at %s",
                    archive.target, run.missing, run.segments[-1].name if run.segments
                    else "its start")
    names = [r.name for r in run.segments]
    folder = data_dir / BUNDLE_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    size = sum(fetch(archive, name, folder / name) for name in names)
    log.info("bundled %d WAL segment(s) (%d bytes) into %s", len(names), size, folder)
    return names, size
