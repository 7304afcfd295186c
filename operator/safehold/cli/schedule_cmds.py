"""`safehold schedule ...` and `safehold daemon`: scheduled backups without Kubernetes.

Slots come from the pure module the operator's BackupSchedule uses (safehold.api.slots). Each
due slot is claimed in the store (schedule_store) before its backup starts, so it runs at most
once across daemon restarts. The backup itself runs as a child process, `safehold backup`, the
very command a person runs: one code path, its own exit code, logging and lease (a manual run
or an operator Job on the same target waits or is refused, exit 11), and a crash of one backup
cannot take the daemon down.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from safehold.api import slots
from safehold.api.errors import UsageError
from safehold.cli import common
from safehold.cli.locking import parse_wait
from safehold.cli.schedule_store import POLICIES, Schedule, Store, default_path
from safehold.engines import childenv

log = logging.getLogger("safehold.schedule")
NOW_ENV = "SAFEHOLD_NOW"  # test-only: the daemon's clock (ISO 8601 with offset)


def now() -> datetime:
    """The clock; SAFEHOLD_NOW pins it (tests only, documented as such in docs/cli.md)."""
    pinned = os.environ.get(NOW_ENV)
    if not pinned:
        return datetime.now(UTC)
    try:
        t = datetime.fromisoformat(pinned)
    except ValueError:
        raise UsageError(f"{NOW_ENV}={pinned!r} is not an ISO 8601 time",
                         hint=f"unset {NOW_ENV} (it is for tests only)") from None
    if t.tzinfo is None:
        raise UsageError(f"{NOW_ENV}={pinned!r} has no UTC offset",
                         hint="add one, e.g. 2026-12-02T02:00:00+00:00")
    return t.astimezone(UTC)


def store_option(f: Any) -> Any:
    return click.option("--store", type=click.Path(dir_okay=False, path_type=Path),
                        default=None,
                        help="Schedule store (SQLite). [env SAFEHOLD_SCHEDULE_STORE; default:"
                        " schedules.db in the user state dir]")(f)


def open_store(path: Path | None) -> Store:
    return Store(path or default_path())


def emit(output: str, data: Any, text: str) -> None:
    click.echo(json.dumps(data, indent=2) if output == "json" else text)


# ------------------------------------------------------------------ schedule commands


@click.group()
def schedule() -> None:
    """Backup schedules run by `safehold daemon` (stored in a local SQLite file)."""


@schedule.command("add")
@click.argument("name")
@click.option("--target", "-t", required=True, help="Database URL or config name.")
@common.repo_option
@click.option("--full", help="Cron of full backups, e.g. '0 2 * * *' or '@daily'.")
@click.option("--differential", help="Cron of differential backups.")
@click.option("--incremental", help="Cron of incremental backups, e.g. '0 * * * *'.")
@click.option("--at", "at", help="One-time run at this time (ISO 8601, e.g."
              " 2026-12-24T18:00; in --time-zone unless it has an offset); its type is --type.")
@click.option("--type", "at_type", type=click.Choice(slots.TYPES), default="full",
              show_default=True, help="Type of the --at run.")
@click.option("--time-zone", default=None, help="IANA zone of the crons and --at. [default: UTC]")
@click.option("--missed", type=click.Choice(POLICIES), default="run-once", show_default=True,
              help="Slots missed while the daemon was down: run-once runs the latest once;"
              " skip records them as skipped.")
@store_option
@common.output_option
def add(name: str, target: str, repo: str, full: str | None, differential: str | None,
        incremental: str | None, at: str | None, at_type: str, time_zone: str | None,
        missed: str, store: Path | None, output: str) -> None:
    """Add schedule NAME: crons per backup type, or one run --at a time."""
    if not name.strip() or len(name) > 200 or any(c.isspace() for c in name):
        raise UsageError(f"invalid schedule name {name!r}",
                         hint="use 1-200 characters without spaces, e.g. orders-nightly")
    tz = slots.zone(time_zone)
    crons = {k: v for k, v in (("full", full), ("differential", differential),
                                ("incremental", incremental)) if v is not None}
    for expression in crons.values():
        slots.Cron.parse(expression, time_zone)  # CronError names the problem and the fix
    when = None
    if at is not None:
        if crons:
            raise UsageError("--at is a one-time run and cannot be combined with crons",
                             hint="add two schedules: one with --at, one with the crons")
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise UsageError(f"--at {at!r} is not an ISO 8601 time",
                             hint="e.g. --at 2026-12-24T18:00 or 2026-12-24T18:00+01:00") from None
        when = (when if when.tzinfo else when.replace(tzinfo=tz)).astimezone(UTC)
        if when <= now():
            raise UsageError(f"--at {at} is in the past ({when.isoformat()} UTC)",
                             hint="give a future time, or run it now: `safehold backup`")
        crons = {at_type: ""}
    if not crons:
        raise UsageError("a schedule needs a cron or a time",
                         hint="give --full/--differential/--incremental CRON, or --at TIME")
    s = Schedule(name, target, repo, crons, time_zone, missed, when, False, now())
    open_store(store).add(s)
    emit(output, s.as_dict(), f"added schedule {name}")


@schedule.command("list")
@store_option
@common.output_option
def list_(store: Path | None, output: str) -> None:
    """List the schedules and when each fires next."""
    rows = []
    t = now()
    for s in open_store(store).all():
        row = s.as_dict()
        row["next"] = next_time(s, t)
        rows.append(row)
    text = "\n".join(
        f"{r['name']}\t{r['target']}\t{' '.join(f'{k}={v}' for k, v in r['crons'].items())}"  # type: ignore[attr-defined]
        f"{' at ' + str(r['at']) if r['at'] else ''}\t{r['time_zone']}\tmissed={r['missed']}"
        f"\t{'paused' if r['paused'] else 'next ' + str(r['next'] or '-')}" for r in rows)
    emit(output, rows, text or "no schedules")


@schedule.command("show")
@click.argument("name")
@store_option
@common.output_option
def show(name: str, store: Path | None, output: str) -> None:
    """Show a schedule and its latest recorded slots."""
    st = open_store(store)
    s = st.get(name)
    data = {**s.as_dict(), "next": next_time(s, now()), "runs": st.runs(name)}
    lines = [f"{k}: {v}" for k, v in data.items() if k != "runs"]
    lines += [f"  {r['slot']} {r['type']} {r['outcome']}"
              + (f" (exit {r['exit_code']})" if r["exit_code"] is not None else "")
              + (f" ({r['passed_over']} earlier slot(s) missed)" if r["passed_over"] else "")
              for r in data["runs"]]  # type: ignore[attr-defined]
    emit(output, data, "\n".join(lines))


@schedule.command("remove")
@click.argument("name")
@store_option
@common.output_option
def remove(name: str, store: Path | None, output: str) -> None:
    """Remove a schedule and its records (its backups stay in the repository)."""
    open_store(store).remove(name)
    emit(output, {"removed": name}, f"removed schedule {name}")


@schedule.command("pause")
@click.argument("name")
@store_option
@common.output_option
def pause(name: str, store: Path | None, output: str) -> None:
    """Pause a schedule: the daemon records its slots as skipped until it is resumed."""
    open_store(store).set_paused(name, True)
    emit(output, {"paused": name}, f"paused schedule {name}")


@schedule.command("resume")
@click.argument("name")
@store_option
@common.output_option
def resume(name: str, store: Path | None, output: str) -> None:
    """Resume a paused schedule."""
    open_store(store).set_paused(name, False)
    emit(output, {"resumed": name}, f"resumed schedule {name}")


@schedule.command("run-now")
@click.argument("name")
@click.option("--lock-wait", default="10m", show_default=True, callback=parse_wait,
              help="Passed to `safehold backup`: how long to wait for the target's lease.")
@store_option
@click.pass_context
def run_now(ctx: click.Context, name: str, lock_wait: float, store: Path | None) -> None:
    """Run a schedule's strongest type now (recorded like a slot); exits with its exit code."""
    st = open_store(store)
    s = st.get(name)
    kind = slots.strongest(list(s.crons))
    slot = now().replace(microsecond=0)
    if not st.claim(name, kind, slot, "running"):
        raise UsageError(f"schedule {name} already ran {kind} at {slot.isoformat()}",
                         hint="try again in a second")
    code = run_backup(ctx, s, kind, lock_wait)
    st.finish(name, kind, slot, code)
    ctx.exit(code)


