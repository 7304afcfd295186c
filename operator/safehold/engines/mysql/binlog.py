"""The MariaDB binary log as Safehold stores it: positions, the server's state, raw files.

A position is ``{"binlog_file": F, "binlog_pos": P, "gtid": G, "server_id": S, "time": T}``
(what a backup records at its start and end). Files are fetched from the server with
``mariadb-binlog --read-from-remote-server --raw`` (byte-identical to the server's files) and
stored in pieces: a piece is the file's header (the magic number and the format description
event, which a reader needs to decode anything) followed by the bytes of the file from an
offset on. Rebuilt on restore at their original offsets (the bytes before the offset are a hole
that is never read), so ``mariadb-binlog --start-position`` works on them as on the server's
files. An incremental of a few rows therefore stores a few KiB, whatever the file's size.
"""

from __future__ import annotations

import contextlib
import logging
import re
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safehold.engines.base import EngineError, PermissionDenied, UnsupportedError
from safehold.engines.mysql import tools
from safehold.engines.mysql.conn import Target, run

log = logging.getLogger(__name__)
MAGIC = b"\xfebin"
_FILE = re.compile(r"^(?P<base>[A-Za-z0-9._-]+)\.(?P<seq>\d{6,})$")
TOOL = "mariadb-binlog"


class BinlogUnavailable(EngineError):
    """The binary log is off, or the server no longer has the files a backup needs."""


@dataclass(frozen=True, order=True)
class Pos:
    """A binlog position, ordered by file sequence number, then offset."""

    seq: int
    pos: int
    file: str

    @classmethod
    def of(cls, file: str, pos: int | str) -> Pos:
        return cls(file_seq(file), int(pos), file)

    @classmethod
    def parse(cls, text: str) -> Pos:
        """``FILE:POS`` (``--to-position``)."""
        file, sep, pos = text.rpartition(":")
        if not sep or not _FILE.match(file) or not pos.isdigit():
            raise ValueError(f"invalid binlog position {text!r}: use FILE:POS, e.g."
                             " binlog.000007:1234 (SHOW BINARY LOGS names the files)")
        return cls.of(file, pos)

    @classmethod
    def from_record(cls, position: Mapping[str, str]) -> Pos:
        return cls.of(position["binlog_file"], position["binlog_pos"])

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"


def file_seq(name: str) -> int:
    match = _FILE.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a binlog file name (base.NNNNNN)")
    return int(match["seq"])


def next_file(name: str) -> str:
    match = _FILE.match(name)
    assert match
    width = len(match["seq"])
    return f"{match['base']}.{int(match['seq']) + 1:0{width}d}"


def header_length(data: bytes) -> int:
    """Bytes of the magic number and the format description event that opens every file."""
    if len(data) < 4 + 19 or not data.startswith(MAGIC):
        raise EngineError("not a binlog file (no magic number): the fetched file is damaged")
    size: int = struct.unpack_from("<I", data, 4 + 9)[0]
    return 4 + size


def parse_gtid(text: str) -> dict[int, tuple[int, int]]:
    """``0-1-100,1-2-7`` -> {domain: (server, seq)}."""
    out: dict[int, tuple[int, int]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        bits = part.split("-")
        if len(bits) != 3 or not all(b.isdigit() for b in bits):
            raise ValueError(f"invalid GTID {part!r}: use domain-server-sequence, e.g. 0-1-42")
        out[int(bits[0])] = (int(bits[1]), int(bits[2]))
    return out


@dataclass(frozen=True)
class ServerLog:
    """The server's binary log right now."""

    server_id: int
    end: Pos
    gtid: str
    files: dict[str, int]  # name -> size, oldest first

    def position(self, time: str) -> dict[str, str]:
        return {"binlog_file": self.end.file, "binlog_pos": str(self.end.pos),
                "gtid": self.gtid, "server_id": str(self.server_id), "time": time}


def server_log(conn: Any) -> ServerLog:
    """Current end, server id and files (needs BINLOG MONITOR, or REPLICATION CLIENT)."""
    try:
        status = run(conn, "SHOW MASTER STATUS")
        files = {str(n): int(s) for n, s, *_ in run(conn, "SHOW BINARY LOGS")}
    except PermissionDenied as exc:
        raise PermissionDenied(f"{exc}; incremental backups read the binary log's position:"
                               " GRANT BINLOG MONITOR ON *.* to the backup user") from None
    except EngineError as exc:
        if "not using binary logging" in str(exc).lower():
            raise BinlogUnavailable("the server's binary log is off: incremental backups and"
                                    " point-in-time restore need it (start mariadbd with"
                                    " --log-bin and --server-id)") from None
        raise
    if not status:
        raise BinlogUnavailable("the server's binary log is off: incremental backups and"
                                " point-in-time restore need it (--log-bin, --server-id)")
    file, pos = str(status[0][0]), int(status[0][1])
    server_id = int(run(conn, "SELECT @@server_id")[0][0])
    gtid = str(run(conn, "SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))[0][0] or "")
    return ServerLog(server_id, Pos.of(file, pos), gtid, files)


def server_now(conn: Any) -> str:
    """The server's clock (UTC, ISO) — binlog times are the server's."""
    return str(run(conn, "SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%f+00:00')"
                   )[0][0])


@contextlib.contextmanager
def fetched(target: Target, first: str, last: str) -> Iterator[dict[str, Path]]:
    """The server's binlog files ``first`` .. ``last`` (raw, byte-identical) in a private
    temporary directory, removed afterwards. Needs REPLICATION SLAVE."""
    with tempfile.TemporaryDirectory(prefix="safehold-binlog-") as tmp:
        cmd = ["--read-from-remote-server", "--raw", "--to-last-log",
               f"--result-file={tmp}/", first]
        try:
            proc = tools.start(TOOL, target, cmd, charset=False, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise missing_tool() from None
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise classify_tool_error(err.decode(errors="replace"), first)
        files: dict[str, Path] = {}
        seq, name = file_seq(first), first
        while seq <= file_seq(last):
            path = Path(tmp) / name
            if not path.exists():
                raise BinlogUnavailable(f"{TOOL} did not return {name}: the server's binary log"
                                        " changed while it was read; retry the backup")
            files[name] = path
            name, seq = next_file(name), seq + 1
        yield files


def classify_tool_error(err: str, first: str) -> EngineError:
    text = err.strip().splitlines()[-1] if err.strip() else "no message"
    low = err.lower()
    if "could not find first log file" in low or "binary log is not open" in low:
        return BinlogUnavailable(
            f"the server no longer has binlog {first} (purged or reset: {text}); the chain"
            " cannot continue: take a full backup (--type full)")
    if "access denied" in low or "privilege" in low:
        return PermissionDenied(f"{TOOL} was refused ({text}): reading the binary log needs"
                                " GRANT REPLICATION SLAVE ON *.* to the backup user")
    return EngineError(f"{TOOL} failed: {text}")


def missing_tool(tool: str = TOOL) -> UnsupportedError:
    return UnsupportedError(f"{tool} is not installed: binlog backups and point-in-time restore"
                            " need the MariaDB client tools (Debian: mariadb-client)")
