"""Which oplog pieces lead from a backup to a recovery target, and what is missing.

Pieces come from incremental/differential backups (their ``oplog.bson``) and from the log
archive (``safehold oplog stream``'s segments). A piece covers the entries after its ``start``
up to and including its ``end`` (oplog timestamps). From the full's ``replay_from``, the plan
repeatedly takes the piece that covers the current position and reaches furthest, until the
target is reached. A position no piece covers is a gap (BrokenChain names it); a target beyond
every piece is outside the window (OutsideWindow). Overlaps are harmless: the replay skips
entries at or before what it has applied.

Oplog times are whole seconds: a restore to time T applies every entry of T's second and before.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from datetime import datetime

from bson.timestamp import Timestamp

from safehold.api.manifest import Manifest
from safehold.engines.base import ChainReader
from safehold.engines.mongodb import oplog
from safehold.engines.mongodb.oplog_backup import OBJECT
from safehold.engines.recovery import BrokenChain, LogPiece, OutsideWindow, RecoveryTarget


def _time(position: Mapping[str, str]) -> datetime | None:
    text = position.get("time")
    return datetime.fromisoformat(text) if text else None


def _require_time(to: RecoveryTarget) -> datetime:
    if to.time is None:
        raise OutsideWindow(f"MongoDB restores to a time (--to-time), not to {to.describe()}")
    return to.time


def limit(to: RecoveryTarget) -> Timestamp:
    """The newest oplog timestamp a restore to ``to`` applies (the end of T's second)."""
    return Timestamp(math.floor(_require_time(to).timestamp()), oplog.MAX_INC)


def reached(position: Mapping[str, str], to: RecoveryTarget) -> bool:
    """Whether the state at ``position`` (a backup's end) is at or before ``to``."""
    when = _require_time(to)
    t = _time(position)
    return t is not None and t <= when


def _ts(position: Mapping[str, str]) -> Timestamp:
    return oplog.parse_ts(position["oplog_ts"])


def plan(start: Mapping[str, str], pieces: Sequence[LogPiece], need: Timestamp,
         limit: Timestamp | None = None) -> list[LogPiece]:
    """The pieces from ``start`` (a full's end position) until one reaches ``need``, then
    those that continue up to ``limit`` where there are any (the rest of the target's
    second: its entries are applied when the repository has them)."""
    cur = oplog.replay_start(start)
    need = max(need, _ts(start))  # the full is consistent only once its own end is replayed
    out: list[LogPiece] = []
    while cur < need:
        covering = [p for p in pieces if _ts(p.start) <= cur < _ts(p.end)]
        if not covering:
            later = sorted(_ts(p.start) for p in pieces if _ts(p.start) > cur)
            if not later:
                raise OutsideWindow(
                    f"the oplog in the repository ends at {oplog.ts_text(cur)}"
                    f" ({oplog.ts_time(cur).isoformat()}), before the target: nothing newer is"
                    " archived or backed up (is `safehold oplog stream` running? an"
                    " incremental backup also extends the window)")
            raise BrokenChain(
                f"gap in the oplog: nothing in the repository holds the entries after"
                f" {oplog.ts_text(cur)} ({oplog.ts_time(cur).isoformat()}) up to"
                f" {oplog.ts_text(later[0])} ({oplog.ts_time(later[0]).isoformat()}) (the oplog"
                " wrapped before they were archived); restore to an earlier point, or take a"
                " new full backup")
        best = max(covering, key=lambda p: _ts(p.end))
        out.append(best)
        cur = _ts(best.end)
    while limit is not None and cur < limit:
        covering = [p for p in pieces if _ts(p.start) <= cur < _ts(p.end)]
        if not covering:
            break
        best = max(covering, key=lambda p: _ts(p.end))
        out.append(best)
        cur = _ts(best.end)
    return out


def backup_pieces(manifest: Manifest, reader: ChainReader) -> list[LogPiece]:
    """The oplog piece an incremental or differential backup holds."""
    pieces = []
    for obj in manifest.objects:
        if obj.meta.get("kind") != "oplog" or obj.name != OBJECT:
            continue
        end = {**(manifest.end_position or {}), "oplog_ts": str(obj.meta["to"])}
        pieces.append(LogPiece(
            source=f"backup {manifest.backup_id}", name=OBJECT,
            start={"oplog_ts": str(obj.meta["from"])}, end=end,
            opener=functools.partial(reader.open, manifest, obj.name),
            last_time=_time(end), meta={"set": (manifest.end_position or {}).get("set", "")}))
    return pieces


def check_chain(chain: Sequence[Manifest]) -> None:
    """Refuse a chain whose links do not meet: each backup starts where it had to (its parent's
    replay point, a differential its full's), on the same replica set."""
    root_set = (chain[0].end_position or {}).get("set") if chain else None
    for i, (parent, child) in enumerate(itertools.pairwise(chain), start=1):
        base = chain[0] if child.type == "differential" else parent
        b_end, c_start = base.end_position or {}, child.start_position or {}
        if not b_end.get("oplog_ts"):
            raise BrokenChain(f"backup {base.backup_id} recorded no oplog position: nothing"
                              " can chain onto it")
        expected = oplog.ts_text(oplog.replay_start(b_end))
        if c_start.get("oplog_ts") != expected:
            raise BrokenChain(
                f"backup {child.backup_id} starts at oplog {c_start.get('oplog_ts')} but"
                f" {base.backup_id} (link {i} of the chain) ends at {expected}: the chain has"
                " a gap")
        if c_start.get("set") != root_set:
            raise BrokenChain(f"backup {child.backup_id} was taken from replica set"
                              f" {c_start.get('set')!r}, its full {chain[0].backup_id} from"
                              f" {root_set!r}: not one oplog")


def stream_name(position: Mapping[str, str]) -> str | None:
    """The log archive stream of a replica set: its name."""
    return position.get("set") or None
