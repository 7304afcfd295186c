"""Incremental and differential MariaDB backups: the binary log since the parent's end.

An incremental stores the binlog from its parent's end position (a full records the position of
its snapshot) to the server's position now; a differential from the chain's full's. Each binlog
file touched becomes one object ``log.<file>`` (see :mod:`.binlog` for the piece format), so the
backup's size follows what was written to the server since, not the database's size. The binary
log is the server's: changes to other databases on the server are in it too (restore filters
them out).

Refused before anything is stored, with what to do: a server without a binary log, another
server than the parent's (server id), a parent position the server no longer has (purged), a
position behind the parent's (the log was reset).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from safehold.engines.base import BackupOutcome, BackupRequest, BackupSink, UnsupportedError
from safehold.engines.mysql import binlog
from safehold.engines.mysql.binlog import BinlogUnavailable, Pos
from safehold.engines.mysql.conn import Target, connect
from safehold.engines.mysql.server import server_info
from safehold.engines.recovery import BrokenChain

BLOCK = 1 << 20


def backup(target: Target, request: BackupRequest, sink: BackupSink) -> BackupOutcome:
    parent = request.chain[0] if request.type == "differential" else request.chain[-1]
    start = parent.end_position or {}
    if not start.get("binlog_file"):
        raise BrokenChain(
            f"backup {parent.backup_id} recorded no binlog position (the binary log was off"
            " when it was taken): an incremental cannot start from it; take a full backup")
    conn = connect(target)
    try:
        info = server_info(conn)
        if info.flavor != "mariadb":
            raise UnsupportedError("binlog incrementals are made for MariaDB only; on MySQL"
                                   " take full backups")
        state = binlog.server_log(conn)
        now = binlog.server_now(conn)  # after the position: every event before it is older
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    begin = Pos.from_record(start)
    if start.get("server_id") and start["server_id"] != str(state.server_id):
        raise BrokenChain(
            f"the server's id is {state.server_id}, but {parent.backup_id} was taken from server"
            f" id {start['server_id']}: this is another server's log; take a full backup")
    if begin.file not in state.files:
        raise BinlogUnavailable(
            f"the server no longer has binlog {begin.file}, where {parent.backup_id} ended"
            f" (purged; it has {', '.join(list(state.files)[:3]) or 'none'}…): the chain cannot"
            " continue; take a full backup (and run `safehold binlog stream` to keep every"
            " file)")
    if state.end < begin:
        raise BrokenChain(f"the server's binlog is at {state.end}, behind {begin} where"
                          f" {parent.backup_id} ended: the log was reset; take a full backup")
    objects: list[str] = []
    if state.end > begin:
        with binlog.fetched(target, begin.file, state.end.file) as files:
            for name, path in files.items():
                first, last = name == begin.file, name == state.end.file
                size = path.stat().st_size
                to = state.end.pos if last else size
                if size < to:
                    raise BinlogUnavailable(f"{name} from the server has {size} bytes, fewer"
                                            f" than its position {to}; retry the backup")
                header = path.open("rb").read(4096)
                head = binlog.header_length(header)
                offset = begin.pos if first else head
                record = sink.put(f"log.{name}", _piece(path, head, offset, to), meta={
                    "kind": "binlog", "file": name, "from": begin.pos if first else 4,
                    "to": to, "offset": offset, "header": head, "ends_file": not last})
                objects.append(record.name)
    return BackupOutcome(
        server_version=info.version, start_position=dict(start),
        end_position=state.position(now),
        engine_meta={"database": target.database, "flavor": info.flavor,
                     "binlog_objects": objects, "log_from": str(begin),
                     "log_to": str(state.end)},
        tools={binlog.TOOL: "client"})


def _piece(path: Path, head: int, offset: int, to: int) -> Iterator[bytes]:
    """The file's header, then its bytes from ``offset`` to ``to``."""
    with path.open("rb") as f:
        yield f.read(head)
        f.seek(offset)
        left = to - offset
        while left > 0:
            block = f.read(min(BLOCK, left))
            if not block:
                raise BinlogUnavailable(f"{path.name} ended early while it was stored")
            left -= len(block)
            yield block
