"""safehold.api.trends: the rolling summary and the regression verdict (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.api.backup import BackupStatus
from safehold.api.result import PipelineFigures, TaskResult
from safehold.api.trends import Sample, TrendSummary, percentile, regression, summarize


def _s(seconds: float, type: Any = "full", stages: dict[str, float] | None = None,
       raw: int = 1000, stored: int = 250, bid: str | None = None) -> Sample:
    return Sample(backup_id=bid, type=type, seconds=seconds, raw_bytes=raw, stored_bytes=stored,
                  stage_seconds=stages or {})


def test_percentile_interpolates_and_refuses_nothing() -> None:
    assert percentile([4, 1, 3, 2], 0.5) == 2.5
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 0.95) == pytest.approx(10.5)
    assert percentile([7], 0.95) == 7
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_summary_counts_percentiles_ratio_and_bottleneck() -> None:
    samples = [
        _s(10, stages={"dump": 8, "upload": 2}),
        _s(20, stages={"dump": 5, "upload": 15}),
        _s(30, stages={"dump": 25, "upload": 5}, raw=3000, stored=250, bid="b3"),
    ]
    s = summarize(samples)
    assert s.count == 3 and s.last_backup_id == "b3"
    assert s.p50_duration_seconds == 20 and s.p95_duration_seconds == pytest.approx(29)
    # throughput from raw bytes / seconds: 100, 50, 100
    assert s.p50_throughput_bytes_per_second == 100
    assert s.compression_ratio == pytest.approx(5000 / 750, abs=1e-3)
    assert s.bottleneck_stage == "dump"  # the slowest stage in 2 of 3 backups
    assert s.regression is None
    assert s.condition()[0] == "False"


def test_summary_looks_only_at_the_window() -> None:
    samples = [_s(1000)] + [_s(10) for _ in range(20)]
    s = summarize(samples, window=20)
    assert s.count == 20 and s.p95_duration_seconds == 10


def test_empty_history_is_unknown_not_degraded() -> None:
    s = summarize([])
    assert s == TrendSummary() and s.condition()[:2] == ("Unknown", "NoBackups")


def test_regression_names_the_stage_that_slowed() -> None:
    history = [_s(10, stages={"dump": 6, "upload": 4}) for _ in range(4)]
    slow = _s(25, stages={"dump": 7, "upload": 18}, bid="slow")
    s = summarize([*history, slow])
    assert s.regression is not None
    r = s.regression
    assert (r.backup_id, r.stage, r.median_seconds, r.ratio) == ("slow", "upload", 10, 2.5)
    assert (r.stage_seconds, r.stage_median_seconds) == (18, 4)
    status, reason, message = s.condition()
    assert (status, reason) == ("True", "SlowerThanUsual")
    assert "stage upload slowed most" in message and "2.5x" in message


def test_exactly_twice_is_not_a_regression_and_types_are_compared_with_their_own() -> None:
    history = [_s(10) for _ in range(3)]
    assert regression([*history, _s(20)]) is None
    assert regression([*history, _s(20.1)]) is not None
    # a full after many fast incrementals is compared only with earlier fulls
    mixed = [_s(100), _s(100), _s(100)] + [_s(5, type="incremental") for _ in range(5)]
    assert regression([*mixed, _s(120)]) is None
    assert regression([*mixed, _s(5, type="incremental")]) is None
    assert regression([*mixed, _s(11, type="incremental")]) is not None


def test_too_little_history_or_no_timings_never_flags() -> None:
    assert regression([_s(1), _s(1), _s(100)]) is None  # only 2 earlier fulls
    r = regression([_s(1), _s(1), _s(1), _s(100)])
    assert r is not None and r.stage is None and "slowed most" not in r.message
    assert regression([_s(1), _s(1), _s(1), Sample(type="full")]) is None


def test_sample_from_a_completed_backup_status() -> None:
    status = BackupStatus.model_validate({
        "phase": "Completed", "backupId": "20261202T020000.000000Z", "type": "full",
        "durationSeconds": 4.0, "rawBytes": 400, "storedBytes": 100,
        "stageSeconds": {"dump": 3.0, "upload": 1.0},
    })
    s = Sample.from_backup(status)
    assert s.seconds == 4.0 and s.throughput == 100 and s.bottleneck == "dump"


def test_a_recorded_bottleneck_wins_and_waiting_is_never_one() -> None:
    # the run's own verdict (its manifest) over the longest stage
    assert Sample(stage_seconds={"read": 5, "write": 1}, bottleneck_stage="write").bottleneck \
        == "write"
    # without one, the longest stage that did work: waiting on another stage is not work
    assert Sample(stage_seconds={"read": 2, "compress": 3, "waiting": 9}).bottleneck \
        == "compress"
    assert Sample(stage_seconds={"waiting": 1}).bottleneck is None
    samples = [Sample(bottleneck_stage=b) for b in ("read", None, "compress", "read")]
    assert summarize(samples).bottleneck_stage == "read"


def test_a_sample_takes_the_pipeline_stages_of_a_status_that_has_them() -> None:
    status = BackupStatus.model_validate({
        "phase": "Completed", "backupId": "b", "type": "full", "durationSeconds": 9.0,
        "stageSeconds": {"open": 0.1, "backup": 8.9},  # the task's coarse stages
        "pipeline": {"stageSeconds": {"read": 1.0, "compress": 6.0, "write": 1.5,
                                      "waiting": 7.0},
                     "bottleneck": "compress", "coresBusy": 0.97},
    })
    s = Sample.from_backup(status)
    assert s.bottleneck == "compress" and s.cores_busy == 0.97
    assert s.stage_seconds["write"] == 1.5 and "backup" not in s.stage_seconds


def test_a_completed_status_keeps_the_runners_pipeline_figures() -> None:
    figures = PipelineFigures(stage_seconds={"read": 2.0, "write": 1.0}, bottleneck="read")
    result = TaskResult(kind="backup", phase="Completed", backup_id="b", pipeline=figures)
    status = BackupStatus().completed(result, 1)
    assert status.pipeline == figures
    assert Sample.from_backup(status).bottleneck == "read"
