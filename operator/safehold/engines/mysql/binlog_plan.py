"""Which binlog pieces lead from a backup's end to a recovery target, and what is missing.

Pieces come from incremental/differential backups (``log.<file>`` objects) and from the log
archive (whole files). From the chain root's end position, the plan repeatedly takes the piece
that covers the current position and reaches furthest, moves on to the next file where a piece
ended its file, and stops once the target is reached. A position no piece covers is a gap
(BrokenChain names it); a target beyond every piece is outside the window (OutsideWindow).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime

from safehold.api.manifest import Manifest
from safehold.engines.base import ChainReader
from safehold.engines.mysql.binlog import Pos, next_file, parse_gtid
from safehold.engines.recovery import BrokenChain, LogPiece, OutsideWindow, RecoveryTarget


def end_time(position: Mapping[str, str]) -> datetime | None:
    text = position.get("time")
    return datetime.fromisoformat(text) if text else None


def reached(position: Mapping[str, str], to: RecoveryTarget) -> bool:
    """Whether the state at ``position`` is at or before ``to``."""
    if to.time is not None:
        t = end_time(position)
        return t is not None and t <= to.time
    if to.position is not None:
        return Pos.from_record(position) <= Pos.parse(to.position)
    if to.gtid is not None:
        have = parse_gtid(position.get("gtid", ""))
        for domain, (_, seq) in parse_gtid(to.gtid).items():
            if domain in have and have[domain][1] > seq:
                return False
        return True
    raise OutsideWindow(f"MariaDB restores to a time, a GTID or a position, not to {to.describe()}")


def done(position: Mapping[str, str], to: RecoveryTarget) -> bool:
    """Whether the logs up to ``position`` reach at least as far as ``to``."""
    if to.time is not None:
        t = end_time(position)
        return t is not None and t >= to.time
    if to.position is not None:
        return Pos.from_record(position) >= Pos.parse(to.position)
    if to.gtid is not None:
        have = parse_gtid(position.get("gtid", ""))
        return all(domain in have and have[domain][1] >= seq
                   for domain, (_, seq) in parse_gtid(to.gtid).items())
    return False


def _pos(record: Mapping[str, str]) -> Pos:
    return Pos.of(record["binlog_file"], record["binlog_pos"])


def plan(start: Mapping[str, str], pieces: Sequence[LogPiece], to: RecoveryTarget
         ) -> list[LogPiece]:
    """The pieces from ``start`` (a full's end) up to ``to``, in replay order."""
    cur = _pos(start)
    out: list[LogPiece] = []
    file_ended = False
    if done(start, to):
        return out
    while True:
        covering = [p for p in pieces if p.start["binlog_file"] == cur.file
                    and int(p.start["binlog_pos"]) <= cur.pos < int(p.end["binlog_pos"])]
        if not covering and not file_ended:  # a piece may say the file ends right here
            file_ended = any(p.start["binlog_file"] == cur.file and p.meta.get("ends_file")
                             and int(p.end["binlog_pos"]) == cur.pos for p in pieces)
        if not covering and file_ended:
            cur, file_ended = Pos.of(next_file(cur.file), 4), False
            continue
        if not covering:
            newest = max((_pos(p.end) for p in pieces), default=None)
            if newest is None or newest <= cur:
                last = out[-1].end if out else start
                raise OutsideWindow(
                    f"the logs end at {cur} ({last.get('time') or 'time unknown'}), before"
                    f" {to.describe()}: nothing newer is archived or backed up (is `safehold"
                    " binlog stream` running? an incremental backup also extends the window)")
            raise BrokenChain(
                f"gap in the binary log: nothing in the repository holds {cur.file} from"
                f" position {cur.pos} on (the next piece starts at"
                f" {min((_pos(p.start) for p in pieces if _pos(p.start) > cur), default='?')});"
                " restore to an earlier point, or take a new full backup")
        best = max(covering, key=lambda p: (int(p.end["binlog_pos"]), p.meta.get("ends_file",
                                                                                   False)))
        out.append(best)
        cur = _pos(best.end)
        file_ended = bool(best.meta.get("ends_file"))
        if done(best.end, to):
            return out


def backup_pieces(manifest: Manifest, reader: ChainReader) -> list[LogPiece]:
    """The binlog pieces an incremental or differential backup holds."""
    pieces = []
    for obj in manifest.objects:
        meta = obj.meta
        if meta.get("kind") != "binlog":
            continue
        end = {"binlog_file": meta["file"], "binlog_pos": str(meta["to"])}
        if not meta.get("ends_file") and manifest.end_position:
            end = {**manifest.end_position, **end}
        pieces.append(LogPiece(
            source=f"backup {manifest.backup_id}", name=str(meta["file"]),
            start={"binlog_file": meta["file"], "binlog_pos": str(meta["from"])}, end=end,
            opener=functools.partial(reader.open, manifest, obj.name),
            meta={"offset": int(meta["offset"]), "header": int(meta["header"]),
                  "ends_file": bool(meta.get("ends_file")),
                  "server_id": (manifest.end_position or {}).get("server_id", "")}))
    return pieces


def check_chain(chain: Sequence[Manifest]) -> None:
    """Refuse a chain whose links do not meet: each backup starts where its parent ended, on
    the same server."""
    for parent, child in itertools.pairwise(chain):
        p_end, c_start = parent.end_position or {}, child.start_position or {}
        if not p_end.get("binlog_file"):
            raise BrokenChain(f"backup {parent.backup_id} recorded no binlog position (the"
                              " binary log was off): nothing can chain onto it")
        if (p_end.get("binlog_file"), p_end.get("binlog_pos")) != (
                c_start.get("binlog_file"), c_start.get("binlog_pos")):
            raise BrokenChain(
                f"backup {child.backup_id} starts at {c_start.get('binlog_file')}:"
                f"{c_start.get('binlog_pos')} but its parent {parent.backup_id} ends at"
                f" {p_end.get('binlog_file')}:{p_end.get('binlog_pos')}: the chain has a gap")
        ids = {p_end.get("server_id"), (child.end_position or {}).get("server_id")} - {None, ""}
        if len(ids) > 1:
            raise BrokenChain(f"backup {child.backup_id} was taken from server id"
                              f" {(child.end_position or {}).get('server_id')}, its parent"
                              f" {parent.backup_id} from {p_end.get('server_id')}: not one log")


def stream_name(position: Mapping[str, str]) -> str | None:
    """The log archive stream of a server: ``server-<id>``."""
    server = position.get("server_id")
    return f"server-{server}" if server else None
