"""`safehold schedule ...` and `safehold daemon`: scheduled backups without Kubernetes.

Slots come from the pure module the operator's BackupSchedule uses (safehold.api.slots). Each
due slot is claimed in the store (schedule_store) before its backup starts, so it runs at most
once across daemon restarts. The backup itself runs as a child process, `safehold backup`, the
very command a person runs: one code path, its own exit code, logging and lease (a manual run
or an operator Job on the same target waits or is refused, exit 11), and a crash of one backup
cannot take the daemon down. The child's Slack notice is the one `safehold backup` sends (the
config file's notifications.slack). After a successful backup, a schedule with a retention
policy runs `safehold prune` on what the backup wrote (after a partial multi-database one, on
the databases it stored; never after a failure). The daemon's own Slack notices (notify_run):
a slot not run under the missed policy, a retention that failed.

A slot left ``running`` by a daemon killed mid-backup is marked ``interrupted`` by the next
daemon (schedule_store.Store.recover) and then treated as a missed slot: its schedule's policy
runs it once more (run-once, or skip within --grace) or leaves it recorded.
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
from pydantic import ValidationError

from safehold.api import slots
from safehold.api.errors import Exit, UsageError
from safehold.api.retention import RetentionPolicy
from safehold.api.validation import describe_validation_error
from safehold.cli import common, notify_run, selfcmd
from safehold.cli.locking import parse_wait
from safehold.cli.schedule_store import POLICIES, Owner, Schedule, Store, default_path
from safehold.engines import childenv

log = logging.getLogger("safehold.schedule")
NOW_ENV = "SAFEHOLD_NOW"  # test-only: the daemon's clock (ISO 8601 with offset)
MAX_ATTEMPTS = 2  # an interrupted slot runs once more at most (a backup killing its daemon
#                   every time must not loop)
_KEEP = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "max_age")
_FLAGS = {f: "--" + f.replace("_", "-") for f in _KEEP}


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


def timing_options(f: Any) -> Any:
    for option in reversed([
        click.option("--full", help="Cron of full backups, e.g. '0 2 * * *' or '@daily'."),
        click.option("--differential", help="Cron of differential backups."),
        click.option("--incremental", help="Cron of incremental backups, e.g. '0 * * * *'."),
        click.option("--at", "at", help="One-time run at this time (ISO 8601, e.g."
                     " 2026-12-24T18:00; in --time-zone unless it has an offset); its type is"
                     " --type."),
        click.option("--type", "at_type", type=click.Choice(slots.TYPES), default=None,
                     help="Type of the --at run. [default: full]"),
        click.option("--time-zone", default=None,
                     help="IANA zone of the crons and --at. [default: UTC]"),
        click.option("--missed", type=click.Choice(POLICIES), default=None,
                     help="Slots missed while the daemon was down (or interrupted by its"
                     " death): run-once runs the latest once; skip records them as skipped"
                     " (unless within the daemon's --grace). [default: run-once]"),
        click.option("--keep-last", type=int, help="Retention after each successful backup:"
                     " keep the N newest backups (as `safehold prune`)."),
        click.option("--keep-daily", type=int, help="... the newest of each of the last N days."),
        click.option("--keep-weekly", type=int, help="... of each of the last N ISO weeks."),
        click.option("--keep-monthly", type=int, help="... of each of the last N months."),
        click.option("--keep-yearly", type=int, help="... of each of the last N years."),
        click.option("--max-age", help="... and everything newer than this (e.g. 30d)."),
    ]):
        f = option(f)
    return f


def check_name(name: str) -> None:
    if not name.strip() or len(name) > 200 or any(c.isspace() for c in name):
        raise UsageError(f"invalid schedule name {name!r}",
                         hint="use 1-200 characters without spaces, e.g. orders-nightly")


def check_crons(crons: dict[str, str], time_zone: str | None) -> None:
    slots.zone(time_zone)
    for expression in crons.values():
        slots.Cron.parse(expression, time_zone)  # CronError names the problem and the fix


def parse_at(at: str, time_zone: str | None) -> datetime:
    tz = slots.zone(time_zone)
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise UsageError(f"--at {at!r} is not an ISO 8601 time",
                         hint="e.g. --at 2026-12-24T18:00 or 2026-12-24T18:00+01:00") from None
    when = (when if when.tzinfo else when.replace(tzinfo=tz)).astimezone(UTC)
    if when <= now():
        raise UsageError(f"--at {at} is in the past ({when.isoformat()} UTC)",
                         hint="give a future time, or run it now: `safehold backup`")
    return when


def parse_retention(keep: dict[str, Any]) -> dict[str, object] | None:
    """The retention flags as stored (RetentionPolicy's JSON form); None when none is given."""
    given = {k: v for k, v in keep.items() if v is not None}
    if not given:
        return None
    try:
        policy = RetentionPolicy(**given)
    except ValidationError as exc:
        raise UsageError("invalid retention policy: " + describe_validation_error(exc, _FLAGS),
                         hint="e.g. --keep-last 7 --keep-daily 14 --max-age 30d") from None
    return policy.model_dump(mode="json", exclude_none=True)


def timing_text(row: dict[str, Any]) -> str:
    if row["at"]:
        return f"{next(iter(row['crons']))} at {row['at']}"
    return " ".join(f"{k}={v}" for k, v in row["crons"].items())


def keep_text(retention: object) -> str:
    if not isinstance(retention, dict) or not retention:
        return ""
    return "\tkeep " + ",".join(f"{k.removeprefix('keep_')}={v}" for k, v in retention.items())


def last_text(last: Any) -> str:
    if not last:
        return "last -"
    code = f" (exit {last['exit_code']})" if last["exit_code"] not in (None, 0) else ""
    return f"last {last['outcome']}{code} {last['type']} {last['slot']}"


def prune_flags(retention: dict[str, object]) -> list[str]:
    return [arg for k, v in retention.items() for arg in (_FLAGS[k], str(v))]


@schedule.command("add")
@click.argument("name")
@click.option("--target", "-t", required=True, help="Database URL or config name.")
@common.repo_option
@timing_options
@store_option
@common.output_option
def add(name: str, target: str, repo: str, full: str | None, differential: str | None,
        incremental: str | None, at: str | None, at_type: str | None, time_zone: str | None,
        missed: str | None, store: Path | None, output: str, **keep: Any) -> None:
    """Add schedule NAME: crons per backup type, or one run --at a time; optionally a
    retention policy applied after each successful backup."""
    check_name(name)
    crons = {k: v for k, v in (("full", full), ("differential", differential),
                                ("incremental", incremental)) if v is not None}
    check_crons(crons, time_zone)
    when = None
    if at is not None:
        if crons:
            raise UsageError("--at is a one-time run and cannot be combined with crons",
                             hint="add two schedules: one with --at, one with the crons")
        when = parse_at(at, time_zone)
        crons = {at_type or "full": ""}
    elif at_type is not None:
        raise UsageError("--type is the type of an --at run",
                         hint="give --at TIME, or a cron per type (--full/--incremental ...)")
    if not crons:
        raise UsageError("a schedule needs a cron or a time",
                         hint="give --full/--differential/--incremental CRON, or --at TIME")
    s = Schedule(name, target, repo, crons, time_zone, missed or "run-once", when, False, now(),
                 parse_retention(keep))
    open_store(store).add(s)
    emit(output, s.as_dict(), f"added schedule {name}")


@schedule.command("update")
@click.argument("name")
@click.option("--target", "-t", default=None, help="Database URL or config name.")
@click.option("--repo", "-r", default=None, help="Repository URL or config name.")
@timing_options
@click.option("--no-retention", is_flag=True, help="Drop the schedule's retention policy.")
@store_option
@common.output_option
def update(name: str, target: str | None, repo: str | None, full: str | None,
           differential: str | None, incremental: str | None, at: str | None,
           at_type: str | None, time_zone: str | None, missed: str | None, no_retention: bool,
           store: Path | None, output: str, **keep: Any) -> None:
    """Change schedule NAME; what is not given stays. Checked as `schedule add` is.

    A cron given here replaces that type's cron ('' removes it); --at replaces the crons (and
    crons replace an --at). New timing applies from now on: slots before the update are not
    run. Retention flags replace the whole policy; --no-retention drops it.
    """
    st = open_store(store)
    old = st.get(name)
    crons = dict(old.crons)
    given = {k: v for k, v in (("full", full), ("differential", differential),
                                ("incremental", incremental)) if v is not None}
    when = old.at
    if at is not None and given:
        raise UsageError("--at is a one-time run and cannot be combined with crons",
                         hint="update to either --at TIME or crons, not both")
    zone = time_zone if time_zone is not None else old.time_zone
    if zone == "UTC" and time_zone is not None:
        zone = None  # stored as the default
    if given:
        crons = {**({} if old.at else crons), **given}
        crons = {k: v for k, v in crons.items() if v.strip()}
        when = None
        if not crons:
            raise UsageError("the update would leave no cron",
                             hint="keep one type's cron, or give --at TIME")
    if at is not None:
        when = parse_at(at, zone)
        crons = {at_type or (next(iter(old.crons)) if old.at else "full"): ""}
    elif at_type is not None:
        if old.at is None or given:
            raise UsageError("--type is the type of an --at run",
                             hint="give --at TIME, or a cron per type (--full/--incremental ...)")
        crons = {at_type: ""}
    if when is None:
        check_crons(crons, zone)
    else:
        slots.zone(zone)
    retention = parse_retention(keep)
    if no_retention and retention:
        raise UsageError("--no-retention and retention flags contradict each other",
                         hint="give one of them")
    new = Schedule(
        name, target or old.target, repo or old.repo, crons, zone, missed or old.missed, when,
        old.paused,
        # new timing never fires for slots before the update
        now() if (crons, when, zone) != (old.crons, old.at, old.time_zone) else old.created_at,
        None if no_retention else (retention or old.retention))
    if new == old:
        raise UsageError(f"nothing to update in schedule {name}",
                         hint="give what changes, e.g. --full '0 3 * * *' or --keep-last 7")
    st.update(new)
    emit(output, new.as_dict(), f"updated schedule {name}")


@schedule.command("list")
@store_option
@common.output_option
def list_(store: Path | None, output: str) -> None:
    """List the schedules, the outcome of each one's latest slot, and when each fires next."""
    rows = []
    t = now()
    st = open_store(store)
    for s in st.all():
        row = s.as_dict()
        row["next"] = next_time(s, t)
        latest = st.runs(s.name, limit=1)
        row["last"] = {k: latest[0][k] for k in ("slot", "type", "outcome", "exit_code")} \
            if latest else None
        rows.append(row)
    text = "\n".join(
        f"{r['name']}\t{r['target']}\t{timing_text(r)}\t{r['time_zone']}\tmissed={r['missed']}"
        f"{keep_text(r['retention'])}\t{last_text(r['last'])}"
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
              + (f" (attempt {r['attempts']})" if int(r["attempts"]) > 1 else "")
              + (f" - {r['note']}" if r["note"] else "")
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
    """Run a schedule's strongest type now (recorded like a slot, retention applied after a
    success); exits with its exit code."""
    st = open_store(store)
    s = st.get(name)
    kind = slots.strongest(list(s.crons))
    slot = now().replace(microsecond=0)
    owner = Owner(st)
    try:
        if not st.claim(name, kind, slot, "running", owner=owner):
            raise UsageError(f"schedule {name} already ran {kind} at {slot.isoformat()}",
                             hint="try again in a second")
        code = execute(ctx, st, s, kind, slot, lock_wait)
    finally:
        owner.release()
    ctx.exit(code)


# ------------------------------------------------------------------------ the daemon


def next_time(s: Schedule, t: datetime) -> str | None:
    if s.at is not None:
        return s.at.isoformat() if s.at > t else None
    times = [slots.Cron.parse(e, s.time_zone).next_after(t) for e in s.crons.values()]
    return min(times).isoformat()


def decide(st: Store, s: Schedule, t: datetime, grace: timedelta
           ) -> list[tuple[str, datetime, str, int]]:
    """(type, slot, action, earlier slots passed over) for what is due at ``t``; the action is
    "run", "skip", "retry" (an interrupted slot runs again) or "give-up" (it does not)."""
    deadline = grace if s.missed == "skip" else None
    out: list[tuple[str, datetime, str, int]] = []
    for kind, expression in s.crons.items():
        last_run = st.last_run(s.name, kind)
        last = datetime.fromisoformat(str(last_run["slot"])) if last_run else None
        if s.at is not None:
            if last is None and s.at <= t:
                late = t - s.at
                out.append((kind, s.at, "skip" if deadline and late > deadline else "run", 0))
        else:
            # new timing (created_at moves on `schedule update`) never fires for older slots
            reference = max(last, s.created_at) if last else None
            d = slots.due(slots.Cron.parse(expression, s.time_zone), t, reference,
                          s.created_at, deadline)
            if d.slot is not None:
                out.append((kind, d.slot, "skip" if d.action == "skip" else "run",
                            d.passed_over))
                continue  # a newer slot is due: an interrupted older one was missed
        if last_run and last is not None and last_run["outcome"] == "interrupted":
            late = t - last
            again = int(str(last_run["attempts"])) < MAX_ATTEMPTS and not s.paused and not (
                deadline and late > deadline)
            out.append((kind, last, "retry" if again else "give-up", 0))
    if s.paused:
        out = [(k, slot, "skip" if a == "run" else a, n) for k, slot, a, n in out]
    return out


def tick(ctx: click.Context, st: Store, owner: Owner, t: datetime, grace: timedelta,
         lock_wait: float) -> list[int]:
    """Run (or record as skipped) every slot due at ``t``; the exit codes of the runs."""
    codes: list[int] = []
    for r in st.recover():
        log.warning("schedule %s: %s slot %s was interrupted (its daemon ended mid-backup)",
                    r["schedule"], r["type"], r["slot"])
    for s in st.all():
        due = decide(st, s, t, grace)
        running = [(k, slot) for k, slot, action, _ in due if action == "run"]
        for kind, slot, action, passed in due:
            if action == "give-up":
                why = "interrupted; not run again: " + (
                    "paused" if s.paused else f"missed policy {s.missed}, later than --grace"
                    if s.missed == "skip" else f"{MAX_ATTEMPTS} attempts")
                if st.give_up(s.name, kind, slot, why):
                    log.warning("schedule %s: interrupted %s slot %s is not run again", s.name,
                                kind, slot.isoformat())
                    if not s.paused:  # a paused schedule's slots are not run by design
                        notify_run.daemon_notice(ctx, notify_run.not_run(
                            s.name, kind, slot.isoformat(), why))
                continue
            if action == "skip":
                if st.claim(s.name, kind, slot, "skipped", passed):
                    log.warning("schedule %s: %s slot %s skipped (missed, policy %s%s)", s.name,
                                kind, slot.isoformat(), s.missed, ", paused" if s.paused else "")
                    if not s.paused:
                        notify_run.daemon_notice(ctx, notify_run.not_run(
                            s.name, kind, slot.isoformat(),
                            f"missed (policy {s.missed}, later than the daemon's --grace)"
                            + (f"; {passed} earlier slot(s) missed too" if passed else "")))
                continue
            if action == "retry":
                if not st.retry(s.name, kind, slot, owner):
                    continue
                log.warning("schedule %s: interrupted %s slot %s runs again (policy %s)",
                            s.name, kind, slot.isoformat(), s.missed)
            else:
                same = [k for k, other in running if other == slot]
                if kind != slots.strongest(same):  # a full in the same slot covers it
                    st.claim(s.name, kind, slot, "covered", passed)
                    continue
                if not st.claim(s.name, kind, slot, "running", passed, owner):
                    continue  # another daemon on this store took it
                log.info("schedule %s: %s slot %s starts (%d earlier slot(s) missed)", s.name,
                         kind, slot.isoformat(), passed)
            codes.extend(execute(ctx, st, s, kind, slot, lock_wait, all_codes=True))
    return codes


def execute(ctx: click.Context, st: Store, s: Schedule, kind: str, slot: datetime,
            lock_wait: float, *, all_codes: bool = False) -> Any:
    """Back up a claimed slot, record the outcome, then apply the retention policy after a
    success. The backup's exit code (with ``all_codes``: the prunes' codes too)."""
    try:
        code, result = run_backup(ctx, s, kind, lock_wait)
    except BaseException as exc:  # SIGTERM or Ctrl-C stopped the daemon and its backup
        st.interrupt(s.name, kind, slot, f"the daemon was stopped ({type(exc).__name__})")
        raise
    codes = [code]
    note = None
    # a partial multi-database run (exit 12) still wrote the databases that succeeded
    if code in (0, Exit.PARTIAL) and s.retention:
        notes = []
        for target in backup_targets(result):
            pruned, out = run_child(ctx, ["prune", "-t", target, "-r", s.repo,
                                          *prune_flags(s.retention), "--lock-wait",
                                          f"{lock_wait:g}"])
            codes.append(pruned)
            if pruned == 0:
                notes.append(f"retention on {target}: {len(out.get('deleted') or [])} deleted")
            else:
                notes.append(f"retention on {target} FAILED (exit {pruned})")
                log.error("schedule %s: retention on %s failed with exit %d", s.name, target,
                          pruned)
                notify_run.daemon_notice(ctx, notify_run.retention_failed(
                    s.name, kind, target, pruned, out))
        note = "; ".join(notes) or "retention: no target in the backup's result"
    st.finish(s.name, kind, slot, code, note)
    return codes if all_codes else code


def backup_targets(result: dict[str, Any]) -> list[str]:
    """The repository targets a backup's JSON result wrote: the target of a one-database
    backup; of a multi-database one, each database's (``NAME@DB``) and the server-wide
    objects' (``NAME@~globals``) that completed. The bare NAME of the latter holds nothing."""
    if "databases" not in result and "globals" not in result:
        one = result.get("target")
        return [one] if isinstance(one, str) and result.get("backup_id") else []
    parts = [*(result.get("databases") or []), result.get("globals")]
    return list(dict.fromkeys(
        p["target"] for p in parts if isinstance(p, dict) and isinstance(p.get("target"), str)
        and p.get("status") == "completed" and p.get("backup_id")))


def run_backup(ctx: click.Context, s: Schedule, kind: str, lock_wait: float
               ) -> tuple[int, dict[str, Any]]:
    """`safehold backup` of the schedule as a child process (the same code path as by hand)."""
    return run_child(ctx, ["backup", "-t", s.target, "-r", s.repo, "--type", kind,
                           "--lock-wait", f"{lock_wait:g}"])


def run_child(ctx: click.Context, command: list[str]) -> tuple[int, dict[str, Any]]:
    """``safehold COMMAND --output json`` as a child process: its exit code and JSON result
    (its stdout is passed on to ours, its stderr goes straight to ours)."""
    root = ctx.find_root().obj or {}
    args = [*selfcmd.command(), "--output", "json"]
    if root.get("config_path"):
        args += ["--config", str(root["config_path"])]
    if root.get("profile"):
        args += ["--profile", root["profile"]]
    args += command
    sys.stdout.flush()
    # the child is Safehold itself, run for the same user: it gets the daemon's whole
    # environment (its key, passwords and storage credentials) explicitly, through childenv
    proc = childenv.start(args, env=dict(os.environ), stdout=subprocess.PIPE)
    try:
        out, _ = proc.communicate()
    except BaseException:  # SIGTERM (Terminated) or Ctrl-C: let the backup stop cleanly
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    text = out.decode(errors="replace")
    click.echo(text, nl=False)
    try:
        result = json.loads(text)
    except ValueError:
        result = None
    return proc.returncode, result if isinstance(result, dict) else {}


@click.command()
@click.option("--once", is_flag=True, help="Run what is due now, then exit (for cron or tests).")
@click.option("--interval", default="30s", show_default=True, callback=parse_wait,
              help="How often to look for due slots.")
@click.option("--grace", default="5m", show_default=True, callback=parse_wait,
              help="With --missed skip: a slot (or an interrupted one) later than this is"
              " missed (recorded, not run).")
@click.option("--lock-wait", default="10m", show_default=True, callback=parse_wait,
              help="Passed to `safehold backup` and `prune`: how long to wait for the target's"
              " lease.")
@store_option
@click.pass_context
def daemon(ctx: click.Context, once: bool, interval: float, grace: float, lock_wait: float,
           store: Path | None) -> None:
    """Run the schedules of the store: each due slot once, through `safehold backup`, then
    the schedule's retention through `safehold prune` after a success (or, for several
    databases, a partial run: on those it stored).

    Slots left running by a daemon that died are recorded as interrupted and follow the
    schedule's missed policy. Exit status with --once: 0 when every run succeeded, else the
    first failing run's code.
    """
    st = open_store(store)
    owner = Owner(st)
    log.info("daemon started, store %s", st.path)
    try:
        while True:
            codes = tick(ctx, st, owner, now(), timedelta(seconds=grace), lock_wait)
            if once:
                ctx.exit(next((c for c in codes if c), 0))
            time.sleep(max(interval, 1.0))
    finally:
        owner.release()


COMMANDS = [schedule, daemon]
