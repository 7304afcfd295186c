"""Cron time slots (pure): when a schedule fires, what is due now, and the names of its runs.

Shared by both planes: the operator's BackupSchedule reconciler and the standalone scheduler.
No clock and no I/O — every function takes ``now`` (timezone-aware), so tests pin time.

Semantics (documented in docs/operator.md, "Schedules"):

* A cron expression has five fields (minute hour day-of-month month day-of-week) or is one of
  ``@yearly @annually @monthly @weekly @daily @midnight @hourly``; it is matched against the
  wall clock of ``timeZone`` (UTC by default), parsed by croniter (day-of-month and day-of-week
  both restricted means either matches, as in Vixie cron).
* Daylight saving time: a wall time that does not exist (clocks jump forward, e.g. 02:30 on
  Europe/Berlin's spring day) fires once, at the instant of the jump (03:00 local); a wall time
  that occurs twice (clocks fall back) fires once, at its first occurrence. So a daily schedule
  fires exactly once every day, whatever the zone does.
* A slot is identified by its instant in UTC; a run's name is a pure function of schedule,
  type and slot, so creating it twice (an operator restarted between "create" and "record")
  finds the first one instead of making a second.
* :func:`due`: of the slots after the last recorded one (or after the schedule's creation) and
  at or before ``now``, only the latest runs — earlier ones are counted as skipped, never run
  late; with ``starting_deadline`` a latest slot older than that is skipped too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadCronError, CroniterBadDateError, CroniterError

from safehold.api.errors import UsageError

#: run types, strongest first: when several fire in one slot only the strongest runs
#: (a full covers a differential, which covers an incremental)
TYPES: tuple[str, ...] = ("full", "differential", "incremental")
MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                    "@hourly"})
#: at most this many earlier slots are counted (a schedule down for a year reports "1000+")
MAX_COUNTED = 1000
# how far past the wall clock a backwards search starts: larger than any UTC offset change
_MARGIN = timedelta(hours=4)
_EXAMPLE = "e.g. '0 2 * * *' (02:00 every day) or '@daily'"


class CronError(UsageError, ValueError):
    """A bad cron expression or time zone; the message names it and the accepted forms."""


def zone(name: str | None) -> ZoneInfo:
    """The IANA time zone ``name`` (UTC when unset); CronError names a bad one."""
    if name is None:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(
            f"unknown time zone {name!r}",
            hint="use an IANA name such as Europe/Berlin, America/New_York or UTC",
        ) from None


def _aware(t: datetime, what: str) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware, got {t.isoformat()}")
    return t.astimezone(UTC)


@dataclass(frozen=True)
class Cron:
    """A validated cron expression in a time zone; every instant it yields is in UTC."""

    expression: str
    tz: ZoneInfo

    @classmethod
    def parse(cls, expression: str, time_zone: str | None = None) -> Cron:
        """Validate ``expression`` (5 fields or a macro); CronError says what is wrong."""
        text = " ".join(expression.split())
        fields = text.split()
        if text.startswith("@"):
            if text.lower() not in MACROS:
                raise CronError(f"unknown cron macro {expression!r}",
                                hint=f"use one of {', '.join(sorted(MACROS))}, or five"
                                f" fields, {_EXAMPLE}")
            text = text.lower()
        elif len(fields) != 5:
            raise CronError(
                f"cron expression {expression!r} has {len(fields)} field(s), expected 5"
                " (minute hour day-of-month month day-of-week)", hint=_EXAMPLE)
        try:
            croniter(text, datetime(2000, 1, 1))
        except (CroniterBadCronError, CroniterError, ValueError, KeyError) as exc:
            raise CronError(f"invalid cron expression {expression!r}: {exc}",
                            hint=_EXAMPLE) from None
        cron = cls(text, zone(time_zone))
        try:  # "0 0 30 2 *" (30 February) parses but never fires
            croniter(text, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterBadDateError:
            raise CronError(f"cron expression {expression!r} never fires",
                            hint=_EXAMPLE) from None
        return cron

    # ------------------------------------------------------------------ instants

    def instant(self, wall: datetime) -> datetime:
        """The UTC instant a (naive) wall time of this zone fires at (see the module notes)."""
        first = wall.replace(tzinfo=self.tz, fold=0)
        utc = first.astimezone(UTC)
        if utc.astimezone(self.tz).replace(tzinfo=None) == wall:
            return utc  # it exists; fold=0 is its first occurrence when it occurs twice
        # in a gap: fold=1 reads it with the offset after the jump (an instant before the jump),
        # fold=0 with the offset before (an instant after): bisect to the jump itself
        lo = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        hi = utc
        after = hi.astimezone(self.tz).utcoffset()
        while hi - lo > timedelta(seconds=1):
            mid = lo + (hi - lo) / 2
            if mid.astimezone(self.tz).utcoffset() == after:
                hi = mid
            else:
                lo = mid
        return hi.replace(microsecond=0)

    def _wall(self, t: datetime) -> datetime:
        return t.astimezone(self.tz).replace(tzinfo=None)

    def next_after(self, t: datetime) -> datetime:
        """The first slot strictly after ``t``."""
        t = _aware(t, "t")
        it = croniter(self.expression, self._wall(t))
        while True:  # instants grow with wall times: at most an hour of candidates is skipped
            slot = self.instant(it.get_next(datetime))
            if slot > t:
                return slot

    def latest_at_or_before(self, t: datetime) -> datetime:
        """The last slot at or before ``t``."""
        t = _aware(t, "t")
        it = croniter(self.expression, self._wall(t) + _MARGIN)
        while True:
            slot = self.instant(it.get_prev(datetime))
            if slot <= t:
                return slot

    def slots(self, after: datetime, until: datetime, limit: int = MAX_COUNTED
              ) -> list[datetime]:
        """Slots in ``(after, until]``, oldest first, at most ``limit`` of them."""
        out: list[datetime] = []
        t = _aware(after, "after")
        until = _aware(until, "until")
        while len(out) < limit:
            t = self.next_after(t)
            if t > until:
                break
            out.append(t)
        return out


Action = Literal["wait", "run", "skip"]


@dataclass(frozen=True)
class Due:
    """What to do now for one cron of a schedule.

    ``wait``: nothing is due (``slot`` is None). ``run``: take the run for ``slot``. ``skip``:
    ``slot`` is later than the starting deadline allows; record it as missed, do not run it.
    ``passed_over`` counts the earlier unrecorded slots that are skipped either way (the
    operator was down across them); ``next_time`` is the first slot after ``now``.
    """

    action: Action
    slot: datetime | None
    passed_over: int
    next_time: datetime
    late_by: timedelta = timedelta(0)


def due(cron: Cron, now: datetime, last: datetime | None, since: datetime,
        starting_deadline: timedelta | None = None) -> Due:
    """Decide for ``now``: ``last`` is the last slot recorded (run or skipped), ``since`` the
    schedule's creation (a new schedule never fires for slots before it existed)."""
    now = _aware(now, "now")
    reference = _aware(last, "last") if last is not None else _aware(since, "since")
    next_time = cron.next_after(now)
    latest = cron.latest_at_or_before(now)
    if latest <= reference:
        return Due("wait", None, 0, next_time)
    earlier = cron.slots(reference, latest - timedelta(seconds=1))
    late_by = now - latest
    if starting_deadline is not None and late_by > starting_deadline:
        return Due("skip", latest, len(earlier), next_time, late_by)
    return Due("run", latest, len(earlier), next_time, late_by)


def stamp(slot: datetime) -> str:
    """A slot as it appears in names and labels: UTC, minute precision (``20261202t0200``)."""
    return _aware(slot, "slot").strftime("%Y%m%dt%H%M")


def run_name(schedule: str, kind: str, slot: datetime) -> str:
    """The deterministic name of ``schedule``'s ``kind`` run (a Backup) for ``slot``, a valid
    Kubernetes object name: ``orders-incremental-20261202t0400``."""
    suffix = f"-{kind}-{stamp(slot)}"
    return schedule[: 253 - len(suffix)].rstrip("-.") + suffix


def strongest(kinds: list[str]) -> str:
    """Of several types due in one slot, the one that covers the others."""
    return min(kinds, key=TYPES.index)
