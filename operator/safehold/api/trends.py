"""Performance trends of a target's recent backups (pure; the operator and `safehold stats`).

:func:`summarize` turns the results of recent backups (oldest first) into a :class:`TrendSummary`:
how many, p50/p95 of duration and throughput, the overall compression ratio, the stage that is
most often the slowest (from the runner's per-stage timings), and a :class:`Regression` when the
newest backup took more than ``factor`` times the median of the earlier backups *of its type*
(an incremental is not compared with fulls), naming the stage that slowed down the most.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from statistics import median

from pydantic import Field

from safehold.api.backup import BackupStatus
from safehold.api.common import ConditionStatus, StatusModel
from safehold.api.manifest import BackupType

DEGRADED = "Degraded"
WINDOW = 20  # backups a summary looks at
FACTOR = 2.0  # slower than FACTOR x the trailing median is a regression
MIN_HISTORY = 3  # earlier backups of the same type needed before judging one
WAITING = "waiting"  # time spent waiting on another stage: never a bottleneck itself


class Sample(StatusModel):
    """What the trends need from one finished backup."""

    backup_id: str | None = None
    type: BackupType | None = None
    finished_at: datetime | None = None
    seconds: float | None = Field(default=None, ge=0)
    raw_bytes: int | None = Field(default=None, ge=0)
    stored_bytes: int | None = Field(default=None, ge=0)
    throughput_bytes_per_second: float | None = Field(default=None, ge=0)
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    bottleneck_stage: str | None = Field(
        default=None, description="The bounding stage as the run recorded it (its manifest).")
    cores_busy: float | None = Field(default=None, ge=0, le=1)

    @classmethod
    def from_backup(cls, status: BackupStatus) -> Sample:
        """A completed Backup's status as a sample: the pipeline's stages where the runner
        reported them (status.pipeline), else the runner's coarse task stages."""
        figures = status.pipeline if status.pipeline and status.pipeline.stage_seconds else None
        return cls(backup_id=status.backup_id, type=status.type, finished_at=status.completed_at,
                   seconds=status.duration_seconds, raw_bytes=status.raw_bytes,
                   stored_bytes=status.stored_bytes,
                   throughput_bytes_per_second=status.throughput_bytes_per_second,
                   stage_seconds=(figures.stage_seconds if figures
                                  else status.stage_seconds or {}),
                   bottleneck_stage=figures.bottleneck if figures else None,
                   cores_busy=figures.cores_busy if figures else None)

    @property
    def throughput(self) -> float | None:
        if self.throughput_bytes_per_second is not None:
            return self.throughput_bytes_per_second
        if self.raw_bytes is not None and self.seconds:
            return self.raw_bytes / self.seconds
        return None

    @property
    def bottleneck(self) -> str | None:
        """The stage that bounded this backup: as recorded, else the one that took longest
        (waiting on another stage is not a stage's own work)."""
        if self.bottleneck_stage is not None:
            return self.bottleneck_stage
        work = {k: v for k, v in self.stage_seconds.items() if k != WAITING}
        if not work:
            return None
        return max(sorted(work), key=lambda s: work[s])


class Regression(StatusModel):
    """The newest backup was much slower than the ones before it."""

    backup_id: str | None = Field(default=None, description="The slow backup.")
    type: BackupType | None = Field(default=None, description="Its type (compared with its own).")
    seconds: float = Field(description="How long it took.")
    median_seconds: float = Field(description="Median of the earlier backups of this type.")
    ratio: float = Field(description="seconds / medianSeconds.")
    stage: str | None = Field(
        default=None, description="The stage that slowed down the most (unset without timings)."
    )
    stage_seconds: float | None = Field(default=None, description="That stage's time now.")
    stage_median_seconds: float | None = Field(
        default=None, description="That stage's median in the earlier backups."
    )

    @property
    def message(self) -> str:
        kind = f"{self.type} " if self.type else ""
        text = (f"backup {self.backup_id or '?'} took {self.seconds:.1f}s, {self.ratio:.1f}x the"
                f" median {self.median_seconds:.1f}s of the earlier {kind}backups")
        if self.stage is not None:
            text += (f"; stage {self.stage} slowed most ({self.stage_median_seconds or 0:.1f}s"
                     f" -> {self.stage_seconds or 0:.1f}s)")
        return text


