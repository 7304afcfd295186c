"""The log streamers the operator can run (`safehold run-task` with a task of kind stream).

One line per engine: its streamer's task runner. The BackupTarget model allows
``pointInTime.enabled`` only for the engines listed in :data:`safehold.api.target.STREAMER_ENGINES`;
keep the two in step (tests/unit/test_streamers.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable

from safehold.api.errors import Unsupported
from safehold.api.task import StreamTask
from safehold.cli import binlog_cmds, oplog_cmds, streamer_status, wal_cmds
from safehold.pipeline.streamer_status import StatusBoard

STREAMERS: dict[str, Callable[[StreamTask, StatusBoard], None]] = {
    "mongodb": oplog_cmds.stream_task,
    "mysql": binlog_cmds.stream_task,
    "postgresql": wal_cmds.stream_task,
}


def run_stream_task(task: StreamTask) -> None:
    """Serve the status endpoint and stream until stopped (errors are reported and retried)."""
    engine = task.database.engine
    runner = STREAMERS.get(engine)
    if runner is None:
        raise Unsupported(f"no log streamer for the {engine} engine yet: point in time runs for"
                          f" {', '.join(sorted(STREAMERS))}",
                          hint="set the BackupTarget's pointInTime.enabled to false")
    with streamer_status.endpoint(task.status_port, task.status_address, task.retry_after,
                                  engine=engine, target=task.target) as ep:
        ep.run(lambda: runner(task, ep.board))
