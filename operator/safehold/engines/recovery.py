"""Point-in-time recovery, engine-neutral: where to stop, and the log pieces to replay.

The pipeline (:mod:`safehold.pipeline.pitr`) picks the backups; an engine that can replay its
change log (:class:`PointInTimeEngine`) says which backups end at or before the recovery
target, which log pieces cover the way from there to the target (or which are missing), and
replays them after restoring the chain (``RestoreRequest.recovery``).

A :class:`LogPiece` is a stretch of the server's log from any source: an object of a backup
(an incremental's binlog) or an archived segment (:mod:`safehold.repository.logarchive`). It
opens lazily; every byte it yields has passed the same checks as a backup's objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from safehold.api.errors import Exit, IntegrityError, UsageError
from safehold.api.manifest import Manifest

if TYPE_CHECKING:
    from safehold.engines.base import ChainReader


class BrokenChain(IntegrityError):
    """A chain or the logs after it cannot be replayed: a missing parent, a gap in positions,
    another server or timeline, a purged log. The message names what is missing."""

    exit_code = Exit.CORRUPT


class OutsideWindow(UsageError):
    """The recovery target is outside what the repository can restore to (names the window)."""


@dataclass(frozen=True)
class RecoveryTarget:
    """Where a point-in-time restore stops; exactly one is set.

    ``time``: the state with every change logged at or before it (binlog times are whole
    seconds); ``gtid``: up to and including that transaction; ``position``: ``FILE:POS``, the
    state right before the event at that binlog position; ``lsn``: PostgreSQL's recovery
    target LSN.
    """

    time: datetime | None = None
    gtid: str | None = None
    position: str | None = None
    lsn: str | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.time, self.gtid, self.position, self.lsn) if v is not None]
        if len(given) != 1:
            raise UsageError("name exactly one recovery target: --to-time, --to-gtid,"
                             " --to-position or --to-lsn")

    def describe(self) -> str:
        if self.time is not None:
            return f"time {self.time.isoformat()}"
        if self.gtid is not None:
            return f"GTID {self.gtid}"
        if self.position is not None:
            return f"position {self.position}"
        return f"LSN {self.lsn}"


@dataclass(frozen=True)
class LogPiece:
    """A stretch of the server's change log, from a backup object or the archive."""

    source: str  # "backup <id>" or "archive"
    name: str  # the log file (binlog.000007, a WAL segment name)
    start: Mapping[str, str]
    end: Mapping[str, str]
    opener: Callable[[], Iterator[bytes]] = field(compare=False, repr=False)
    first_time: datetime | None = None
    last_time: datetime | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def open(self) -> Iterator[bytes]:
        return self.opener()


@dataclass(frozen=True)
class Recovery:
    """What a point-in-time restore replays after the chain: ``logs`` up to ``to``."""

    to: RecoveryTarget
    logs: Sequence[LogPiece] = ()


@runtime_checkable
class PointInTimeEngine(Protocol):
    """What an engine that replays its log adds to :class:`~safehold.engines.base.Engine`."""

    log_kind: str

    def reached(self, position: Mapping[str, str], to: RecoveryTarget) -> bool:
        """Whether the state at ``position`` (a backup's end) is at or before ``to``."""
        ...

    def plan_logs(self, start: Mapping[str, str], pieces: Sequence[LogPiece],
                  to: RecoveryTarget | None) -> list[LogPiece]:
        """The pieces that lead from ``start`` to ``to``, in order; raises BrokenChain naming
        the first gap, OutsideWindow when the pieces end before ``to``."""
        ...

    def log_pieces(self, backups: Sequence[Manifest], reader: ChainReader) -> list[LogPiece]:
        """The log pieces held by these backups' objects (incrementals, differentials)."""
        ...

    def archive_stream(self, position: Mapping[str, str]) -> str | None:
        """The log archive's stream the log at ``position`` lives in (e.g. ``server-1``)."""
        ...
