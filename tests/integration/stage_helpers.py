"""Checks of the per-stage figures (safehold.pipeline.profile) a real run reports.

No check depends on speed: a stage's thread-seconds are bounded by the wall time times the
threads that run it, whatever the machine's load.
"""

from __future__ import annotations

from typing import Any

from safehold.pipeline.profile import BACKUP_STAGES, BY_TOOL, RESTORE_STAGES, WAITING
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
                  encrypted: bool = True, tool_stages: tuple[str, ...] = ()) -> None:
    """``encrypted``: the backup taken or restored was. An encrypted object is checked by its
    tags, under ``encrypt`` and ``decrypt``: only unencrypted ones are hashed, when written and
    when read. ``tool_stages``: the stages the engine's tools did (pg_dump compressing, its
    pg_restore decompressing), which the summary names with the stage that holds them."""
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
    assert fig["tool_stages"] == list(tool_stages), fig
    name = names[fig["bottleneck"]]
    inside = [names[s] for s in tool_stages if BY_TOOL[operation][s] == fig["bottleneck"]]
    if inside:
        name += f", with {' and '.join(inside)} inside the" \
                f" {'dump' if operation == 'backup' else 'restore'} tool"
    assert fig["summary"].startswith(f"bottleneck: {name} ("), fig
    assert fig["cpu_seconds"] >= 0 and fig["cores"] >= 1
    # the tools' CPU is part of the run's (each rounded to the millisecond)
    assert 0 <= fig["tool_cpu_seconds"] <= fig["cpu_seconds"] + 0.001, fig
    if tool_stages:
        assert fig["tool_cpu_seconds"] > 0, fig
    assert fig["cores_busy"] is None or 0 <= fig["cores_busy"] <= 1
