"""`safehold prune`: apply a retention policy; never deletes what a kept backup depends on."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import click
from pydantic import ValidationError

from safehold.api.retention import RetentionPolicy
from safehold.cli import common, locking
from safehold.cli.backup_cmds import check
from safehold.cli.errors import CliError, Exit
from safehold.repository.retention import select


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
    that is still being written.
    """
    try:
        policy = RetentionPolicy(keep_last=keep_last, keep_daily=keep_daily,
                                 keep_weekly=keep_weekly, keep_monthly=keep_monthly,
                                 keep_yearly=keep_yearly,
                                 max_age=max_age)  # type: ignore[arg-type]  # parsed by the model
    except ValidationError as exc:
        raise CliError("invalid retention policy: " + "; ".join(
            f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
            if e["loc"] else e["msg"] for e in exc.errors()), Exit.USAGE) from exc
    repository = common.open_repo(ctx, repo)
    # Nothing stored for the target (a typo?): no lease, which would leave a lease record behind.
    writes = not dry_run and any(repository.backup_ids(target_name))
    with (locking.target_lease(repository, target_name, "prune", lock_wait) if writes else
          nullcontext()) as lease:
        backups = repository.backups(target_name)
        decisions = select(backups, policy, datetime.now(UTC))
        _, incomplete = repository.backup_ids(target_name)
        freed = 0
        doomed = [d.backup_id for d in decisions if not d.keep] + incomplete
        for backup_id in doomed if writes else ():
            if lease is not None:
                lease.check()  # a lost lease stops the deletions
            freed += repository.delete_backup(target_name, backup_id)
    if not dry_run:
        # Leftovers of writers killed mid-object (temp files, multipart uploads): an hour is
        # far longer than a live writer goes without progress, and shorter ones may resume.
        repository.storage.cleanup_incomplete(older_than=3600)
    rows: list[dict[str, Any]] = [
        {"backup_id": d.backup_id, "keep": d.keep, "reasons": list(d.reasons)} for d in decisions
    ]
    data = {"dry_run": dry_run, "decisions": rows, "incomplete": incomplete, "freed_bytes": freed}

    def text() -> None:
        for r in rows:
            verb = "keep  " if r["keep"] else ("would delete" if dry_run else "deleted")
            click.echo(f"{verb:<12} {r['backup_id']}  ({'; '.join(r['reasons'])})")
        for backup_id in incomplete:
            verb = "would delete" if dry_run else "deleted"
            click.echo(f"{verb:<12} {backup_id}  (incomplete: no manifest)")
        if not dry_run:
            click.echo(f"freed {common.human_bytes(freed)}")

    common.emit(output, data, text)


COMMANDS = [prune, check]
