"""The cron/time-slot module: DST-correct slots, due/skip decisions, deterministic names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from safehold.api.errors import UsageError
from safehold.api.slots import Cron, CronError, due, run_name, stamp, strongest, zone


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def walk(cron: Cron, start: datetime, n: int) -> list[datetime]:
    out, t = [], start
    for _ in range(n):
        t = cron.next_after(t)
        out.append(t)
    return out


def local(times: list[datetime], cron: Cron) -> list[str]:
    return [t.astimezone(cron.tz).strftime("%m-%d %H:%M%z") for t in times]


# ---------------------------------------------------------------- DST, Europe/Berlin


def test_daily_in_the_spring_gap_fires_once_at_the_jump() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")
    got = walk(cron, utc(2026, 3, 27, 12), 4)
    assert local(got, cron) == ["03-28 02:30+0100", "03-29 03:00+0200", "03-30 02:30+0200",
                                "03-31 02:30+0200"]
    assert got[1] == utc(2026, 3, 29, 1)


def test_daily_in_the_autumn_overlap_fires_once_at_the_first_occurrence() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")
    got = walk(cron, utc(2026, 10, 23, 12), 3)
    assert local(got, cron) == ["10-24 02:30+0200", "10-25 02:30+0200", "10-26 02:30+0100"]
    # asked from inside the second 02:30, the next run is the next day's
    assert cron.next_after(utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 26, 1, 30)


def test_hourly_across_both_transitions_never_repeats_a_slot() -> None:
    cron = Cron.parse("0 * * * *", "Europe/Berlin")
    spring = walk(cron, utc(2026, 3, 28, 23), 3)
    assert local(spring, cron) == ["03-29 01:00+0100", "03-29 03:00+0200", "03-29 04:00+0200"]
    autumn = walk(cron, utc(2026, 10, 24, 22, 30), 4)
    assert local(autumn, cron) == ["10-25 01:00+0200", "10-25 02:00+0200", "10-25 03:00+0100",
                                   "10-25 04:00+0100"]
    assert len(set(spring + autumn)) == 7


def test_latest_at_or_before_inside_the_repeated_hour() -> None:
    cron = Cron.parse("0 * * * *", "Europe/Berlin")
    # 01:30 UTC is the second 02:30 local: the latest slot is the (first) 02:00, at 00:00 UTC
    assert cron.latest_at_or_before(utc(2026, 10, 25, 1, 30)) == utc(2026, 10, 25, 0)
    assert cron.latest_at_or_before(utc(2026, 10, 25, 2)) == utc(2026, 10, 25, 2)


def test_time_zone_shifts_the_wall_clock() -> None:
    assert Cron.parse("0 2 * * *").next_after(utc(2026, 12, 1)) == utc(2026, 12, 1, 2)
    ny = Cron.parse("0 2 * * *", "America/New_York")
    assert ny.next_after(utc(2026, 12, 1)) == utc(2026, 12, 1, 7)


# ---------------------------------------------------------------- expressions


@pytest.mark.parametrize(("expr", "first"), [
    ("@daily", utc(2026, 12, 3)),
    ("@midnight", utc(2026, 12, 3)),
    ("@hourly", utc(2026, 12, 2, 11)),
    ("@weekly", utc(2026, 12, 6)),  # Sunday
    ("@monthly", utc(2027, 1, 1)),
    ("@YEARLY", utc(2027, 1, 1)),
    ("0  */4 * * *", utc(2026, 12, 2, 12)),
    ("0 2 * * 1-6", utc(2026, 12, 3, 2)),
])
def test_macros_and_fields(expr: str, first: datetime) -> None:
    assert Cron.parse(expr).next_after(utc(2026, 12, 2, 10, 30)) == first


@pytest.mark.parametrize(("expr", "words"), [
    ("", "0 field"),
    ("0 2 * *", "4 field"),
    ("0 0 2 * * *", "6 field"),
    ("61 * * * *", "invalid cron expression"),
    ("0 2 * * mon-fri-sat", "invalid cron expression"),
    ("@fortnightly", "unknown cron macro"),
    ("0 0 30 2 *", "never fires"),
])
def test_bad_cron_names_the_problem_and_an_example(expr: str, words: str) -> None:
    with pytest.raises(CronError) as err:
        Cron.parse(expr)
    assert words in err.value.message and repr(expr) in err.value.message
    assert err.value.hint and "0 2 * * *" in err.value.hint
    assert isinstance(err.value, UsageError) and isinstance(err.value, ValueError)


def test_bad_time_zone_names_it() -> None:
    with pytest.raises(CronError, match="unknown time zone 'Europe/Berln'") as err:
        zone("Europe/Berln")
    assert "Europe/Berlin" in (err.value.hint or "")
    with pytest.raises(CronError):
        zone("../../etc/passwd")
    assert zone(None).key == "UTC"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Cron.parse("@daily").next_after(datetime(2026, 12, 2))


# ---------------------------------------------------------------- due


CREATED = utc(2026, 12, 1, 9, 0)
HOURLY = Cron.parse("0 * * * *")


def test_nothing_is_due_before_the_first_slot_after_creation() -> None:
    d = due(HOURLY, utc(2026, 12, 1, 9, 59), None, CREATED)
    assert (d.action, d.slot, d.next_time) == ("wait", None, utc(2026, 12, 1, 10))


def test_a_slot_at_creation_time_is_not_run() -> None:
    d = due(HOURLY, utc(2026, 12, 1, 9, 30), None, CREATED)
    assert d.action == "wait"


def test_the_slot_is_due_once() -> None:
    now = utc(2026, 12, 1, 10, 0, 5)
    d = due(HOURLY, now, None, CREATED)
    assert (d.action, d.slot, d.passed_over) == ("run", utc(2026, 12, 1, 10), 0)
    assert d.late_by == timedelta(seconds=5)
    again = due(HOURLY, now + timedelta(seconds=30), d.slot, CREATED)
    assert again.action == "wait" and again.next_time == utc(2026, 12, 1, 11)


def test_after_an_outage_only_the_latest_slot_runs() -> None:
    d = due(HOURLY, utc(2026, 12, 1, 13, 10), utc(2026, 12, 1, 10), CREATED)
    assert (d.action, d.slot, d.passed_over) == ("run", utc(2026, 12, 1, 13), 2)


def test_past_the_starting_deadline_the_slot_is_skipped() -> None:
    limit = timedelta(seconds=600)
    late = due(HOURLY, utc(2026, 12, 1, 10, 10, 1), None, CREATED, limit)
    assert (late.action, late.slot) == ("skip", utc(2026, 12, 1, 10))
    assert late.late_by == timedelta(seconds=601)
    in_time = due(HOURLY, utc(2026, 12, 1, 10, 10), None, CREATED, limit)
    assert in_time.action == "run"
    zero = due(HOURLY, utc(2026, 12, 1, 10, 0, 1), None, CREATED, timedelta(0))
    assert zero.action == "skip"


def test_a_year_of_missed_minutes_is_counted_boundedly() -> None:
    every = Cron.parse("* * * * *")
    d = due(every, utc(2027, 12, 1), utc(2026, 12, 1), CREATED)
    assert d.action == "run" and d.slot == utc(2027, 12, 1) and d.passed_over == 1000


# ---------------------------------------------------------------- names


def test_run_names_are_deterministic_and_valid() -> None:
    slot = utc(2026, 12, 2, 4)
    assert run_name("orders", "incremental", slot) == "orders-incremental-20261202t0400"
    assert stamp(slot.astimezone(zone("Europe/Berlin"))) == "20261202t0400"
    long = run_name("a" * 253, "full", slot)
    assert len(long) == 253 and long.endswith("-full-20261202t0400")
    assert run_name("orders", "full", slot) != run_name("orders", "full", slot
                                                        + timedelta(minutes=1))


def test_strongest_type_covers_the_others() -> None:
    assert strongest(["incremental", "full", "differential"]) == "full"
    assert strongest(["incremental", "differential"]) == "differential"
