"""Continuous WAL capture through a replication slot that Safehold owns.

The streamer speaks the physical replication protocol itself (psycopg2's
``PhysicalReplicationConnection``) instead of running pg_receivewal, because pg_receivewal
confirms a position to the slot once it is fsynced locally: a lost pod volume would then lose
WAL the server has already recycled. Here a segment is assembled in memory and handed to a
:class:`SegmentSink`; only once the sink says it is durable (in the repository) is its end
confirmed to the slot as flushed. The server keeps everything after the confirmed position, so a
streamer killed at any point (or whose local state is gone) restarts at the segment holding the
slot's ``restart_lsn`` and re-sends what was not yet stored: no gap, at worst one segment sent
twice (a sink stores identical bytes idempotently).

A slot whose WAL the server dropped (``wal_status = 'lost'``, past ``max_slot_wal_keep_size``)
can never be resumed without a gap: :class:`SlotLost` says so, and the archive's continuity from
the last backup is broken until the next full.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg2
import psycopg2.extras
from psycopg2.extensions import connection as Connection

from safehold.engines.base import EngineError, PermissionDenied
from safehold.engines.postgres.conn import PgTarget, connect, from_psycopg
from safehold.engines.postgres.physical import SLOT_KEEP_PROBLEM

log = logging.getLogger("safehold.postgres.wal")
_SLOT = re.compile(r"[^a-z0-9_]")


class SlotLost(EngineError):
    """The server dropped WAL the slot still needed: the archive has a gap from here on."""


def slot_name(target: str) -> str:
    """``safehold_<target>``: what PostgreSQL accepts (a-z, 0-9, _; at most 63 bytes)."""
    return ("safehold_" + _SLOT.sub("_", target.lower()))[:63]


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_name(timeline: int, lsn: int, seg_size: int) -> str:
    """The WAL file name holding ``lsn`` (as ``pg_walfile_name``)."""
    per_id = 0x100000000 // seg_size
    segno = lsn // seg_size
    return f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"


@dataclass(frozen=True)
class Segment:
    timeline: int
    name: str
    start_lsn: int
    end_lsn: int
    data: bytes
    # the server's clock when it sent the segment's last byte: no record in it is later
    last_sent: datetime | None = None
    # every commit made before this time is in this segment or an earlier one (:class:`Coverage`)
    covered_until: datetime | None = None
    # the cluster's (IDENTIFY_SYSTEM): a restore refuses to replay one cluster's WAL onto
    # another's backup before the server would
    system_identifier: str | None = None


def server_time(value: datetime) -> datetime:
    """A replication message's send time as an aware UTC datetime (psycopg2 may give it
    naive, in local time)."""
    return value.astimezone(UTC)


class Coverage:
    """What the server's clock says about the WAL archived so far.

    Every XLogData message carries the server's current end of WAL and its clock when it sent
    the message: at that moment every transaction that had committed had its commit record
    before that end. So once the archive holds the WAL up to a message's end, it holds every
    commit made before the message was sent. This bounds the recoverable window's end without
    parsing WAL. A streamer catching up on old WAL sees ends far ahead of what it has stored, so
    its coverage stays where it was until it catches up. (One caveat: with synchronous_commit
    off, a commit reaches the flushed WAL up to 3 x wal_writer_delay after its timestamp, so the
    window's last fraction of a second may lack such a commit; PostgreSQL then says "recovery
    ended before configured recovery target was reached".)
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._pending: deque[tuple[int, datetime]] = deque(maxlen=limit)
        self.until: datetime | None = None

    def saw(self, wal_end: int, sent: datetime) -> None:
        if wal_end:
            self._pending.append((wal_end, sent))

    def archived_to(self, lsn: int) -> datetime | None:
        """The archive now holds the WAL before ``lsn``: the time it covers."""
        while self._pending and self._pending[0][0] <= lsn:
            covered = self._pending.popleft()[1]
            if self.until is None or covered > self.until:
                self.until = covered
        return self.until


class SegmentSink(Protocol):
    def put(self, segment: Segment) -> None:
        """Store one complete segment; returns only once it is durable."""
        ...


@dataclass
class StreamStatus:
    slot: str = ""
    timeline: int = 0
    received_lsn: str = ""
    confirmed_lsn: str = ""
    last_segment: str = ""
    segments: int = 0
    updated: float = 0.0
    retained_bytes: int | None = None  # WAL the server keeps for the slot
    wal_status: str | None = None  # reserved, extended, unreserved (about to be lost), lost
    safe_wal_size: int | None = None  # bytes until max_slot_wal_keep_size invalidates the slot


@dataclass(frozen=True)
class SlotState:
    restart_lsn: int | None
    wal_status: str | None
    created: bool


def ensure_slot(conn: Connection, slot: str) -> SlotState:
    """The slot (created, reserving WAL at once, when missing); SlotLost if it lost WAL."""
    with conn.cursor() as cur:
        cur.execute("SELECT restart_lsn::text, wal_status FROM pg_replication_slots"
                    " WHERE slot_name = %s", (slot,))
        row = cur.fetchone()
        created = row is None
        if created:
            log.info("creating physical replication slot %s", slot)
            cur.execute("SELECT lsn::text FROM pg_create_physical_replication_slot(%s, true)",
                        (slot,))
            row = (cur.fetchone()[0], "reserved")
    restart, status = row
    if restart is None and status != "lost":
        raise EngineError(
            f"replication slot {slot} exists but reserves no WAL (it was not created by"
            f" Safehold): drop it (SELECT pg_drop_replication_slot('{slot}')) and let the"
            " streamer create its own")
    if status == "lost" or restart is None:
        raise SlotLost(
            f"replication slot {slot} lost WAL it still needed (wal_status {status}): the log"
            " archive has a gap; the next backup must be a full. Drop the slot"
            f" (SELECT pg_drop_replication_slot('{slot}')) and restart the streamer, then take"
            " a full backup", hint="take a full backup after restarting the streamer")
    return SlotState(parse_lsn(restart) if restart else None, status, created)


class WalStreamer:
    """Streams the server's WAL through ``slot`` into ``sink``, one complete segment at a time."""

    def __init__(self, target: PgTarget, slot: str, sink: SegmentSink, *,
                 status_file: Path | None = None, status_interval: float = 10.0,
                 attempts: int = 3, warn_retained: int = 1 << 30,
                 health_interval: float = 10.0,
                 on_status: Callable[[StreamStatus], None] | None = None) -> None:
        self.target, self.slot, self.sink = target, slot, sink
        self.status_file = status_file
        self.on_status = on_status  # e.g. the status endpoint's board, about every second
        self.status_interval = status_interval
        self.attempts = attempts
        self.status = StreamStatus(slot=slot)
        self.stopping = threading.Event()
        self.warn_retained, self.health_interval = warn_retained, health_interval
        self._health: Connection | None = None
        self._health_at = 0.0

    def stop(self) -> None:
        self.stopping.set()

    def _facts(self) -> tuple[int, int]:
        """(WAL segment size, the slot's restart LSN), creating the slot if needed."""
        conn = connect(self.target, attempts=self.attempts)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT rolsuper OR rolreplication FROM pg_roles"
                            " WHERE rolname = current_user")
                if not cur.fetchone()[0]:
                    raise PermissionDenied(
                        f"role {self.target.user} lacks REPLICATION (the WAL streamer reads"
                        f" through a replication slot): ALTER ROLE {self.target.user}"
                        " REPLICATION, and allow it a 'replication' line in pg_hba.conf")
                cur.execute("SELECT setting::int FROM pg_settings WHERE name = 'wal_segment_size'")
                seg_size = int(cur.fetchone()[0])
                cur.execute("SELECT current_setting('max_slot_wal_keep_size')")
                if cur.fetchone()[0] == "-1":
                    raise EngineError(SLOT_KEEP_PROBLEM)
            state = ensure_slot(conn, self.slot)
        except psycopg2.Error as exc:
            raise from_psycopg(exc, self.target, "preparing the replication slot") from None
        finally:
            conn.close()
        assert state.restart_lsn is not None
        return seg_size, state.restart_lsn

    def _replication(self) -> Connection:
        kwargs: dict[str, Any] = {
            **self.target.libpq_kwargs(), "dbname": "replication",
            "application_name": "safehold-wal",
            "connection_factory": psycopg2.extras.PhysicalReplicationConnection}
        try:
            return psycopg2.connect(**kwargs)
        except psycopg2.Error as exc:
            raise from_psycopg(exc, self.target, "opening a replication connection") from None

    def run(self) -> None:
        """Stream until :meth:`stop` (or a failure, raised)."""
        seg_size, restart = self._facts()
        conn = self._replication()
        try:
            self._stream(conn, seg_size, restart)
        except psycopg2.Error as exc:
            raise from_psycopg(exc, self.target, "streaming WAL") from None
        finally:
            conn.close()
            if self._health is not None:
                self._health.close()

    def check_slot(self) -> None:
        """The slot's health (retained WAL, status) into the status; SlotLost once it lost WAL,
        a warning while it retains more than ``warn_retained`` bytes."""
        if self._health is None or self._health.closed:
            self._health = connect(self.target, attempts=self.attempts)
            self._health.autocommit = True
        with self._health.cursor() as cur:
            cur.execute("SELECT (pg_current_wal_lsn() - restart_lsn)::bigint, wal_status,"
                        " safe_wal_size FROM pg_replication_slots WHERE slot_name = %s",
                        (self.slot,))
            row = cur.fetchone()
        if row is None:
            raise SlotLost(f"replication slot {self.slot} was dropped while streaming: WAL"
                           " after the last archived segment may be gone; restart the streamer"
                           " and take a full backup", hint="take a full backup")
        retained, status, safe = row
        self.status.retained_bytes = None if retained is None else int(retained)
        self.status.wal_status, self.status.safe_wal_size = status, safe
        if status == "lost":
            raise SlotLost(f"replication slot {self.slot} lost WAL it still needed (past"
                           " max_slot_wal_keep_size): the log archive has a gap; the next"
                           " backup must be a full", hint="take a full backup")
        if retained is not None and retained > self.warn_retained:
            log.warning("replication slot %s retains %d MiB of WAL (warning above %d MiB;"
                        " status %s, %s MiB until it is invalidated): is the repository slow"
                        " or unreachable?", self.slot, retained >> 20, self.warn_retained >> 20,
                        status, "?" if safe is None else int(safe) >> 20)

    def _stream(self, conn: Connection, seg_size: int, restart: int) -> None:
        cur = conn.cursor()
        cur.execute("IDENTIFY_SYSTEM")
        row = cur.fetchone()
        system, timeline = str(row[0]), int(row[1])
        seg_start = restart - restart % seg_size
        buf = bytearray(seg_size)
        pos = 0  # bytes of the current segment received
        self.status.timeline = timeline
        self.status.confirmed_lsn = format_lsn(seg_start)
        log.info("streaming WAL from %s (timeline %d) through slot %s",
                 format_lsn(seg_start), timeline, self.slot)
        cur.start_replication(slot_name=self.slot, start_lsn=seg_start, timeline=timeline,
                              status_interval=self.status_interval)
        last_status = 0.0
        coverage = Coverage()
        while not self.stopping.is_set():
            if time.monotonic() - self._health_at > self.health_interval:
                self._health_at = time.monotonic()
                self.check_slot()
            msg = cur.read_message()
            if msg is None:
                now = time.monotonic()
                if now - last_status > 1:
                    self._write_status(seg_start + pos)
                    last_status = now
                select.select([conn], [], [], 0.5)
                continue
            payload = bytes(msg.payload)
            at = msg.data_start
            sent = server_time(msg.send_time)
            coverage.saw(msg.wal_end, sent)
            expected = seg_start + pos
            if at + len(payload) <= expected:
                continue  # already have it
            if at > expected:
                raise EngineError(f"the server sent WAL from {format_lsn(at)} while"
                                  f" {format_lsn(expected)} was expected: a gap")
            payload = payload[expected - at:]
            while payload:
                take = min(len(payload), seg_size - pos)
                buf[pos:pos + take] = payload[:take]
                pos += take
                payload = payload[take:]
                if pos == seg_size:
                    end = seg_start + seg_size
                    segment = Segment(timeline, segment_name(timeline, seg_start, seg_size),
                                      seg_start, end, bytes(buf), last_sent=sent,
                                      covered_until=coverage.archived_to(end),
                                      system_identifier=system)
                    self.sink.put(segment)  # durable before the slot may forget it
                    seg_start += seg_size
                    pos = 0
                    cur.send_feedback(write_lsn=seg_start, flush_lsn=seg_start, force=True)
                    self.status.segments += 1
                    self.status.last_segment = segment.name
                    self.status.confirmed_lsn = format_lsn(seg_start)
                    log.info("archived WAL segment %s", segment.name)
            self.status.received_lsn = format_lsn(seg_start + pos)
            if time.monotonic() - last_status > 1:
                self._write_status(seg_start + pos)
                last_status = time.monotonic()
        self._write_status(seg_start + pos)

    def _write_status(self, received: int) -> None:
        self.status.received_lsn = format_lsn(received)
        self.status.updated = time.time()
        if self.on_status is not None:
            self.on_status(self.status)
        if self.status_file is None:
            return
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.status)))
        os.replace(tmp, self.status_file)


class DirectorySink:
    """Segments as files in a local directory (fsynced, renamed into place): for tests and a
    local archive; the repository's log archive is the production sink."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def put(self, segment: Segment) -> None:
        path = self.root / segment.name
        tmp = path.with_suffix(".partial")
        with open(tmp, "wb") as f:
            f.write(segment.data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

