"""When a BackupTarget is due for its periodic re-check (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta


def check_due(last_check: datetime | None, interval_seconds: int, now: datetime,
              checking: bool) -> bool:
    """Due when never checked, or the last check is older than the interval; never while a
    check Job is already running."""
    if checking:
        return False
    return last_check is None or now - last_check >= timedelta(seconds=interval_seconds)


def slot(now: datetime, interval_seconds: int) -> int:
    """The periodic slot a re-check belongs to: its Job name is derived from it, so two
    operators (or a restarted one) in the same slot create the same Job, once."""
    return int(now.timestamp()) // interval_seconds