class TrendSummary(StatusModel):
    """A rolling summary of a target's recent completed backups."""

    count: int = Field(default=0, ge=0, description="Backups summarized (the newest ones).")
    p50_duration_seconds: float | None = Field(default=None, description="Median duration.")
    p95_duration_seconds: float | None = Field(default=None, description="95th pct duration.")
    p50_throughput_bytes_per_second: float | None = Field(
        default=None, description="Median throughput (raw bytes per second).")
    p95_throughput_bytes_per_second: float | None = Field(
        default=None, description="95th percentile throughput (raw bytes per second).")
    compression_ratio: float | None = Field(
        default=None, description="Raw bytes / stored bytes over the summarized backups.")
    bottleneck_stage: str | None = Field(
        default=None, description="The stage most often the slowest of a backup.")
    last_backup_id: str | None = Field(default=None, description="The newest backup summarized.")
    regression: Regression | None = Field(
        default=None, description="Set when the newest backup was much slower than usual.")

    def condition(self) -> tuple[ConditionStatus, str, str]:
        """(status, reason, message) of the target's Degraded condition."""
        if self.regression is not None:
            return "True", "SlowerThanUsual", self.regression.message
        if self.count == 0:
            return "Unknown", "NoBackups", "no completed backups to compare yet"
        return "False", "WithinUsualRange", (
            f"the newest backup is within {FACTOR:g}x the median of its type")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(samples: Iterable[Sample], *, window: int = WINDOW, factor: float = FACTOR,
              min_history: int = MIN_HISTORY) -> TrendSummary:
    """The summary of the newest ``window`` samples (given oldest first)."""
    recent = list(samples)[-window:]
    if not recent:
        return TrendSummary()
    durations = [s.seconds for s in recent if s.seconds is not None]
    rates = [t for s in recent if (t := s.throughput) is not None]
    raw = sum(s.raw_bytes for s in recent if s.raw_bytes is not None and s.stored_bytes)
    stored = sum(s.stored_bytes for s in recent if s.raw_bytes is not None and s.stored_bytes)
    stages = Counter(b for s in recent if (b := s.bottleneck) is not None)
    return TrendSummary(
        count=len(recent),
        p50_duration_seconds=_round(percentile(durations, 0.5)) if durations else None,
        p95_duration_seconds=_round(percentile(durations, 0.95)) if durations else None,
        p50_throughput_bytes_per_second=_round(percentile(rates, 0.5)) if rates else None,
        p95_throughput_bytes_per_second=_round(percentile(rates, 0.95)) if rates else None,
        compression_ratio=_round(raw / stored) if stored else None,
        bottleneck_stage=_most_common(stages),
        last_backup_id=recent[-1].backup_id,
        regression=regression(recent, factor=factor, min_history=min_history),
    )


def regression(samples: Sequence[Sample], *, factor: float = FACTOR,
               min_history: int = MIN_HISTORY) -> Regression | None:
    """A Regression when the newest sample took > ``factor`` x the median of the earlier
    samples of its type (at least ``min_history`` of them), else None."""
    if not samples or samples[-1].seconds is None:
        return None
    newest = samples[-1]
    seconds = newest.seconds
    assert seconds is not None
    earlier = [s for s in samples[:-1] if s.type == newest.type and s.seconds is not None]
    if len(earlier) < min_history:
        return None
    typical = median(s.seconds for s in earlier if s.seconds is not None)
    if typical <= 0 or seconds <= factor * typical:
        return None
    stage, now, usual = _slowed_stage(newest, earlier)
    return Regression(backup_id=newest.backup_id, type=newest.type, seconds=_round(seconds),
                      median_seconds=_round(typical), ratio=_round(seconds / typical),
                      stage=stage, stage_seconds=now, stage_median_seconds=usual)


def _slowed_stage(newest: Sample, earlier: Sequence[Sample]
                  ) -> tuple[str | None, float | None, float | None]:
    """The stage whose time grew the most against its median in ``earlier``."""
    best: tuple[float, str, float, float] | None = None
    for stage in sorted(newest.stage_seconds):
        before = [s.stage_seconds.get(stage, 0.0) for s in earlier]
        usual = median(before)
        growth = newest.stage_seconds[stage] - usual
        if best is None or growth > best[0]:
            best = (growth, stage, newest.stage_seconds[stage], usual)
    if best is None:
        return None, None, None
    return best[1], _round(best[2]), _round(best[3])


def _most_common(counter: Counter[str]) -> str | None:
    if not counter:
        return None
    top = max(counter.values())
    return min(name for name, n in counter.items() if n == top)  # ties: alphabetical, stable


def _round(value: float) -> float:
    return round(value, 3)
