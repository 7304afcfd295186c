"""Following the oplog continuously and cutting it into segments (``safehold oplog stream``).

Polling, not a tailable cursor: FerretDB closes a tailable cursor whose first batch is empty,
and a poll (``ts > last``, natural order) is what a tailable cursor does on mongod anyway.
Entries are gathered in memory; a segment is cut when nothing new arrived for one poll (so a
quiet second is complete) or when the batch is full (then it ends at a change of second, so a
restore to a time never sees half of a second's entries unless one second holds more than a
batch). Segments hold only the target database's entries but cover every position in between,
so consecutive segments meet exactly (start = the previous segment's end).

Where to start comes from the archive (after the newest segment's end), else from the newest
backup's replay point, else from the newest entry now. If the oplog no longer reaches back to
the start (it wrapped while no streamer ran, or faster than it could read), the gap is logged
as an error naming both ends; the archive then continues from the oldest entry the server has,
and restores across the gap are refused (BrokenChain) until a new full backup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo import MongoClient

from safehold.engines.mongodb import oplog

log = logging.getLogger("safehold.oplog")
MAX_ENTRIES = 10_000
MAX_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Segment:
    """One batch to archive: entries after ``start`` up to ``end`` (the database's only)."""

    start: Timestamp
    end: Timestamp
    entries: list[bytes]
    first: Timestamp  # the first entry's (of the database)

    @property
    def name(self) -> str:
        """Named for where it continues from: unique, and sorting in log order."""
        return f"{self.start.time:010d}.{self.start.inc:010d}"


@dataclass
class Follower:
    """Reads the oplog after ``last`` and hands complete segments to ``archive``."""

    client: MongoClient[Any]
    database: str
    last: Timestamp
    archive: Callable[[Segment], None]
    max_entries: int = MAX_ENTRIES
    max_bytes: int = MAX_BYTES
    gaps: list[tuple[Timestamp, Timestamp]] = field(default_factory=list)
    _start: Timestamp | None = None
    _batch: list[tuple[Timestamp, bytes | None]] = field(default_factory=list)
    _size: int = 0

    def __post_init__(self) -> None:
        self._start = self.last

    def check_wrap(self) -> None:
        """Log a gap if the server no longer holds the entry after ``last``."""
        first = oplog.oldest(self.client)
        if first is None or first <= self.last:
            return
        gap = (self.last, first)
        self.gaps.append(gap)
        log.error("GAP in the oplog archive: the entries after %s (%s) up to %s (%s) were"
                  " overwritten (the oplog wrapped) before they were archived; point-in-time"
                  " restores cannot cross it: take a full backup now, and size the oplog"
                  " (replSetResizeOplog) so it outlasts a streamer outage",
                  oplog.ts_text(self.last), oplog.ts_time(self.last).isoformat(),
                  oplog.ts_text(first), oplog.ts_time(first).isoformat())
        self.flush()  # what was read before the gap is complete
        self.last = self._start = oplog.before(first)

    def poll(self) -> int:
        """Read what is new; cut segments as they complete. The number of entries read."""
        self.check_wrap()
        read = 0
        for entry in oplog.entries_since(self.client, self.last):
            self._add(entry)
            read += 1
            if len(self._batch) >= self.max_entries or self._size >= self.max_bytes:
                self._cut_at_second()
        if not read:
            self.flush()  # a quiet poll: everything gathered is complete
        return read

    def _add(self, entry: RawBSONDocument) -> None:
        ts = oplog.entry_ts(entry)
        raw = bytes(entry.raw) if oplog.belongs(entry, self.database) else None
        self._batch.append((ts, raw))
        self._size += len(raw or b"")
        self.last = ts

    def _cut_at_second(self) -> None:
        second = self._batch[-1][0].time
        cut = next((i for i in range(len(self._batch) - 1, -1, -1)
                    if self._batch[i][0].time != second), None)
        if cut is None:  # one second holds the whole batch
            self.flush()
            return
        self._emit(self._batch[:cut + 1])
        self._batch = self._batch[cut + 1:]
        self._size = sum(len(r or b"") for _, r in self._batch)

    def flush(self) -> None:
        """Archive everything gathered (SIGTERM, a quiet poll)."""
        if self._batch:
            self._emit(self._batch)
        self._batch, self._size = [], 0

    def _emit(self, batch: list[tuple[Timestamp, bytes | None]]) -> None:
        mine = [(ts, raw) for ts, raw in batch if raw is not None]
        assert self._start is not None
        if not mine:
            return  # nothing of the database: the next segment starts where this one would
        segment = Segment(self._start, batch[-1][0], [raw for _, raw in mine], mine[0][0])
        self.archive(segment)
        self._start = segment.end


def resume_point(archived: list[dict[str, str]], backups: list[dict[str, str]],
                 client: MongoClient[Any]) -> Timestamp:
    """After the newest archived segment, else the newest backup's replay point, else now."""
    if archived:
        return max(oplog.parse_ts(e["oplog_ts"]) for e in archived)
    if backups:
        return oplog.replay_start(backups[-1])
    newest = oplog.newest(client)
    return newest if newest is not None else Timestamp(0, 0)
