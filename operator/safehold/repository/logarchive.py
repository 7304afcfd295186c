"""The log archive of a repository: WAL, binlog and oplog segments beside the backups.

Engine-neutral. A segment is one piece of a server's change log, named by

* the target it belongs to,
* its log ``kind`` (``wal``, ``binlog``, ``oplog``),
* its ``stream``: what a position is only meaningful within (a PostgreSQL timeline, a MariaDB
  server id, a MongoDB replica set), and
* its ``name``: unique within the stream and sorting in log order (the WAL segment file name,
  the binlog file name);

and carries the ``start``/``end`` positions it covers (engine-specific strings: an LSN, a
binlog file and offset, an oplog timestamp) and the times of its first and last event.

Layout (docs/format.md)::

    <target>/_logs/<kind>/<stream>/<name>/keys.json      wrapped data key (encrypted targets)
    <target>/_logs/<kind>/<stream>/<name>/data           the segment's bytes (framed like objects)
    <target>/_logs/<kind>/<stream>/<name>/segment.json   written last: no record, no segment

A segment's data is one object framed, compressed and encrypted exactly like a backup's
objects, under a data key of its own, wrapped by the target's key with the segment's full
identity in the AAD. Its record carries an HMAC (keyed from that data key) over everything in
it: repository id, target, kind, stream, name, positions, times and the object's hash. So a
segment copied to another name, stream, target or repository, or an old segment replayed over
a newer one, fails the check before one byte of it is applied.

This module reads and writes records and knows the layout and the retention rule; encoding and
decoding the bytes is :mod:`safehold.pipeline.logarchive` (the layer that streams).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safehold.api.manifest import Manifest, ObjectRecord
from safehold.api.validation import describe_validation_error
from safehold.repository import layout
from safehold.repository.repo import BackupNotFound, Repository, RepositoryDamaged
from safehold.storage.base import ObjectNotFound

LOGS = "_logs"
RECORD = "segment.json"
DATA = "data"
SEGMENT_FORMAT = 1
LogKind = Literal["wal", "binlog", "oplog"]
LOG_KINDS: tuple[LogKind, ...] = ("wal", "binlog", "oplog")
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SegmentConflict(RepositoryDamaged):
    """A different segment already sits under this name: never overwritten (exit 4)."""


class SegmentNotFound(BackupNotFound):
    """No such segment in the archive."""


def check_part(value: str, what: str) -> str:
    if not _PART.match(value):
        raise ValueError(f"invalid log {what} {value!r}: use 1-128 letters, digits, '.', '_' or"
                         " '-', starting with a letter or digit")
    return value


@dataclass(frozen=True, order=True)
class SegmentId:
    """Where a segment lives: target, kind, stream, name (sorts in log order within a stream)."""

    target: str
    kind: str
    stream: str
    name: str

    def __post_init__(self) -> None:
        layout.check_target_name(self.target)
        if self.kind not in LOG_KINDS:
            raise ValueError(f"unknown log kind {self.kind!r}: one of {', '.join(LOG_KINDS)}")
        check_part(self.stream, "stream")
        check_part(self.name, "segment name")

    @property
    def prefix(self) -> str:
        return f"{self.target}/{LOGS}/{self.kind}/{self.stream}/{self.name}/"

    @property
    def record_key(self) -> str:
        return self.prefix + RECORD

    @property
    def keys_key(self) -> str:
        return self.prefix + layout.KEYS

    @property
    def data_key(self) -> str:
        return self.prefix + DATA

    @property
    def label(self) -> str:
        """For messages and AAD: ``target/kind/stream/name``."""
        return f"{self.target}/{self.kind}/{self.stream}/{self.name}"

    def key_context(self) -> bytes:
        """AAD of the wrapped data key: a key record moved to another segment fails to unwrap."""
        return f"safehold/v1 log segment {self.label}".encode()

    def object_id(self) -> str:
        """The chunk cipher's object id (chunks moved between segments fail authentication)."""
        return f"{LOGS}/{self.kind}/{self.stream}/{self.name}"


def logs_prefix(target: str, kind: str | None = None, stream: str | None = None) -> str:
    parts = [target, LOGS] + ([kind] if kind else []) + ([stream] if kind and stream else [])
    return "/".join(parts) + "/"


