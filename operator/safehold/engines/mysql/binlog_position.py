"""What a full backup adds to its recorded binlog position for the chains built on it: the
server id (a chain never mixes two servers' logs) and the server's clock right after the
snapshot was read (the full is a restore point at that time, never later)."""

from __future__ import annotations

import contextlib
import logging

from safehold.engines.base import BackupOutcome, EngineError
from safehold.engines.mysql import binlog
from safehold.engines.mysql.conn import Target, connect, run

log = logging.getLogger(__name__)


def stamped(target: Target, outcome: BackupOutcome) -> BackupOutcome:
    if not outcome.end_position:
        return outcome
    try:
        conn = connect(target)
        try:
            extra = {"server_id": str(run(conn, "SELECT @@server_id")[0][0]),
                     "time": binlog.server_now(conn)}
        finally:
            with contextlib.suppress(Exception):
                conn.close()
    except EngineError as exc:
        log.warning("could not stamp the backup's position with the server id and time (%s):"
                    " point-in-time restores cannot start from it", exc)
        return outcome
    outcome.end_position = {**outcome.end_position, **extra}
    outcome.start_position = {**(outcome.start_position or {}), "server_id": extra["server_id"]}
    return outcome
