"""safehold.api.manifest.stage_timings: a manifest's recorded per-stage timings, or None."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from safehold.api.manifest import PIPELINE_KEY, Manifest, stage_timings

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def manifest(**meta: Any) -> Manifest:
    return Manifest(backup_id="b", target="app", engine="sqlite", type="full", chain_id="b",
                    started_at=NOW, finished_at=NOW, compression="zstd:3", chunk_size=1,
                    engine_meta=meta)


def test_recorded_timings_are_read_back() -> None:
    t = stage_timings(manifest(pipeline={
        "stage_seconds": {"read": 1.5, "compress": 2.0, "waiting": 0.1},
        "bottleneck": "compress", "cores_busy": 0.97, "wall_seconds": 3.2, "later": "ignored"}))
    assert t is not None
    assert (t.bottleneck, t.cores_busy, t.wall_seconds) == ("compress", 0.97, 3.2)
    assert t.stage_seconds == {"read": 1.5, "compress": 2.0, "waiting": 0.1}


def test_a_manifest_from_before_the_field_has_none() -> None:
    assert stage_timings(manifest(page_size=4096)) is None


@pytest.mark.parametrize("value", [
    "compress",  # not a mapping
    {"bottleneck": "<b>x</b>"},  # markup or escapes for a stage name
    {"bottleneck": "\x1b[31mred"},
    {"stage_seconds": {"Read Me": 1.0}},
    {"stage_seconds": {"read": -1.0}},
    {"stage_seconds": {"read": "fast"}},
    {"cores_busy": 1.5},
    {"wall_seconds": -2},
])
def test_malformed_timings_count_as_none(value: Any) -> None:
    assert stage_timings(manifest(**{PIPELINE_KEY: value})) is None


def test_the_timings_are_in_the_signed_bytes() -> None:
    a = manifest(pipeline={"bottleneck": "read"}).signing_bytes()
    b = manifest(pipeline={"bottleneck": "write"}).signing_bytes()
    assert a != b and b'"pipeline"' in a
