"""The oplog's pure parts: update translation, the replay pre-check, piece planning, the
streamer's segment cutting. (Real servers: tests/integration/test_mongodb_oplog*.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from safehold.engines.base import UnsupportedError
from safehold.engines.mongodb import oplog, oplog_plan, oplog_replay, oplog_stream
from safehold.engines.mongodb.names import InvalidName
from safehold.engines.recovery import BrokenChain, LogPiece, OutsideWindow, RecoveryTarget


def raw(doc: dict[str, Any]) -> RawBSONDocument:
    return RawBSONDocument(bson.encode(doc), oplog.RAW)


def test_updates_translate_to_what_the_server_applies() -> None:
    assert oplog_replay.update_of({"a": 1, "_id": 3}, "e") == ("replace", {"a": 1, "_id": 3})
    # FerretDB: $set of the whole document (with _id, which no MongoDB update may set)
    assert oplog_replay.update_of({"$v": 1, "$set": {"_id": 2, "z": 1}}, "e") == (
        "replace", {"_id": 2, "z": 1})
    assert oplog_replay.update_of({"$v": 1, "$set": {"a": 1}, "$unset": {"b": True}}, "e") == (
        "update", {"$set": {"a": 1}, "$unset": {"b": True}})
    diff = {"$v": 2, "diff": {"u": {"a": 1}, "i": {"n": 2}, "d": {"gone": False},
                              "sx": {"u": {"y": 3}, "sz": {"d": {"w": False}}}}}
    assert oplog_replay.update_of(diff, "e") == (
        "update", {"$set": {"a": 1, "n": 2, "x.y": 3}, "$unset": {"gone": "", "x.z.w": ""}})


@pytest.mark.parametrize("o", [
    {"$v": 2, "diff": {"sarr": {"a": True, "u0": 1}}},  # array element diffs
    {"$v": 1, "$inc": {"a": 1}},
    {"$v": 2, "diff": {"weird": {}}},
])
def test_updates_that_cannot_be_replayed_are_refused(o: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedError, match="entry 7"):
        oplog_replay.update_of(o, "entry 7")


def entry(op: str, ns: str, o: dict[str, Any], t: int = 100, i: int = 1) -> RawBSONDocument:
    return raw({"op": op, "ns": ns, "o": o, "ts": Timestamp(t, i), "o2": {"_id": 1}})


def test_check_refuses_what_cannot_be_rewritten_and_names_it() -> None:
    ok = [entry("i", "app.t", {"_id": 1}), entry("n", "admin.$cmd", {}),
          entry("c", "app.$cmd", {"create": "new"}),
          entry("c", "admin.$cmd", {"applyOps": [{"op": "d", "ns": "app.t", "o": {"_id": 1}},
                                                 {"op": "i", "ns": "other.t", "o": {}}]})]
    assert oplog_replay.check(ok, "app", "dest") == 3  # the other database's op is skipped
    for bad, why in (
            (entry("c", "app.$cmd", {"renameCollection": "app.t", "to": "other.t"}),
             "'renameCollection' cannot be rewritten"),
            (entry("c", "app.$cmd", {"dropDatabase": 1}), "'dropDatabase' cannot be rewritten"),
            (entry("x", "app.t", {}), "unknown oplog operation 'x'")):
        with pytest.raises(UnsupportedError, match=why):
            oplog_replay.check([bad], "app", "dest")
    rename = entry("c", "app.$cmd", {"renameCollection": "app.t"}, t=200)
    assert oplog_replay.check([rename], "app", "dest", Timestamp(0, 0), Timestamp(199, 9)) == 0
    with pytest.raises(InvalidName, match="system collections"):
        oplog_replay.check([entry("i", "app.system.views", {"_id": 1})], "app", "dest")


def piece(start: str, end: str, source: str = "archive") -> LogPiece:
    def nothing() -> Iterator[bytes]:
        return iter(())

    return LogPiece(source=source, name=start, start={"oplog_ts": start},
                    end={"oplog_ts": end}, opener=nothing)


def test_plan_takes_the_furthest_piece_and_names_gaps_and_the_window() -> None:
    full = {"oplog_ts": "105:0", "replay_from": "100:0", "time": "x", "set": "rs0"}
    a, b, c = piece("100:0", "110:0"), piece("100:0", "120:0", "backup X"), piece("120:0", "130:5")
    assert oplog_plan.plan(full, [a, b, c], Timestamp(125, 0)) == [b, c]
    assert oplog_plan.plan(full, [a], Timestamp(101, 0)) == [a]  # at least the full's own end
    # the rest of the target's second where the repository has it
    assert oplog_plan.plan(full, [a, c, b], Timestamp(105, 0), Timestamp(120, 9)) == [b, c]
    with pytest.raises(BrokenChain, match=r"after 110:0 .* up to 115:0"):
        oplog_plan.plan(full, [a, piece("115:0", "140:0")], Timestamp(130, 0))
    with pytest.raises(OutsideWindow, match="ends at 110:0"):
        oplog_plan.plan(full, [a], Timestamp(130, 0))


def test_times_are_whole_seconds() -> None:
    to = RecoveryTarget(time=datetime(2026, 1, 1, 0, 0, 5, 900000, tzinfo=UTC))
    assert oplog_plan.limit(to) == Timestamp(int(to.time.timestamp()), oplog.MAX_INC)  # type: ignore[union-attr]
    assert oplog_plan.reached({"time": "2026-01-01T00:00:05+00:00"}, to)
    assert not oplog_plan.reached({"time": "2026-01-01T00:00:06+00:00"}, to)
    with pytest.raises(OutsideWindow, match="--to-time"):
        oplog_plan.reached({}, RecoveryTarget(gtid="0-1-1"))


def test_the_follower_cuts_segments_that_meet_and_never_split_a_busy_second() -> None:
    got: list[oplog_stream.Segment] = []
    stored = [entry("i", "app.t", {"_id": n}, t, n) for n, t in enumerate(
        [10, 10, 11, 11, 11, 12], start=1)] + [entry("i", "other.t", {}, 13, 9)]
    follower = oplog_stream.Follower(client=None, database="app",  # type: ignore[arg-type]
                                     last=Timestamp(9, 0), archive=got.append, max_entries=4)
    follower.check_wrap = lambda: None  # type: ignore[method-assign]
    original = oplog.entries_since
    try:
        oplog.entries_since = lambda _c, after, **_: iter(  # type: ignore[assignment]
            [e for e in stored if e["ts"] > after])
        assert follower.poll() == 7
        assert follower.poll() == 0  # quiet: the rest is archived
    finally:
        oplog.entries_since = original  # type: ignore[assignment]
    assert [(s.start, s.end, len(s.entries)) for s in got] == [
        (Timestamp(9, 0), Timestamp(10, 2), 2),  # full: cut where second 11 began
        (Timestamp(10, 2), Timestamp(11, 5), 3),  # full again: second 11 whole, 12 waits
        (Timestamp(11, 5), Timestamp(13, 9), 1)]  # quiet; the other database's entry: its
    assert [s.name for s in got] == sorted(s.name for s in got)  # position only
