"""Retention selection: decide which backups a prune keeps (shared by both planes).

The CLI's ``prune`` passes manifests; the operator passes what its Backup objects record
(:class:`Candidate`). Anything with a ``backup_id``, ``parent_id``, ``started_at`` and
``engine_meta`` will do (:class:`Backupish`).

Semantics follow restic's ``forget``, with borg's rule that only periods which *have* backups
count toward keep_daily/weekly/monthly/yearly:

* every rule is evaluated independently over all backups and the results are united, so a
  backup can carry several reasons ("keep-last 3", "daily 2026-11-26", ...);
* pinned backups are always kept;
* finally a dependency closure keeps every ancestor of a kept backup ("needed by <id>"),
  because an incremental or differential cannot be restored without its parents.

A backup's time is its ``started_at``: that is when the schedule fired and when logical dumps
take their snapshot, so a nightly backup that starts at 23:50 and ends after midnight belongs to
the day it was meant for. Pure logic: no storage, no clock (the caller passes ``now``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Protocol

from safehold.api.retention import RetentionPolicy, format_duration

#: ``engine_meta`` key marking a backup as pinned. Manifests are immutable once written, so
#: callers that track pins elsewhere (the Backup CR's ``spec.pinned``) pass ``pinned=`` instead.
PINNED_KEY = "pinned"
NOT_KEPT = "no rule keeps it"
NEWEST = "newest (a prune never deletes the last backup)"


class Backupish(Protocol):
    """What the selection reads of a backup (a Manifest has it; so does a Candidate)."""

    @property
    def backup_id(self) -> str: ...
    @property
    def parent_id(self) -> str | None: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def engine_meta(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Candidate:
    """A backup as the operator knows it from a Backup object's status."""

    backup_id: str
    parent_id: str | None
    started_at: datetime
    engine_meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The verdict on one backup, with every reason it is kept (or why it is not)."""

    backup_id: str
    keep: bool
    reasons: tuple[str, ...]


def _iso_week(t: datetime) -> str:
    year, week, _ = t.isocalendar()
    return f"{year:04d}-W{week:02d}"


_Limit = Callable[[RetentionPolicy], int | None]
_Period = Callable[[datetime], str]
_PERIODS: tuple[tuple[str, _Limit, _Period], ...] = (
    ("daily", lambda p: p.keep_daily, lambda t: f"{t.year:04d}-{t.month:02d}-{t.day:02d}"),
    ("weekly", lambda p: p.keep_weekly, _iso_week),
    ("monthly", lambda p: p.keep_monthly, lambda t: f"{t.year:04d}-{t.month:02d}"),
    ("yearly", lambda p: p.keep_yearly, lambda t: f"{t.year:04d}"),
)


def _time(backup: Backupish) -> datetime:
    if backup.started_at.tzinfo is None:
        raise ValueError(
            f"backup {backup.backup_id} has a naive started_at; manifests must carry a timezone"
        )
    return backup.started_at


def _by_rule(
    newest_first: Sequence[Backupish], policy: RetentionPolicy, now: datetime, tz: tzinfo
) -> dict[str, list[str]]:
    """Reasons from the policy's rules (before pins and dependencies), keyed by backup id."""
    reasons: dict[str, list[str]] = {b.backup_id: [] for b in newest_first}
    if policy.keep_last:
        for backup in newest_first[: policy.keep_last]:
            reasons[backup.backup_id].append(f"keep-last {policy.keep_last}")
    for rule, limit_of, period_of in _PERIODS:
        limit = limit_of(policy)
        if not limit:
            continue
        seen: set[str] = set()
        for backup in newest_first:
            period = period_of(_time(backup).astimezone(tz))
            if period in seen:
                continue
            seen.add(period)
            reasons[backup.backup_id].append(f"{rule} {period}")
            if len(seen) == limit:
                break
    if policy.max_age:
        cutoff = now - policy.max_age
        label = f"max-age {format_duration(policy.max_age)}"
        for backup in newest_first:
            if _time(backup) < cutoff:
                break
            reasons[backup.backup_id].append(label)
    return reasons


def select(
    backups: Sequence[Backupish],
    policy: RetentionPolicy,
    now: datetime,
    tz: tzinfo = UTC,
    *,
    pinned: Collection[str] = (),
) -> list[Decision]:
    """Decide for every backup whether a prune keeps it; one Decision each, oldest first.

    ``backups`` are the complete backups of one target (order does not matter). Calendar
    periods are computed in ``tz``; ``max_age`` keeps backups that are at most that old at
    ``now`` (inclusive). Pinned backups are those whose manifest has ``engine_meta["pinned"]``
    set to ``true`` plus the ids in ``pinned``. Ancestors of a kept backup are always kept, so
    a prune can never orphan an incremental or differential; and the newest backup is always
    kept, so a prune can never leave the target with none.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    duplicates = sorted(i for i, n in Counter(b.backup_id for b in backups).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate backup ids: {', '.join(duplicates)}")

    newest_first = sorted(backups, key=lambda b: (_time(b), b.backup_id), reverse=True)
    reasons = _by_rule(newest_first, policy, now, tz)
    if newest_first and not reasons[newest_first[0].backup_id]:
        # Only a max-age policy whose backups all went stale (say, backups failing for longer
        # than max-age) keeps nothing: a prune must never leave a target without a backup.
        reasons[newest_first[0].backup_id].append(NEWEST)
    for backup in newest_first:
        if backup.engine_meta.get(PINNED_KEY) is True or backup.backup_id in pinned:
            reasons[backup.backup_id].append("pinned")

    needed_by = _close_over_dependencies(newest_first, {i for i, r in reasons.items() if r})
    order = {b.backup_id: n for n, b in enumerate(reversed(newest_first))}
    decisions = []
    for backup in reversed(newest_first):
        own = reasons[backup.backup_id]
        dependants = sorted(needed_by.get(backup.backup_id, ()), key=order.__getitem__)
        why = (*own, *(f"needed by {d}" for d in dependants))
        decisions.append(Decision(backup.backup_id, bool(why), why or (NOT_KEPT,)))
    return decisions


def _close_over_dependencies(
    backups: Iterable[Backupish], kept_by_rule: Collection[str]
) -> dict[str, set[str]]:
    """Map each ancestor of a kept backup to the kept backups whose ``parent_id`` names it.

    Every backup names at most one parent (an incremental its predecessor, a differential its
    chain's full), so walking ``parent_id`` up from each kept backup reaches everything a restore
    of it needs. Parents absent from ``backups`` (incomplete, or already gone) end the walk:
    there is nothing left to keep.
    """
    by_id = {b.backup_id: b for b in backups}
    kept = set(kept_by_rule)
    needed_by: dict[str, set[str]] = {}
    for start in kept_by_rule:
        child = by_id[start]
        while (parent := child.parent_id) is not None and parent in by_id:
            needed_by.setdefault(parent, set()).add(child.backup_id)
            if parent in kept:  # its own ancestors are (being) walked already
                break
            kept.add(parent)
            child = by_id[parent]
    return needed_by


def selected_for_deletion(decisions: Iterable[Decision]) -> list[str]:
    """Ids of the backups a prune removes, in decision order (oldest first)."""
    return [d.backup_id for d in decisions if not d.keep]
