"""The times a WAL segment carries, from the server's clock in the replication messages
(walstream.Coverage), and the recoverable window they give (pipeline.pitr.window)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from safehold.engines.postgres.walstream import Coverage, server_time
from safehold.pipeline.pitr import segment_end

T0 = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
SEG = 16 << 20


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_caught_up_coverage_follows_the_servers_clock() -> None:
    cov = Coverage()
    cov.saw(SEG // 2, at(1))
    cov.saw(SEG, at(2))  # the server's WAL ended exactly at the segment's end
    cov.saw(SEG + 100, at(3))  # already in the next segment: not covered yet
    assert cov.archived_to(SEG) == at(2)
    assert cov.archived_to(2 * SEG) == at(3)


def test_a_streamer_catching_up_covers_nothing_new_until_it_reaches_the_servers_end() -> None:
    cov = Coverage()
    cov.saw(SEG, at(0))
    assert cov.archived_to(SEG) == at(0)
    # restarted an hour later, the server is 10 segments ahead: old WAL arrives "now"
    for i in range(1, 10):
        cov.saw(11 * SEG, at(3600 + i))
        assert cov.archived_to((i + 1) * SEG) == at(0)  # not the send time
    assert cov.archived_to(11 * SEG) == at(3609)  # caught up


def test_coverage_never_goes_back_and_no_message_means_no_time() -> None:
    cov = Coverage()
    assert cov.archived_to(SEG) is None
    cov.saw(SEG, at(5))
    cov.saw(SEG, at(4))  # an older clock reading for the same end
    assert cov.archived_to(SEG) == at(5)


def test_send_times_become_aware_utc() -> None:
    assert server_time(datetime(2026, 12, 3, 7, 0, tzinfo=timezone(timedelta(hours=1)))) == \
        at(0)
    assert server_time(datetime(2026, 12, 3, 6, 0)).tzinfo is not None  # naive: local time


def test_a_wal_segment_ends_the_window_at_its_coverage_not_its_last_byte() -> None:
    class Rec:
        def __init__(self, kind: str, meta: dict[str, str], last: datetime | None) -> None:
            self.kind, self.meta, self.last_time = kind, meta, last

    wal = Rec("wal", {"covered_until": at(10).isoformat()}, at(99))
    assert segment_end(wal) == at(10)  # type: ignore[arg-type]
    assert segment_end(Rec("wal", {}, at(99))) is None  # type: ignore[arg-type]
    assert segment_end(Rec("binlog", {}, at(99))) == at(99)  # type: ignore[arg-type]
