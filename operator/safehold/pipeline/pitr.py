"""Point-in-time restore: pick the plan (backups, then logs up to the target), print, run it.

The plan, whatever the engine (:class:`~safehold.engines.recovery.PointInTimeEngine`):

1. the newest full whose consistent end is at or before the target;
2. from the backups built on it and ending at or before the target, the newest: its chain
   (the full, the differential, the incrementals) is the way there;
3. the log pieces that lead from the full's end to the target: the chain's own, later
   backups', and the log archive's (the engine picks them and names any gap).

A target before the oldest full's end or after the newest log is outside the recoverable
window: an error that names the window.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from safehold.api.manifest import Manifest
from safehold.codecs import crypto
from safehold.engines.base import Engine, RestoreRequest, UnsupportedError
from safehold.engines.recovery import (
    LogPiece,
    OutsideWindow,
    PointInTimeEngine,
    Recovery,
    RecoveryTarget,
)
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.logarchive import LogArchive
from safehold.pipeline.objects import ObjectReader
from safehold.repository.logarchive import SegmentRecord, readable_segments
from safehold.repository.repo import Repository


def _where(position: Any) -> str:
    """A log position for the plan's lines: binlog FILE:POS, oplog timestamp, or LSN."""
    pos = dict(position or {})
    if "binlog_file" in pos:
        return f"{pos['binlog_file']}{':' + pos['binlog_pos'] if 'binlog_pos' in pos else ''}"
    return str(pos.get("oplog_ts") or pos.get("lsn") or pos.get("binlog_pos") or "")


def _time(position: dict[str, str] | None) -> datetime | None:
    text = (position or {}).get("time")
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class Window:
    """From the oldest full's consistent end to the newest log or backup end (None: none)."""

    start: datetime | None
    end: datetime | None

    def describe(self) -> str:
        if self.start is None or self.end is None:
            return "no recoverable window (no full backup with a recorded log position)"
        return f"{self.start.isoformat()} .. {self.end.isoformat()}"

    def as_dict(self) -> dict[str, str | None]:
        return {"from": self.start.isoformat() if self.start else None,
                "to": self.end.isoformat() if self.end else None}


def window(backups: Sequence[Manifest], segments: Sequence[SegmentRecord]) -> Window:
    """The target's recoverable window, from its manifests and segment records alone."""
    starts = [t for m in backups if m.type == "full" and (t := _time(m.end_position))]
    if not starts:
        return Window(None, None)
    ends = [t for m in backups if (t := _time(m.end_position))]
    ends += [t for s in segments if (t := segment_end(s)) is not None]
    return Window(min(starts), max(ends))


def segment_end(segment: SegmentRecord) -> datetime | None:
    """The time up to which a segment (with those before it) holds every event. A binlog or
    oplog segment: its last event's. A WAL segment: its ``covered_until`` (the WAL carries no
    time the streamer reads; the server's clock when it sent the WAL bounds it)."""
    if segment.kind == "wal":
        covered = segment.meta.get("covered_until")
        return datetime.fromisoformat(covered) if isinstance(covered, str) else None
    return segment.last_time


def target_window(repo: Repository, target: str) -> Window:
    backups, _ = repo.scan(target)
    segments, _ = readable_segments(repo, target)
    return window(backups, segments)


def window_bounds(repo: Repository, target: str) -> tuple[datetime | None, datetime | None]:
    """(start, end) of :func:`target_window`: a streamer status board's window source."""
    win = target_window(repo, target)
    return win.start, win.end


