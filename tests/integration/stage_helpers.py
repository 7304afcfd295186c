"""Checks of the per-stage figures (safehold.pipeline.profile) a real run reports.

No check depends on speed: a stage's thread-seconds are bounded by the wall time times the
threads that run it, whatever the machine's load.
"""

from __future__ import annotations

from typing import Any

from safehold.pipeline.profile import BACKUP_STAGES, RESTORE_STAGES, WAITING
from safehold.pipeline.stream import default_workers

# streaming threads run read, hash, write and waiting; the codec pools the rest
STREAMING = ("read", "hash", "write", WAITING)


def pg_streams(jobs: int) -> int:
    """The streams of a PostgreSQL backup or restore on ``jobs``: the data archives ``jobs``
    at a time and, beside them, the two schema archives (a backup dumps them from the start,
    a restore loads the pre-data and spools the post-data while it lists the data ones). Two
    were counted once; a backup's read seconds then came to 0.43 s in a 0.198 s run."""
    return jobs + 2


def check_figures(fig: dict[str, Any], operation: str, streams: int, *,
                  encrypted: bool = True) -> None:
    """``encrypted``: the backup taken or restored was. An encrypted object is checked by its
    tags, under ``encrypt`` and ``decrypt``: only unencrypted ones are hashed, when written and
    when read."""
    names = BACKUP_STAGES if operation == "backup" else RESTORE_STAGES
    stages = fig["stage_seconds"]
    assert set(stages) == {*names, WAITING}
    assert all(v >= 0 for v in stages.values()), stages
    assert set(fig["stage_cpu_seconds"]) == set(stages)
    assert all(v >= 0 for v in fig["stage_cpu_seconds"].values()), fig
    wall = fig["wall_seconds"]
    assert wall > 0
    # each streaming thread's stages are disjoint slices of the run (ms rounding aside)
    assert sum(stages[k] for k in STREAMING) <= wall * streams + 0.01, fig
    codec = sum(v for k, v in stages.items() if k not in STREAMING)
    assert 0 < codec <= wall * streams * default_workers() + 0.01, fig
    assert stages["read"] > 0 and stages["write"] > 0, fig
    if encrypted:
        sealing = "encrypt" if operation == "backup" else "decrypt"
        assert stages["hash"] == 0 and stages[sealing] > 0, fig
    else:
        assert stages["hash"] > 0, fig
    assert fig["bottleneck"] in names
    assert stages[fig["bottleneck"]] == max(v for k, v in stages.items() if k != WAITING)
    assert fig["summary"].startswith(f"bottleneck: {names[fig['bottleneck']]} (")
    assert fig["cpu_seconds"] >= 0 and fig["cores"] >= 1
    assert fig["cores_busy"] is None or 0 <= fig["cores_busy"] <= 1
