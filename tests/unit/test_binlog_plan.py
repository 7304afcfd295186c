"""MariaDB binlog planning (gaps, window) and the replay safety scanner, without a server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from safehold.engines.mysql import binlog_replay
from safehold.engines.mysql.binlog_plan import plan
from safehold.engines.recovery import BrokenChain, LogPiece, OutsideWindow, RecoveryTarget

T = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def piece(file: str, start: int, end: int, *, ends_file: bool = False, time: str = ""
          ) -> LogPiece:
    stop = {"binlog_file": file, "binlog_pos": str(end)} | ({"time": time} if time else {})
    return LogPiece(source="test", name=file, start={"binlog_file": file,
                                                     "binlog_pos": str(start)},
                    end=stop, opener=lambda: iter(()), meta={"ends_file": ends_file})


START = {"binlog_file": "binlog.000001", "binlog_pos": "500"}


def test_plan_follows_files_and_stops_at_the_target() -> None:
    a = piece("binlog.000001", 400, 900, ends_file=True)
    b = piece("binlog.000002", 4, 700, time="2026-12-02T12:00:05+00:00")
    c = piece("binlog.000002", 700, 900, time="2026-12-02T12:00:09+00:00")
    to = RecoveryTarget(position="binlog.000002:600")
    assert plan(START, [c, b, a], to) == [a, b]
    assert plan(START, [a, b, c], RecoveryTarget(time=T.replace(second=8))) == [a, b, c]


def test_gap_and_window_end_are_named() -> None:
    a = piece("binlog.000001", 400, 900, ends_file=True)
    c = piece("binlog.000002", 700, 900)
    with pytest.raises(BrokenChain, match=r"nothing in the repository holds binlog.000002 from"
                       r" position 4"):
        plan(START, [a, c], RecoveryTarget(position="binlog.000002:800"))
    with pytest.raises(OutsideWindow, match=r"the logs end at binlog\.000001:900"):
        plan(START, [piece("binlog.000001", 400, 900)],
             RecoveryTarget(position="binlog.000003:4"))


TEXT = """# at 972
#261202 18:47:58 server id 1  end_log_pos 1069 CRC32 0x2e 	Query	thread_id=9	exec_time=0
use `{db}`/*!*/;
SET TIMESTAMP=1796237278/*!*/;
/*!\\C utf8mb3 *//*!*/;
{sql}
/*!*/;
"""


@pytest.mark.parametrize(("db", "sql", "dest", "problem"), [
    ("d", "CREATE TABLE o.y (a INT)", "d", "touches database o"),
    ("d", "INSERT INTO t SELECT * FROM `other`.`t2`", "d", "touches database other"),
    ("d", "ALTER TABLE d.t ADD c INT", "e", "names database d itself"),
    ("d", "DROP DATABASE d", "e", "names database d itself"),
    ("o", "UPDATE d.t SET a = 1", "d", "run in database o that names d"),
    ("d", "ALTER TABLE t ADD c INT", "e", None),
    ("d", "UPDATE t SET t.a = 1", "d", None),
    ("o", "CREATE TABLE x (a INT)", "e", None),
])
def test_scanner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: str, sql: str,
                 dest: str, problem: str | None) -> None:
    class Done:
        stdout = TEXT.format(db=db, sql=sql).encode()

    monkeypatch.setattr(binlog_replay, "_run_tool", lambda args: Done())
    if problem is None:
        binlog_replay.check_safe([tmp_path / "f"], 4, None, "d", dest)
    else:
        with pytest.raises(binlog_replay.UnsafeReplay, match=problem):
            binlog_replay.check_safe([tmp_path / "f"], 4, None, "d", dest)


def test_a_file_that_ends_at_the_start_position_moves_on() -> None:
    # a server crash leaves a file without rotate event: the incremental's piece is empty
    empty = piece("binlog.000001", 500, 500, ends_file=True)
    nxt = piece("binlog.000002", 4, 90)
    assert plan(START, [empty, nxt], RecoveryTarget(position="binlog.000002:90")) == [nxt]
