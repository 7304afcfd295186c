"""Point-in-time restore on the command line: ``safehold restore --to-time|--to-gtid|
--to-position [--dry-run]`` (the options and what they run; the plan is pipeline/pitr.py)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from safehold.api.errors import UsageError
from safehold.cli import audit, common
from safehold.engines.base import Engine
from safehold.engines.recovery import RecoveryTarget
from safehold.pipeline.pitr import plan_recovery, run_recovery
from safehold.repository.repo import Repository

F = TypeVar("F", bound=Callable[..., Any])


def recovery_options(f: F) -> F:
    """--to-time, --to-gtid, --to-position and --dry-run for `safehold restore`."""
    options = [
        click.option("--to-time", default=None, metavar="TIME",
                     help="Point in time to restore to (ISO 8601, e.g. 2026-12-02T18:30:05Z;"
                     " no zone means UTC): the full at or before it, then the logs up to it."),
        click.option("--to-gtid", default=None, metavar="GTID",
                     help="MariaDB: restore up to and including this GTID (e.g. 0-1-42)."),
        click.option("--to-position", default=None, metavar="FILE:POS",
                     help="MariaDB: restore up to (not including) the event at this binlog"
                     " position, e.g. binlog.000007:1234."),
        click.option("--dry-run", is_flag=True,
                     help="With --to-*: print the plan (backups and logs) and stop."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--to-time {text!r} is not a time: use ISO 8601, e.g."
                         " 2026-12-02T18:30:05Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def recovery_target(to_time: str | None, to_gtid: str | None, to_position: str | None
                    ) -> RecoveryTarget | None:
    if to_time is None and to_gtid is None and to_position is None:
        return None
    return RecoveryTarget(time=parse_time(to_time) if to_time else None, gtid=to_gtid,
                          position=to_position)


def restore_to_point(ctx: click.Context, *, engine: Engine, repository: Repository,
                     source: str, target: str, to: RecoveryTarget, keks: Any, dry_run: bool,
                     conflict: str, confirm: Callable[[str], None], output: str) -> None:
    plan, reader = plan_recovery(engine, repository, source, to, keks)
    if dry_run:
        common.emit(output, {"dry_run": True, **plan.as_dict()},
                    lambda: click.echo("\n".join(plan.lines())))
        return
    for line in plan.lines():
        click.echo(line, err=True)
    confirm(f"{target} will be replaced by {source} as of {to.describe()}")
    started = time.monotonic()
    run_recovery(engine, plan, reader, conflict=conflict)
    elapsed = time.monotonic() - started
    audit.record_restore(repository, plan.chain, target=target, source=source, include=None,
                         to=to.describe(), logs=[p.name for p in plan.logs])
    data = {**plan.as_dict(), "seconds": round(elapsed, 3)}
    common.emit(output, data, functools.partial(
        click.echo, f"restored {source} to {to.describe()} into {target}"
                    f" in {common.human_seconds(elapsed)}"))