class SegmentRecord(BaseModel):
    """``segment.json``: what one archived segment is (MAC'd when the target is encrypted)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    format: int = SEGMENT_FORMAT
    repo_id: str | None = Field(description="repository the segment was written to")
    target: str
    namespace: str | None = None
    kind: LogKind
    stream: str = Field(description="timeline / server id / replica set the positions live in")
    name: str
    start: dict[str, str] = Field(description="position of the first byte or event it covers")
    end: dict[str, str] = Field(description="position right after the last event it covers")
    first_time: datetime | None = Field(default=None, description="time of its first event")
    last_time: datetime | None = Field(default=None, description="time of its last event")
    complete: bool = Field(default=True, description="false for a partial (still growing) file")
    written_at: datetime
    compression: str
    encryption: Literal["none", "aes-256-gcm"] = "none"
    chunk_size: int
    object: ObjectRecord
    meta: dict[str, Any] = Field(default_factory=dict, description="engine-specific facts")
    tools: dict[str, str] = Field(default_factory=dict)
    mac: str | None = None

    @property
    def id(self) -> SegmentId:
        return SegmentId(self.target, self.kind, self.stream, self.name)

    def signing_bytes(self) -> bytes:
        body = self.model_dump(mode="json", exclude={"mac"})
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode() + b"\n"

    def same_content(self, other: SegmentRecord) -> bool:
        """Whether two records describe the same bytes at the same positions (a retried put)."""
        return (self.id == other.id and self.start == other.start and self.end == other.end
                and self.object.raw_size == other.object.raw_size
                and self.object.meta.get("raw_sha256") == other.object.meta.get("raw_sha256"))


def read_record(repo: Repository, seg: SegmentId) -> SegmentRecord:
    """The record of one segment; a record that is not where it was read from is tamper."""
    try:
        data = repo.storage.get_bytes(seg.record_key)
    except ObjectNotFound:
        raise SegmentNotFound(f"no log segment {seg.label} in {repo.url}") from None
    try:
        record = SegmentRecord.model_validate_json(data)
    except ValidationError as exc:
        raise RepositoryDamaged(f"log segment {seg.label}: {seg.record_key} is damaged:"
                                f" {describe_validation_error(exc)}") from None
    if record.id != seg:
        from safehold.repository.policy import RepositoryTampered

        raise RepositoryTampered(
            f"log segment {seg.label}: its record is that of {record.id.label}: it was copied"
            " or moved here; do not replay it")
    return record


def segment_ids(repo: Repository, target: str, kind: str | None = None,
                stream: str | None = None) -> tuple[list[SegmentId], list[SegmentId]]:
    """(complete, incomplete) segments of a target, sorted by kind, stream, name."""
    complete: set[SegmentId] = set()
    seen: set[SegmentId] = set()
    for info in repo.storage.list(logs_prefix(target, kind, stream)):
        parts = info.key.split("/")
        if len(parts) != 6 or parts[1] != LOGS:
            continue
        try:
            seg = SegmentId(parts[0], parts[2], parts[3], parts[4])
        except ValueError:
            continue  # not something the archive wrote
        seen.add(seg)
        if parts[5] == RECORD:
            complete.add(seg)
    return sorted(complete), sorted(seen - complete)


def list_segments(repo: Repository, target: str, kind: str | None = None,
                  stream: str | None = None) -> list[SegmentRecord]:
    """The complete segments' records (unauthenticated until opened or verified), in order."""
    return [read_record(repo, seg) for seg in segment_ids(repo, target, kind, stream)[0]]


def delete_segment(repo: Repository, seg: SegmentId) -> int:
    """Delete the record first (the segment stops existing), then the rest; bytes freed."""
    infos = list(repo.storage.list(seg.prefix))
    if any(i.key == seg.record_key for i in infos):
        repo.storage.delete(seg.record_key)
    for info in infos:
        if info.key != seg.record_key:
            repo.storage.delete(info.key)
    return sum(i.size for i in infos)


# -- retention ------------------------------------------------------------------------------

RETENTION_SLACK = timedelta(hours=1)
"""Segments ending this close before the oldest point still needed are kept too: the backup's
clock (the runner's) and the log's (the server's) need not agree to the second."""


def needed_from(kept: Sequence[Manifest], window_start: datetime | None) -> datetime | None:
    """The earliest time the kept backups or the recovery window may need logs from.

    Logs are replayed from a full's consistent point onward, so the oldest kept full's start
    bounds what any restore can use; a recovery window (``minRecoveryWindow``) needs logs from
    its start. None when nothing is kept and no window is asked for: nothing needs logs.
    """
    starts = [m.started_at for m in kept if m.type == "full"]
    candidates = starts + ([window_start] if window_start is not None else [])
    return min(candidates) if candidates else None


def expendable(segments: Iterable[SegmentRecord], kept: Sequence[Manifest],
               window_start: datetime | None = None, *,
               slack: timedelta = RETENTION_SLACK) -> list[SegmentRecord]:
    """The segments no kept backup and no recovery window needs: those whose last event is
    older than the oldest point still needed (less ``slack``). A segment without event times
    is kept while any backup is kept (it cannot be placed in time)."""
    since = needed_from(kept, window_start)
    return [seg for seg in segments
            if since is None or (seg.last_time is not None and seg.last_time < since - slack)]


def readable_segments(repo: Repository, target: str) -> tuple[list[SegmentRecord], list[str]]:
    """The target's segment records, and separately the problems of those that cannot be read
    (a damaged record is reported, never fatal to the rest)."""
    good, bad = [], []
    for seg in segment_ids(repo, target)[0]:
        try:
            good.append(read_record(repo, seg))
        except RepositoryDamaged as exc:
            bad.append(exc.message)
    return good, bad