# ------------------------------------------------------------------------ the daemon


def next_time(s: Schedule, t: datetime) -> str | None:
    if s.at is not None:
        return s.at.isoformat() if s.at > t else None
    times = [slots.Cron.parse(e, s.time_zone).next_after(t) for e in s.crons.values()]
    return min(times).isoformat()


def decide(st: Store, s: Schedule, t: datetime, grace: timedelta
           ) -> list[tuple[str, datetime, str, int]]:
    """(type, slot, "run" or "skip", earlier slots passed over) for what is due at ``t``."""
    deadline = grace if s.missed == "skip" else None
    out: list[tuple[str, datetime, str, int]] = []
    for kind, expression in s.crons.items():
        last = st.last_slot(s.name, kind)
        if s.at is not None:
            if last is None and s.at <= t:
                late = t - s.at
                out.append((kind, s.at, "skip" if deadline and late > deadline else "run", 0))
            continue
        d = slots.due(slots.Cron.parse(expression, s.time_zone), t, last, s.created_at,
                      deadline)
        if d.slot is not None:
            out.append((kind, d.slot, "skip" if d.action == "skip" else "run", d.passed_over))
    if s.paused:
        out = [(k, slot, "skip", n) for k, slot, _, n in out]
    return out


def tick(ctx: click.Context, st: Store, t: datetime, grace: timedelta, lock_wait: float
         ) -> list[int]:
    """Run (or record as skipped) every slot due at ``t``; the exit codes of the runs."""
    codes: list[int] = []
    for s in st.all():
        due = decide(st, s, t, grace)
        running = [(k, slot) for k, slot, action, _ in due if action == "run"]
        for kind, slot, action, passed in due:
            if action == "skip":
                if st.claim(s.name, kind, slot, "skipped", passed):
                    log.warning("schedule %s: %s slot %s skipped (missed, policy %s%s)", s.name,
                                kind, slot.isoformat(), s.missed, ", paused" if s.paused else "")
                continue
            same = [k for k, other in running if other == slot]
            if kind != slots.strongest(same):  # a full in the same slot covers it
                st.claim(s.name, kind, slot, "covered", passed)
                continue
            if not st.claim(s.name, kind, slot, "running", passed):
                continue  # another daemon on this store took it
            log.info("schedule %s: %s slot %s starts (%d earlier slot(s) missed)", s.name, kind,
                     slot.isoformat(), passed)
            code = run_backup(ctx, s, kind, lock_wait)
            st.finish(s.name, kind, slot, code)
            codes.append(code)
    return codes


