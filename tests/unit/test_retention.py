"""Retention: the policy model, duration parsing and the keep/delete selection."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from safehold.api.manifest import BackupType, Manifest
from safehold.api.retention import RetentionPolicy, format_duration, parse_duration
from safehold.api.retention_select import NEWEST, Decision, select, selected_for_deletion

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def backup(
    when: datetime,
    type: BackupType = "full",
    parent: Manifest | None = None,
    *,
    bid: str | None = None,
    **engine_meta: object,
) -> Manifest:
    """A manifest as the runner would write it, reduced to what retention reads."""
    backup_id = bid or when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    if type == "full":
        chain_id = backup_id
    else:
        assert parent is not None, "incrementals and differentials need a parent"
        chain_id = parent.chain_id
    return Manifest(
        backup_id=backup_id,
        target="db",
        engine="sqlite",
        type=type,
        parent_id=parent.backup_id if parent else None,
        chain_id=chain_id,
        started_at=when,
        finished_at=when + timedelta(minutes=20),
        compression="zstd:3",
        chunk_size=4 << 20,
        engine_meta=dict(engine_meta),
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def verdicts(decisions: list[Decision]) -> dict[str, tuple[str, ...]]:
    """backup id -> reasons, for kept backups only."""
    return {d.backup_id: d.reasons for d in decisions if d.keep}


def daily(days: int, start: str = "2026-11-20T02:00") -> list[Manifest]:
    return [backup(at(start) + timedelta(days=n)) for n in range(days)]


# --- policy model -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        ("90m", timedelta(minutes=90)),
        (" 7d ", timedelta(days=7)),
        ("0h", timedelta(0)),
    ],
)
def test_parse_duration_accepts_one_number_and_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "30", "d", "30D", "1.5d", "-3d", "30 d", "1mo", "1y", "1d12h", "P30D"]
)
def test_parse_duration_rejects_other_forms_naming_the_accepted_ones(text: str) -> None:
    with pytest.raises(ValueError, match=r"m \(minutes\), h \(hours\), d \(days\) or w \(weeks\)"):
        parse_duration(text)


def test_parse_duration_rejects_overflow_clearly() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_duration("99999999999w")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=30), "30d"),
        (timedelta(weeks=2), "14d"),
        (timedelta(hours=36), "36h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=90), "90s"),
    ],
)
def test_format_duration_uses_the_largest_exact_unit(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


def test_policy_reads_camel_case_and_round_trips_max_age_as_text() -> None:
    policy = RetentionPolicy.model_validate({"keepLast": 3, "keepWeekly": 4, "maxAge": "30d"})
    assert (policy.keep_last, policy.keep_weekly, policy.max_age) == (3, 4, timedelta(days=30))
    spec = policy.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert spec == {"keepLast": 3, "keepWeekly": 4, "maxAge": "30d"}
    assert RetentionPolicy.model_validate(spec) == policy


def test_policy_accepts_python_names_and_timedeltas() -> None:
    policy = RetentionPolicy(keep_daily=7, max_age=timedelta(hours=12))
    assert policy.keep_daily == 7
    assert policy.max_age == timedelta(hours=12)


def test_policy_schema_describes_max_age_as_a_duration_string() -> None:
    schema = RetentionPolicy.model_json_schema(by_alias=True)
    max_age = schema["properties"]["maxAge"]["anyOf"][0]
    assert max_age == {"type": "string", "pattern": "^[0-9]+[mhdw]$"}


@pytest.mark.parametrize("spec", [{}, {"keepLast": 0, "keepDaily": 0}, {"maxAge": "0d"}])
def test_policy_without_any_rule_is_rejected(spec: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="with none, prune would delete everything"):
        RetentionPolicy.model_validate(spec)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"keepDaily": -1}, "greater than or equal to 0"),
        ({"keepLast": 1, "maxAge": timedelta(days=-1)}, "max_age must not be negative"),
        ({"keepLast": 1, "maxAge": "30 days"}, "invalid duration"),
        ({"keepLast": 1, "keepHourly": 24}, "Extra inputs are not permitted"),
    ],
)
def test_policy_rejects_invalid_values(spec: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        RetentionPolicy.model_validate(spec)


# --- single rules -------------------------------------------------------------------------------


def test_empty_input_gives_no_decisions() -> None:
    assert select([], RetentionPolicy(keep_last=3), NOW) == []


def test_keep_last_keeps_the_n_newest_and_explains_the_rest() -> None:
    backups = daily(5)
    decisions = select(backups, RetentionPolicy(keep_last=3), NOW)
    assert [d.backup_id for d in decisions] == [b.backup_id for b in backups]
    assert verdicts(decisions) == {b.backup_id: ("keep-last 3",) for b in backups[2:]}
    assert [d.reasons for d in decisions[:2]] == [("no rule keeps it",)] * 2
    assert selected_for_deletion(decisions) == [b.backup_id for b in backups[:2]]


def test_keep_last_beyond_the_count_keeps_everything() -> None:
    decisions = select(daily(2), RetentionPolicy(keep_last=10), NOW)
    assert all(d.keep for d in decisions)


def test_keep_daily_keeps_the_newest_per_day_and_skips_days_without_backups() -> None:
    early, late, gap_morning, gap_evening, newest = (
        backup(at("2026-11-20T01:00")),
        backup(at("2026-11-20T13:00")),
        backup(at("2026-11-23T01:00")),
        backup(at("2026-11-23T13:00")),
        backup(at("2026-11-26T01:00")),
    )
    decisions = select(
        [early, late, gap_morning, gap_evening, newest], RetentionPolicy(keep_daily=3), NOW
    )
    assert verdicts(decisions) == {
        late.backup_id: ("daily 2026-11-20",),
        gap_evening.backup_id: ("daily 2026-11-23",),
        newest.backup_id: ("daily 2026-11-26",),
    }


def test_keep_monthly_counts_only_months_with_backups() -> None:
    aug, sep, nov_1, nov_20 = (
        backup(at(t)) for t in ("2026-08-15", "2026-09-30", "2026-11-01", "2026-11-20")
    )
    decisions = select([aug, sep, nov_1, nov_20], RetentionPolicy(keep_monthly=2), NOW)
    assert verdicts(decisions) == {
        sep.backup_id: ("monthly 2026-09",),
        nov_20.backup_id: ("monthly 2026-11",),
    }


# 2026 starts on a Thursday, so it has an ISO week 53: Mon 2026-12-28 .. Sun 2027-01-03.
YEAR_END = [
    backup(at("2026-12-27T10:00")),  # Sunday, 2026-W52
    backup(at("2026-12-29T10:00")),  # 2026-W53
    backup(at("2027-01-02T10:00")),  # 2026-W53, but calendar year 2027
    backup(at("2027-01-05T10:00")),  # 2027-W01
]


def test_keep_weekly_uses_iso_weeks_across_the_year_boundary() -> None:
    w52, _, w53_in_2027, w01 = YEAR_END
    decisions = select(YEAR_END, RetentionPolicy(keep_weekly=3), at("2027-01-06"))
    assert verdicts(decisions) == {
        w52.backup_id: ("weekly 2026-W52",),
        w53_in_2027.backup_id: ("weekly 2026-W53",),
        w01.backup_id: ("weekly 2027-W01",),
    }


def test_keep_yearly_uses_calendar_years_not_iso_years() -> None:
    _, w53_in_2026, _, newest = YEAR_END
    decisions = select(YEAR_END, RetentionPolicy(keep_yearly=5), at("2027-01-06"))
    assert verdicts(decisions) == {
        w53_in_2026.backup_id: ("yearly 2026",),
        newest.backup_id: ("yearly 2027",),
    }


@pytest.mark.parametrize(
    ("tz", "kept"),
    [
        (UTC, {"20261125T120000Z": "2026-11-25", "20261126T220000Z": "2026-11-26"}),
        # New York evening: 02:00Z on the 26th is still the 25th there.
        (
            timezone(timedelta(hours=-5)),
            {"20261126T020000Z": "2026-11-25", "20261126T220000Z": "2026-11-26"},
        ),
        # Tokyo: 22:00Z on the 26th is already the 27th.
        (
            timezone(timedelta(hours=9)),
            {"20261126T020000Z": "2026-11-26", "20261126T220000Z": "2026-11-27"},
        ),
    ],
)
def test_daily_buckets_follow_the_time_zone(tz: timezone, kept: dict[str, str]) -> None:
    backups = [backup(at(t)) for t in ("2026-11-25T12:00", "2026-11-26T02:00", "2026-11-26T22:00")]
    decisions = select(backups, RetentionPolicy(keep_daily=2), NOW, tz)
    assert verdicts(decisions) == {bid: (f"daily {day}",) for bid, day in kept.items()}


def test_max_age_keeps_everything_at_most_that_old() -> None:
    too_old, at_cutoff, young = (
        backup(at(t)) for t in ("2026-11-27T11:59", "2026-11-27T12:00", "2026-11-30T11:00")
    )
    policy = RetentionPolicy.model_validate({"maxAge": "72h"})
    decisions = select([too_old, at_cutoff, young], policy, NOW)
    assert verdicts(decisions) == {
        at_cutoff.backup_id: ("max-age 3d",),
        young.backup_id: ("max-age 3d",),
    }


def test_a_stale_max_age_policy_still_keeps_the_newest_backup_and_its_chain() -> None:
    # backups stopped long ago: max-age alone would delete every one of them
    full = backup(at("2026-10-01T02:00"))
    incr = backup(at("2026-10-02T02:00"), "incremental", full)
    older = backup(at("2026-09-01T02:00"))
    decisions = select([older, full, incr], RetentionPolicy(max_age=timedelta(days=7)), NOW)
    assert verdicts(decisions) == {
        full.backup_id: (f"needed by {incr.backup_id}",),
        incr.backup_id: (NEWEST,),
    }


# --- combinations, pins, chains ---------------------------------------------------------------


def test_rules_combine_by_union_and_list_every_reason() -> None:
    backups = daily(4)
    policy = RetentionPolicy(keep_last=1, keep_daily=2, max_age=timedelta(days=7))
    decisions = select(backups, policy, at("2026-11-28T02:00"))
    assert verdicts(decisions) == {
        backups[3].backup_id: ("keep-last 1", "daily 2026-11-23", "max-age 7d"),
        backups[2].backup_id: ("daily 2026-11-22", "max-age 7d"),
        backups[1].backup_id: ("max-age 7d",),
    }


def test_pinned_backups_are_always_kept() -> None:
    old_pinned = backup(at("2026-01-01"), pinned=True)
    not_really = backup(at("2026-02-01"), pinned="yes")
    pinned_by_caller = backup(at("2026-03-01"))
    newest = backup(at("2026-11-01"))
    decisions = select(
        [old_pinned, not_really, pinned_by_caller, newest],
        RetentionPolicy(keep_last=1),
        NOW,
        pinned={pinned_by_caller.backup_id},
    )
    assert verdicts(decisions) == {
        old_pinned.backup_id: ("pinned",),
        pinned_by_caller.backup_id: ("pinned",),
        newest.backup_id: ("keep-last 1",),
    }


def test_a_kept_incremental_keeps_its_whole_chain() -> None:
    old_full = backup(at("2026-11-01"))
    old_incr = backup(at("2026-11-02"), "incremental", old_full)
    full = backup(at("2026-11-10"))
    incr1 = backup(at("2026-11-11"), "incremental", full)
    incr2 = backup(at("2026-11-12"), "incremental", incr1)
    decisions = select([old_full, old_incr, full, incr1, incr2], RetentionPolicy(keep_last=1), NOW)
    assert verdicts(decisions) == {
        full.backup_id: (f"needed by {incr1.backup_id}",),
        incr1.backup_id: (f"needed by {incr2.backup_id}",),
        incr2.backup_id: ("keep-last 1",),
    }
    assert selected_for_deletion(decisions) == [old_full.backup_id, old_incr.backup_id]


def test_a_kept_differential_keeps_only_its_full() -> None:
    full = backup(at("2026-11-10"))
    incr1 = backup(at("2026-11-11"), "incremental", full)
    incr2 = backup(at("2026-11-12"), "incremental", incr1)
    diff = backup(at("2026-11-13"), "differential", full)
    decisions = select([full, incr1, incr2, diff], RetentionPolicy(keep_last=1), NOW)
    assert verdicts(decisions) == {
        full.backup_id: (f"needed by {diff.backup_id}",),
        diff.backup_id: ("keep-last 1",),
    }
    assert selected_for_deletion(decisions) == [incr1.backup_id, incr2.backup_id]


def test_a_full_needed_by_several_dependants_names_each_in_backup_order() -> None:
    full = backup(at("2026-11-10"))
    incr = backup(at("2026-11-11"), "incremental", full, pinned=True)
    diff = backup(at("2026-11-13"), "differential", full)
    decisions = select([diff, incr, full], RetentionPolicy(keep_last=1, keep_monthly=1), NOW)
    assert verdicts(decisions) == {
        full.backup_id: (f"needed by {incr.backup_id}", f"needed by {diff.backup_id}"),
        incr.backup_id: ("pinned",),
        diff.backup_id: ("keep-last 1", "monthly 2026-11"),
    }


def test_a_parent_missing_from_the_input_is_not_an_error() -> None:
    orphan = backup(at("2026-11-11"), "incremental", backup(at("2026-11-10")))
    assert verdicts(select([orphan], RetentionPolicy(keep_last=1), NOW)) == {
        orphan.backup_id: ("keep-last 1",)
    }


def test_input_order_does_not_matter() -> None:
    backups = daily(6)
    policy = RetentionPolicy(keep_last=2, keep_weekly=2)
    shuffled = backups[1::2] + backups[-2::-2]
    assert sorted(b.backup_id for b in shuffled) == [b.backup_id for b in backups]
    assert select(shuffled, policy, NOW) == select(backups, policy, NOW)


@pytest.mark.parametrize(
    ("backups", "now", "error"),
    [
        (daily(1), datetime(2026, 11, 30), "now must be timezone-aware"),
        ([backup(datetime(2026, 11, 1))], NOW, "naive started_at"),
        (daily(1) + daily(2), NOW, "duplicate backup ids: 20261120T020000Z$"),
    ],
)
def test_invalid_input_is_rejected(backups: list[Manifest], now: datetime, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        select(backups, RetentionPolicy(keep_last=1), now)


# --- property: a prune never orphans a kept backup ----------------------------------------------


def random_history(rng: random.Random) -> list[Manifest]:
    """Chains as a scheduler makes them: fulls, incrementals on the previous, diffs on the full."""
    history: list[Manifest] = []
    full: Manifest | None = None
    when = at("2026-01-01")
    for _ in range(rng.randint(0, 40)):
        when += timedelta(hours=rng.randint(1, 60))
        roll = rng.random()
        if full is None or roll < 0.2:
            made = full = backup(when)
        elif roll < 0.6:
            made = backup(when, "incremental", history[-1])
        else:
            made = backup(when, "differential", full)
        history.append(made)
    return history


def random_policy(rng: random.Random) -> RetentionPolicy:
    counts = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
    rules: dict[str, object] = {name: rng.randint(0, 4) for name in rng.sample(counts, 2)}
    if rng.random() < 0.3:
        rules["max_age"] = timedelta(hours=rng.randint(1, 500))
    if not any(rules.values()):
        rules["keep_last"] = 1
    return RetentionPolicy.model_validate(rules)


@pytest.mark.parametrize("seed", range(300))
def test_no_kept_backup_has_a_deleted_ancestor(seed: int) -> None:
    rng = random.Random(seed)
    history = random_history(rng)
    policy = random_policy(rng)
    now = (history[-1].started_at if history else NOW) + timedelta(hours=rng.randint(0, 100))
    decisions = select(history, policy, now, timezone(timedelta(hours=rng.randint(-12, 12))))

    assert [d.backup_id for d in decisions] == [b.backup_id for b in history]
    by_id = {b.backup_id: b for b in history}
    kept = {d.backup_id for d in decisions if d.keep}
    for b in history:
        if b.backup_id in kept and b.parent_id is not None:
            assert b.parent_id in kept
            assert b.chain_id in kept
    if policy.keep_last:
        assert {b.backup_id for b in history[-policy.keep_last :]} <= kept
    for d in decisions:
        if not d.keep:
            assert d.reasons == ("no rule keeps it",)
        needed_by = [r.removeprefix("needed by ") for r in d.reasons if r.startswith("needed by")]
        for dependant in needed_by:  # every "needed by" names a kept direct dependant
            assert dependant in kept
            assert by_id[dependant].parent_id == d.backup_id
