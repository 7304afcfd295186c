"""`safehold prune`: apply a retention policy; never deletes what a kept backup depends on."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import click
from pydantic import ValidationError

from safehold.api.errors import UsageError
from safehold.api.retention import RetentionPolicy
from safehold.api.retention_select import select
from safehold.api.validation import describe_validation_error
from safehold.cli import audit, common, locking
from safehold.cli.backup_cmds import check
from safehold.cli.errors import Exit
from safehold.repository import logarchive

TEMP_GRACE = 3600  # seconds an abandoned temporary upload is kept (a resumed backup reuses it)
_FLAGS = {f: "--" + f.replace("_", "-") for f in
          ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "max_age")}


@click.command()
@common.repo_option
@click.option("--target", "-t", "target_name", required=True, help="Target name in the repository.")
@click.option("--keep-last", type=int, help="Keep the N newest backups.")
@click.option("--keep-daily", type=int, help="Keep the newest backup of each of the last N days.")
@click.option("--keep-weekly", type=int, help="... of each of the last N ISO weeks.")
@click.option("--keep-monthly", type=int, help="... of each of the last N months.")
@click.option("--keep-yearly", type=int, help="... of each of the last N years.")
@click.option("--max-age", help="Keep everything newer than this (e.g. 30d, 12h, 2w).")
@click.option("--dry-run", "-n", is_flag=True, help="Print what would be deleted and why.")
@locking.lock_wait_option
@common.output_option
@click.pass_context
def prune(ctx: click.Context, repo: str, target_name: str, keep_last: int | None,
          keep_daily: int | None, keep_weekly: int | None, keep_monthly: int | None,
          keep_yearly: int | None, max_age: str | None, dry_run: bool, lock_wait: float,
          output: str) -> None:
    """Delete backups no retention rule keeps, and leftovers of interrupted backups.

    Holds the target's lease (not with --dry-run), so it never deletes the objects of a backup
    that is still being written; another writer of the target makes it wait (--lock-wait) or
    fail with exit 11.

    Archived log segments (binlog, WAL) older than the oldest kept full are deleted too.
    Incomplete backups (no manifest) are deleted; abandoned temporary uploads are removed once
    they are older than an hour (younger ones may still be resumed). A damaged manifest is
    reported (exit 4) and its backup kept; the healthy backups are pruned all the same.
    """
    try:
        policy = RetentionPolicy(keep_last=keep_last, keep_daily=keep_daily,
                                 keep_weekly=keep_weekly, keep_monthly=keep_monthly,
                                 keep_yearly=keep_yearly,
                                 max_age=max_age)  # type: ignore[arg-type]  # parsed by the model
    except ValidationError as exc:
        raise UsageError("invalid retention policy: " + describe_validation_error(exc, _FLAGS),
                         hint="e.g. --keep-last 7 --keep-daily 14 --max-age 30d") from None
    # An unknown target is not an error here: its abandoned uploads are still cleaned up.
    repository = common.open_repo(ctx, repo, allow_empty=not dry_run)
    # Nothing stored for the target (a typo?): no lease, which would leave a lease record behind.
    writes = not dry_run and any(repository.backup_ids(target_name))
    with (locking.target_lease(repository, target_name, "prune", lock_wait) if writes else
          nullcontext()) as lease:
        backups, damaged = repository.scan(target_name)
        decisions = select(backups, policy, datetime.now(UTC))
        _, incomplete = repository.backup_ids(target_name)
        freed = 0
        temp_removed = 0
        deleted: list[str] = []
        for backup_id in [d.backup_id for d in decisions if not d.keep] + incomplete:
            if lease is None:
                break  # a dry run (or nothing stored)
            lease.check()  # a lost lease stops the deletions
            freed += repository.delete_backup(target_name, backup_id)
            deleted.append(backup_id)
            audit.record("delete", target=target_name, backup_id=backup_id, by="prune")
        # Log segments no kept backup needs (none while a damaged manifest hides a backup).
        kept_ids = {d.backup_id for d in decisions if d.keep}
        segments, _ = logarchive.readable_segments(repository, target_name)
        old_logs = [] if damaged else logarchive.expendable(
            segments, [m for m in backups if m.backup_id in kept_ids])
        for segment in old_logs:
            if lease is None:
                break  # a dry run
            lease.check()
            freed += logarchive.delete_segment(repository, segment.id)
    if not dry_run:
        # Leftovers of writers killed mid-object (temp files, multipart uploads): an hour is
        # far longer than a live writer goes without progress, and younger ones may resume.
        temp_removed = repository.storage.cleanup_incomplete(older_than=TEMP_GRACE)
    if not dry_run:
        audit.record("prune", target=target_name, deleted=len(deleted), freed_bytes=freed)
    rows: list[dict[str, Any]] = [
        {"backup_id": d.backup_id, "keep": d.keep, "reasons": list(d.reasons)} for d in decisions
    ]
    data = {"dry_run": dry_run, "decisions": rows, "incomplete": incomplete, "deleted": deleted,
            "freed_bytes": freed, "log_segments": [s.id.label for s in old_logs],
            "temporary_uploads_removed": temp_removed,
            "temporary_upload_grace_seconds": TEMP_GRACE,
            "damaged": [{"backup_id": d.backup_id, "problem": d.problem} for d in damaged]}

    def text() -> None:
        for r in rows:
            verb = "keep  " if r["keep"] else ("would delete" if dry_run else "deleted")
            click.echo(f"{verb:<12} {r['backup_id']}  ({'; '.join(r['reasons'])})")
        for backup_id in incomplete:
            verb = "would delete" if dry_run else "deleted"
            click.echo(f"{verb:<12} {backup_id}  (incomplete: no manifest)")
        for d in damaged:
            click.echo(f"{'kept':<12} {d.backup_id}  (DAMAGED manifest: not pruned)")
        if old_logs:
            click.echo(f"{'would delete' if dry_run else 'deleted'} {len(old_logs)} log"
                       " segment(s) no kept backup needs")
        grace = f"abandoned temporary uploads older than {TEMP_GRACE // 60} min"
        if dry_run:
            click.echo(f"would delete {len([r for r in rows if not r['keep']]) + len(incomplete)}"
                       f" backup(s); a real run also removes {grace}")
        else:
            click.echo(f"deleted {len(deleted)} backup(s), freed {common.human_bytes(freed)};"
                       f" removed {temp_removed} {grace} (younger ones are kept: an interrupted"
                       " backup may resume them)")

    common.emit(output, data, text)
    for d in damaged:
        if output == "text":
            click.echo(f"error: {d.problem}", err=True)
    if damaged:
        ctx.exit(int(Exit.CORRUPT))


COMMANDS = [prune, check]