def run_backup(ctx: click.Context, s: Schedule, kind: str, lock_wait: float) -> int:
    """`safehold backup` of the schedule as a child process (the same code path as by hand)."""
    root = ctx.find_root().obj or {}
    args = [sys.executable, "-m", "safehold.cli"]
    if root.get("config_path"):
        args += ["--config", str(root["config_path"])]
    if root.get("profile"):
        args += ["--profile", root["profile"]]
    args += ["backup", "-t", s.target, "-r", s.repo, "--type", kind,
             "--lock-wait", f"{lock_wait:g}"]
    sys.stdout.flush()
    # the child is Safehold itself, run for the same user: it gets the daemon's whole
    # environment (its key, passwords and storage credentials) explicitly, through childenv
    proc = childenv.start(args, env=dict(os.environ))
    try:
        return proc.wait()
    except BaseException:  # SIGTERM (Terminated) or Ctrl-C: let the backup stop cleanly
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


@click.command()
@click.option("--once", is_flag=True, help="Run what is due now, then exit (for cron or tests).")
@click.option("--interval", default="30s", show_default=True, callback=parse_wait,
              help="How often to look for due slots.")
@click.option("--grace", default="5m", show_default=True, callback=parse_wait,
              help="With --missed skip: a slot later than this is missed (recorded, not run).")
@click.option("--lock-wait", default="10m", show_default=True, callback=parse_wait,
              help="Passed to `safehold backup`: how long to wait for the target's lease.")
@store_option
@click.pass_context
def daemon(ctx: click.Context, once: bool, interval: float, grace: float, lock_wait: float,
           store: Path | None) -> None:
    """Run the schedules of the store: each due slot once, through `safehold backup`.

    Exit status with --once: 0 when every run succeeded, else the first failing run's code.
    """
    st = open_store(store)
    log.info("daemon started, store %s", st.path)
    while True:
        codes = tick(ctx, st, now(), timedelta(seconds=grace), lock_wait)
        if once:
            ctx.exit(next((c for c in codes if c), 0))
        time.sleep(max(interval, 1.0))


COMMANDS = [schedule, daemon]
