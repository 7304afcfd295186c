"""The privileges binlog work needs, beyond a full backup's and restore's (``safehold check``,
and a restore that replays the log checks them before it changes anything).

* Incrementals, differentials, ``safehold binlog stream``: REPLICATION SLAVE (to read the
  log) and BINLOG MONITOR (its position and files).
* Replaying the log: BINLOG REPLAY (row events and the session variables the log sets) and
  BINLOG ADMIN (``sql_log_bin=0``, so the replay is not logged again); SUPER covers both.
"""

from __future__ import annotations

from typing import Any

from safehold.engines.base import PermissionDenied
from safehold.engines.mysql.privileges import Grants

READ = ("REPLICATION SLAVE", "BINLOG MONITOR")
REPLAY = ("BINLOG REPLAY", "BINLOG ADMIN")


def _missing(conn: Any, needed: tuple[str, ...]) -> list[str]:
    have = Grants(conn).global_
    if "SUPER" in have:
        return []
    # MariaDB 10.5+ also calls REPLICATION SLAVE "REPLICATION REPLICA"
    aliases = {"REPLICATION SLAVE": {"REPLICATION SLAVE", "REPLICATION REPLICA"},
               "BINLOG MONITOR": {"BINLOG MONITOR", "REPLICATION CLIENT"}}
    return [p for p in needed if not (aliases.get(p, {p}) & have)]


def backup_notes(conn: Any) -> list[str]:
    from safehold.engines.mysql.conn import run

    if not int(run(conn, "SELECT @@log_bin")[0][0] or 0):
        return ["the binary log is off: full backups work, but incremental and differential"
                " backups and point-in-time restore need it (start mariadbd with --log-bin and"
                " --server-id)"]
    missing = _missing(conn, READ)
    if not missing:
        return []
    return [f"{', '.join(missing)} not granted: full backups work, but incremental and"
            " differential backups and `safehold binlog stream` read the binary log:"
            f" GRANT {', '.join(missing)} ON *.* to the backup user"]


def _scratch_problems(conn: Any, db: str) -> list[str]:
    from safehold.engines.mysql.binlog_swap import scratch_name
    from safehold.engines.mysql.privileges import restore_problems
    from safehold.engines.mysql.swap import stage_name

    scratch = scratch_name(db)
    return restore_problems(conn, scratch, stage_name(scratch))


def restore_notes(conn: Any, db: str) -> list[str]:
    notes = []
    missing = _missing(conn, REPLAY)
    if missing:
        notes.append(f"{', '.join(missing)} not granted: a full backup restores, but restoring"
                     " an incremental chain or to a point in time replays the binary log with"
                     f" sql_log_bin=0: GRANT {', '.join(missing)} ON *.* to the restore user")
    scratch = _scratch_problems(conn, db)
    if scratch:
        notes.append("restoring an incremental chain or to a point in time works in a scratch"
                      f" database first: {'; '.join(scratch)} (GRANT ALL ON"
                      f" `{db.replace('_', chr(92) + '_')}\\_safehold\\_%`.* covers it)")
    return notes


def require_replay(conn: Any, db: str) -> None:
    missing = _missing(conn, REPLAY)
    if missing:
        raise PermissionDenied(
            f"replaying the binary log needs {', '.join(missing)} (or SUPER), which the restore"
            f" user lacks: GRANT {', '.join(missing)} ON *.* to it; nothing was changed")
    scratch = _scratch_problems(conn, db)
    if scratch:
        raise PermissionDenied(
            "restoring an incremental chain or to a point in time works in a scratch database"
            f" first: {'; '.join(scratch)}; nothing was changed")