@dataclass
class RecoveryPlan:
    target: str
    to: RecoveryTarget
    chain: list[Manifest]  # the way to the newest backup at or before the target
    logs: list[LogPiece]  # what is replayed after the full, in order
    window: Window

    def lines(self) -> list[str]:
        out = [f"point-in-time restore of {self.target} to {self.to.describe()}",
               f"  recoverable window: {self.window.describe()}"]
        for m in self.chain:
            end = m.end_position or {}
            out.append(f"  {m.type:<12} {m.backup_id}  ends {_where(end)}"
                       f"  {end.get('time', '')}")
        for p in self.logs:
            start, stop = dict(p.start), dict(p.end)
            if "binlog_pos" in start:
                span = f"{start['binlog_pos']}..{stop.get('binlog_pos', '')}"
            else:
                span = f"{_where(start)}..{_where(stop)}"
            out.append(f"  log          {p.name} {span}  from {p.source}")
        out.append(f"  then stop at {self.to.describe()}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "to": self.to.describe(), "window": self.window.as_dict(),
                "chain": [{"backup_id": m.backup_id, "type": m.type,
                           "end_position": m.end_position} for m in self.chain],
                "logs": [{"name": p.name, "source": p.source, "start": dict(p.start),
                          "end": dict(p.end)} for p in self.logs]}


def _pit_engine(engine: Engine) -> PointInTimeEngine:
    if not isinstance(engine, PointInTimeEngine):
        raise UnsupportedError(f"the {engine.name} engine cannot restore to a point in time")
    return engine


def _archive_piece(archive: LogArchive, record: SegmentRecord) -> LogPiece:
    return LogPiece(source="archive", name=record.name, start=record.start, end=record.end,
                    opener=functools.partial(archive.open, record),
                    first_time=record.first_time, last_time=record.last_time,
                    meta={**record.meta, "ends_file": record.complete})


def plan_recovery(engine: Engine, repo: Repository, target: str, to: RecoveryTarget,
                  keks: Sequence[crypto.Kek], *, workers: int | None = None
                  ) -> tuple[RecoveryPlan, ObjectReader]:
    """The plan (nothing is restored); raises OutsideWindow or BrokenChain with the reason."""
    pit = _pit_engine(engine)
    repo.require_target(target)
    backups = [m for m in repo.backups(target) if m.engine == engine.name]
    archive = LogArchive(repo, target, keks, workers=workers, tags_suffice=True)
    segments, _ = readable_segments(repo, target)
    win = window(backups, segments)
    if to.time is not None and win.start is not None and win.end is not None and not (
            win.start <= to.time <= win.end):
        raise OutsideWindow(f"{to.describe()} is outside the recoverable window of {target}:"
                            f" {win.describe()}")
    fulls = [m for m in backups if m.type == "full" and m.end_position
             and pit.reached(m.end_position, to)]
    if not fulls:
        raise OutsideWindow(f"no full backup of {target} ends at or before {to.describe()}:"
                            f" the recoverable window is {win.describe()}")
    full = fulls[-1]
    built = [m for m in backups if m.chain_id == full.backup_id and m.end_position
             and pit.reached(m.end_position, to)]
    chain = repo.chain(built[-1], backups) if built else [full]
    keys = DataKeys(repo, keks)
    for m in chain:  # unwrap keys and check MACs before anything else
        keys.for_backup(m)
    reader = ObjectReader(repo, keys, workers=workers, tags_suffice=True)
    later = [m for m in backups if m.type != "full" and m.backup_id > full.backup_id]
    for m in later:
        keys.for_backup(m)
    stream = pit.archive_stream(full.end_position or {})
    pieces = pit.log_pieces(later, reader) + [
        _archive_piece(archive, s) for s in segments
        if s.kind == pit.log_kind and (stream is None or s.stream == stream)]
    logs = pit.plan_logs(full.end_position or {}, pieces, to)
    return RecoveryPlan(target, to, chain, logs, win), reader


def run_recovery(engine: Engine, plan: RecoveryPlan, reader: ObjectReader, *,
                 conflict: str = "replace") -> None:
    engine.restore(RestoreRequest(chain=[plan.chain[0]], conflict=conflict,  # type: ignore[arg-type]
                                  recovery=Recovery(plan.to, plan.logs)), reader)
