"""Point-in-time recovery of physical PostgreSQL backups: which backup to start from, and the
recovery settings that replay archived WAL up to the target and promote.

The base is the newest physical backup (full, incremental or differential) that is consistent
at or before the target: for a time, one that finished at or before it (its consistent end is
earlier still); for an LSN, one whose end LSN is at or before it. PostgreSQL then fetches every
later segment through ``restore_command`` (``safehold wal fetch %f %p`` against the log
archive), stops before the first commit past the target (``recovery_target_inclusive``: a
commit exactly at the target is kept; for an LSN, every record starting before it) and promotes
onto a new timeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from safehold.api.errors import UsageError
from safehold.api.manifest import Manifest, method_of
from safehold.engines.postgres.walstream import format_lsn, parse_lsn
from safehold.engines.recovery import OutsideWindow


def choose_base(backups: Sequence[Manifest], *, to_time: datetime | None = None,
                to_lsn: str | None = None) -> Manifest:
    """The newest physical backup consistent at or before the target (exactly one given)."""
    if (to_time is None) == (to_lsn is None):
        raise UsageError("give exactly one recovery target: --to-time or --to-lsn")
    physical = [m for m in backups if m.engine == "postgresql" and method_of(m) == "physical"]
    if not physical:
        raise OutsideWindow("there is no physical PostgreSQL backup to recover from: take one"
                            " with `safehold backup --method physical`")
    if to_time is not None:
        if to_time.tzinfo is None:
            raise UsageError(f"--to-time {to_time.isoformat()} has no time zone: add one, e.g."
                             " 2026-12-02T18:00:00Z or +01:00")
        fits = [m for m in physical if m.finished_at <= to_time]
        wanted = f"time {to_time.isoformat()}"
        earliest = f"{min(m.finished_at for m in physical).isoformat()}"
    else:
        assert to_lsn is not None
        lsn = parse_lsn(to_lsn)
        fits = [m for m in physical if parse_lsn(m.engine_meta["end_lsn"]) <= lsn]
        wanted = f"LSN {format_lsn(lsn)}"
        earliest = f"LSN {min(m.engine_meta['end_lsn'] for m in physical)}"
    if not fits:
        raise OutsideWindow(f"{wanted} is before the first physical backup's consistent end"
                            f" ({earliest}): the window starts there")
    return max(fits, key=lambda m: (m.finished_at, m.backup_id))


def recovery_settings(restore_command: str, *, to_time: datetime | None = None,
                      to_lsn: str | None = None) -> dict[str, str]:
    settings = {"restore_command": restore_command, "recovery_target_action": "promote",
                "recovery_target_timeline": "current"}
    if to_time is not None:
        settings["recovery_target_time"] = to_time.isoformat()
    if to_lsn is not None:  # the state right before LSN: every record that starts before it
        settings["recovery_target_lsn"] = format_lsn(parse_lsn(to_lsn))
        settings["recovery_target_inclusive"] = "off"
    return settings


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def prepare_recovery(data_dir: Path, settings: dict[str, str]) -> None:
    """Make a restored data directory recover to the target when its server starts:
    the settings in postgresql.auto.conf (read last, so they win) and ``recovery.signal``."""
    with (data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.write("\n# safehold point-in-time restore\n")
        for key, value in settings.items():
            conf.write(f"{key} = {_quote(value)}\n")
    (data_dir / "recovery.signal").touch(mode=0o600)
