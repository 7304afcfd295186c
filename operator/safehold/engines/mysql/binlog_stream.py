"""Pulling the server's binary log continuously into a local spool (``safehold binlog stream``).

``mariadb-binlog --read-from-remote-server --raw --stop-never`` writes the server's files into
the spool byte for byte, following rotations. A file is complete once the next one appears in
the spool (the tool closes a file after its rotate event, before it opens the next). The
caller archives complete files and deletes them from the spool; where to start again after a
restart comes from the archive (the file after the newest archived one), never from the spool,
so a lost spool loses nothing the server still has.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safehold.engines.mysql import binlog, tools
from safehold.engines.mysql.binlog import file_seq
from safehold.engines.mysql.conn import Target, connect, run

log = logging.getLogger(__name__)
_HEADER = struct.Struct("<IBIII")  # timestamp, type, server id, size, next position (+ flags)


@dataclass(frozen=True)
class FileFacts:
    """What the archive records about one complete binlog file."""

    name: str
    size: int
    server_id: int
    first_time: datetime | None
    last_time: datetime | None


def file_facts(path: Path) -> FileFacts:
    """Walk the event headers: size, server id and the times of the first and last event."""
    data = path.read_bytes()
    binlog.header_length(data)  # refuses a file that is not a binlog
    pos, first, last, server = 4, None, None, 0
    while pos + _HEADER.size + 2 <= len(data):
        stamp, _kind, server_id, size, _next = _HEADER.unpack_from(data, pos)
        if size < _HEADER.size or pos + size > len(data):
            break
        if stamp:
            first = stamp if first is None else first
            last = stamp
        server = server or server_id
        pos += size

    def when(t: int | None) -> datetime | None:
        return datetime.fromtimestamp(t, UTC) if t else None

    return FileFacts(path.name, len(data), server, when(first), when(last))


def start_file(target: Target, after: str | None, *, since: str | None = None
               ) -> tuple[str, int, list[str]]:
    """Where to start pulling: the file after ``after`` (the newest archived), else ``since``
    (where the newest backup ended) if the server still has it, else the server's current
    file. Also the server id, and the files the server no longer has that a
    gap-free archive would need (purged before they were archived)."""
    conn = connect(target)
    try:
        state = binlog.server_log(conn)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    files = list(state.files)
    if after is None:
        if since is not None and since in state.files:
            return since, state.server_id, []
        return state.end.file, state.server_id, []
    wanted = binlog.next_file(after)
    if not files or file_seq(wanted) >= file_seq(files[0]):
        return wanted, state.server_id, []
    missing: list[str] = []
    name = wanted
    while file_seq(name) < file_seq(files[0]) and len(missing) < 1000:
        missing.append(name)
        name = binlog.next_file(name)
    return files[0], state.server_id, missing


class Puller:
    """The ``mariadb-binlog --stop-never`` child writing into ``spool``."""

    def __init__(self, target: Target, spool: Path, first: str, *, replica_id: int) -> None:
        self.spool = spool
        spool.mkdir(parents=True, exist_ok=True)
        args = ["--read-from-remote-server", "--raw", "--stop-never",
                f"--stop-never-slave-server-id={replica_id}",
                f"--result-file={spool}/", first]
        try:
            self.proc: subprocess.Popen[bytes] = tools.start(
                binlog.TOOL, target, args, charset=False, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise binlog.missing_tool() from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def error(self) -> str:
        if self.proc.stderr is None:
            return ""
        with contextlib.suppress(Exception):
            return self.proc.stderr.read().decode(errors="replace").strip()[-500:]
        return ""

    def complete_files(self) -> list[Path]:
        """Spool files that have a successor (so are closed), oldest first."""
        files = sorted((p for p in self.spool.iterdir() if _is_binlog(p.name)),
                       key=lambda p: file_seq(p.name))
        return files[:-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _is_binlog(name: str) -> bool:
    try:
        file_seq(name)
    except ValueError:
        return False
    return True


def flush_logs(target: Target) -> None:
    """Close the server's current file (FLUSH BINARY LOGS; needs RELOAD): what is in it gets
    archived now rather than when the file fills up."""
    conn = connect(target)
    try:
        run(conn, "FLUSH BINARY LOGS")
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def gtid_at(target: Target, name: str, pos: int) -> str:
    conn: Any = connect(target)
    try:
        return str(run(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (name, pos))[0][0] or "")
    except Exception:  # a purged file: the GTID is a nicety, not a requirement
        return ""
    finally:
        with contextlib.suppress(Exception):
            conn.close()
