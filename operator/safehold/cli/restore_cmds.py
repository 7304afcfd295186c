"""`safehold restore`: a backup into a database, a database as it was at a point in time, or a
physical PostgreSQL backup into a new data directory.

Its own module, apart from `safehold backup` (backup_cmds), so that each command imports only
what it runs: start-up is part of every run's time (docs/performance.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, cast

import click

from safehold.api.errors import Aborted, DatabaseProblem, UsageError
from safehold.cli import audit, common, multidb, physical_cmds, pitr_cmds, tables
from safehold.engines import servers
from safehold.engines.base import ConflictPolicy, redact_url
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.objects import ObjectReader, ReadTally
from safehold.pipeline.profile import Profile
from safehold.pipeline.restore import run_restore
from safehold.repository.repo import BackupNotFound, Repository


def _split(value: str | None) -> list[str] | None:
    """``--include a,b``; an empty list (``''``, ``,,``) is an error, not "everything"."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise UsageError(f"--include {value!r} names no table",
                         hint="give table names separated by commas, or leave --include out"
                         " to restore everything")
    return names


def _confirm(message: str, yes: bool, *, interactive: bool = False) -> None:
    """Ask before overwriting: on a terminal (or in -i mode) ask; elsewhere require --yes."""
    if yes:
        return
    if not (interactive or sys.stdin.isatty()):
        raise Aborted(f"{message}; pass --yes to confirm when not on a terminal")
    if not click.confirm(message + ". Continue?", default=False):
        raise Aborted("restore cancelled")


def _interactive(repository: Repository, source: str, opener: tables.Opener
                 ) -> tuple[str, list[str] | None]:
    """Walk the user through choosing a backup, seeing its objects, and (optionally) tables."""
    repository.require_target(source)
    backups = list(reversed(repository.scan(source)[0]))[:20]
    click.echo(f"Backups of {source} (newest first):")
    for i, m in enumerate(backups, 1):
        click.echo(f"{i:>3}. {m.backup_id}  {m.type:<12} {common.human_bytes(m.raw_bytes):>10}"
                   f"  {m.encryption}")
    choice = click.prompt("Backup to restore", type=click.IntRange(1, len(backups)), default=1)
    chosen = backups[choice - 1]
    chain = repository.chain(chosen)
    click.echo(f"Restoring {chosen.backup_id} applies {len(chain)} backup(s): "
               + " -> ".join(m.backup_id for m in chain))
    listed = tables.of_backup(chosen, opener)
    if listed is None and chosen.engine == "sqlite":
        listed = tables.sqlite_tables(chain, opener)
    if listed is None:
        why = (f"it is over {common.human_bytes(tables.SQLITE_PREVIEW_LIMIT)} to preview"
               if chosen.engine == "sqlite" else f"a {chosen.engine} backup does not list them")
        click.echo(f"(tables not listed: {why}; it is restored whole unless you name tables)")
    else:
        click.echo("Tables:")
        for name, size in listed.items():
            click.echo(f"  {name:<40} {common.human_bytes(size) if size is not None else '':>10}")
    answer = click.prompt("Tables to restore (comma-separated, empty for all)",
                          default="", show_default=False)
    return chosen.backup_id, _split(answer) if answer.strip() else None


@click.command()
@common.repo_option
@click.option("--backup", "-b", "backup_ref", default=None, help="Backup id or 'latest'.")
@click.option("--target", "-t", default=None,
              help="Database URL or config name to restore into (not with --data-dir).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Restore a physical PostgreSQL backup (and its chain) into this NEW data directory"
    " (absent or empty), verified with pg_verifybackup; start it with the same major's server.",
)
@click.option("--to-lsn", default=None,
              help="With --data-dir: recover to this LSN (e.g. 0/3000060).")
@click.option("--restore-command", default=None, help="With --to-time/--to-lsn: the"
              " PostgreSQL restore_command that fetches archived WAL (%f, %p); default:"
              " `safehold wal fetch` from this repository (the server's OS user must reach it"
              " and read the key file).")
@click.option("--bundle-wal", is_flag=True, default=False, help="With --to-time/--to-lsn: copy"
              " the archived WAL the recovery replays into the data directory (safehold_wal/,"
              " removed when recovery ends), so it starts with any server of the same major,"
              " without safehold, the repository or the key (a Kubernetes volume, another"
              " machine).")
@click.option(
    "--from",
    "source",
    default=None,
    help="Target name whose backups to restore (default: the target's own name; else the only"
    " target in the repository, or the one holding the backup id given with -b).",
)
@click.option("--include", help="Restore only these tables (comma-separated).")
@click.option(
    "--conflict",
    type=click.Choice(["fail", "replace"]),
    default="replace",
    show_default=True,
    help="What to do when the target (or a table) exists.",
)
@click.option("--yes", "-y", is_flag=True, help="Overwrite without asking.")
@click.option("--interactive", "-i", is_flag=True, help="Choose backup and tables interactively.")
@click.option("--database", "database", default=None, help="Restore this database's backups of"
              " a multi-database target (--from TARGET reads TARGET@DATABASE).")
@click.option("--globals", "want_globals", is_flag=True, help="Restore the server-wide objects"
              " of a multi-database target (PostgreSQL roles, MySQL/MariaDB users and grants)"
              " into the server of -t, meant for a new server.")
@click.option("--existing", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True, help="With --globals: refuse when a role/user of the backup"
              " exists already, or create only the missing ones and report the others.")
@pitr_cmds.recovery_options
@common.connection_options
@common.key_file_option
@common.output_option
@click.pass_context
def restore(
    ctx: click.Context,
    /,
    repo: str,
    backup_ref: str | None,
    target: str | None,
    data_dir: Path | None,
    to_time: str | None,
    to_lsn: str | None,
    restore_command: str | None,
    bundle_wal: bool,
    source: str | None,
    include: str | None,
    conflict: str,
    yes: bool,
    interactive: bool,
    database: str | None,
    want_globals: bool,
    existing: str,
    key_files: tuple[Path, ...],
    output: str,
    to_gtid: str | None,
    to_position: str | None,
    dry_run: bool,
    **conn: Any,
) -> None:
    """Restore a backup (and the chain it builds on) into a database, or the database as it
    was at a point in time (MariaDB: --to-time, --to-gtid, --to-position; --dry-run prints the
    plan), or a physical PostgreSQL backup into a new data directory (--data-dir), optionally
    to a point in time (--to-time, --to-lsn)."""
    wanted = _split(include)
    if data_dir is not None:
        if target or wanted or interactive or database is not None or want_globals:
            raise UsageError("--data-dir restores a whole physical backup: it takes no"
                             " --target, --include, -i, --database or --globals")
        if to_gtid or to_position or dry_run:
            raise UsageError("--to-gtid, --to-position and --dry-run are MariaDB point-in-time"
                             " options: with --data-dir give --to-time or --to-lsn")
        if backup_ref is None and not (to_time or to_lsn):
            raise UsageError("--backup is required (a backup id or 'latest'), or --to-time/"
                             "--to-lsn to pick one")
        point = physical_cmds.PointInTime.of(to_time, to_lsn, restore_command, backup_ref,
                                             bundle_wal)
        physical_cmds.restore_data_dir(ctx, repo, backup_ref, source, data_dir, key_files,
                                       output, point)
        return
    if to_lsn or restore_command or bundle_wal:
        raise UsageError("--to-lsn, --restore-command and --bundle-wal recover a physical"
                         " PostgreSQL backup:"
                         " give --data-dir (a new data directory)")
    if target is None:
        raise UsageError("--target is required (the database to restore into), or --data-dir"
                         " for a physical backup")
    to = pitr_cmds.recovery_target(to_time, to_gtid, to_position)
    if to is not None:
        if backup_ref or include or interactive:
            raise UsageError("--to-* picks the backups itself: drop --backup, --include and -i")
        if database is not None or want_globals:
            raise UsageError("--to-* replays a whole server's log into the whole target: drop"
                             " --database and --globals (restore one database from its own"
                             " backups with --database and -b)")
        target_name, engine = common.open_target(ctx, target, **conn)
        if engine.name == "postgresql":
            raise UsageError("a PostgreSQL point-in-time restore recovers a physical backup"
                             " into a new data directory: give --data-dir DIR and"
                             " --to-time (docs/cli.md, Physical PostgreSQL backups)")
        repository = common.open_repo(ctx, repo)
        source = source or resolve_source(repository, target_name, None)
        pitr_cmds.restore_to_point(
            ctx, engine=engine, repository=repository, source=source,
            target=redact_url(target), to=to, dry_run=dry_run, conflict=conflict,
            keks=common.keks_for(ctx, repository, repo, key_files), output=output,
            confirm=lambda what: _confirm(what, yes or conflict == "fail" or
                                          not engine.estimate_size(), interactive=False))
        return
    if dry_run:
        raise UsageError("--dry-run plans a point-in-time restore: add --to-time, --to-gtid"
                         " or --to-position")
    if backup_ref is None and not interactive:
        raise UsageError("--backup is required (a backup id or 'latest'), or use -i")
    if want_globals and (wanted or interactive):
        raise UsageError("--globals restores roles/users: it takes no --include or -i")
    target_name, settings, conn_options = common.target_settings(ctx, target, **conn)
    engine = (servers.globals_engine(settings.url, conn_options, existing)  # type: ignore[arg-type]
              if want_globals else common.engine_for(settings, conn_options))
    target = redact_url(target)  # printed below; a URL may carry a password
    repository = common.open_repo(ctx, repo)
    if database is not None or want_globals:
        source = multidb.restore_source(repository, source, database, want_globals)
    source = source or resolve_source(repository, target_name, backup_ref)
    keks = common.keks_for(ctx, repository, repo, key_files)
    opener = ObjectReader(repository, DataKeys(repository, keks)).open
    if interactive:
        backup_ref, wanted = _interactive(repository, source, opener)
    assert backup_ref is not None
    manifest = repository.resolve(source, backup_ref)
    if wanted:  # before anything is created: an unknown name leaves nothing behind
        wanted = tables.check_include(manifest, wanted, opener)
    check = engine.check("restore")
    if not check.ok:
        raise DatabaseProblem("cannot restore: " + "; ".join(check.problems))
    tables_ = wanted
    # Nothing is asked with --yes; else a whole restore into a database that exists (which it
    # replaces) asks first. Whether it exists is a connection to it: not made when --yes.
    if yes:
        pass
    elif not tables_ and engine.estimate_size():
        _confirm(f"{target} exists and will be replaced by backup {manifest.backup_id}",
                 conflict == "fail", interactive=interactive)
    elif interactive:
        _confirm(f"restore backup {manifest.backup_id} into {target}", False, interactive=True)
    started, profile, tally = time.monotonic(), Profile("restore"), ReadTally()
    with common.progress(f"restore {manifest.backup_id}", manifest.raw_bytes) as hook:
        chain = run_restore(
            engine,
            repository,
            manifest,
            keks,
            include=tables_,
            conflict=cast(ConflictPolicy, conflict),
            progress=hook,
            profile=profile,
            tally=tally,
        )
    elapsed, report = time.monotonic() - started, profile.report()
    sizes = tally.as_dict(elapsed)
    skipped: list[str] = list(getattr(engine, "skipped", []))
    audit.record_restore(repository, chain, target=target, source=source, include=tables_)
    data = {
        "backup_id": manifest.backup_id,
        "target": target,
        "chain": [m.backup_id for m in chain],
        "include": tables_,
        **({"skipped_existing": skipped} if want_globals else {}),
        "seconds": round(elapsed, 3),
        **sizes,
        "pipeline": report.as_dict(),
    }
    common.emit(
        output,
        data,
        lambda: click.echo(
            f"restored {manifest.backup_id} ({len(chain)} backup(s) in chain) into {target}"
            + (f", tables {', '.join(tables_)}" if tables_ else "")
            + (f"; already there, left as they were: {', '.join(skipped) or 'none'}"
               if want_globals else "")
            + f", {common.human_bytes(tally.stored_bytes)} stored ->"
            f" {common.human_bytes(tally.raw_bytes)} raw"
            + (f" (ratio {sizes['compression_ratio']:.2f})" if sizes["compression_ratio"] else "")
            + f" in {common.human_seconds(elapsed)}\n{report.bottleneck_line()}"
        ),
    )


def resolve_source(repository: Repository, target_name: str, backup_ref: str | None) -> str:
    """Whose backups a restore without --from reads: the target's own name when the repository
    has it; else the only target there is; else the one target holding the backup id given."""
    targets = repository.targets()
    if target_name in targets:
        return target_name
    if len(targets) == 1:
        return targets[0]
    if not targets:
        raise BackupNotFound(f"the repository {repository.url} holds no backups")
    if backup_ref and backup_ref != "latest":
        holders = [t for t in targets if backup_ref in repository.backup_ids(t)[0]]
        if len(holders) == 1:
            return holders[0]
        if not holders:
            raise BackupNotFound(f"no backup {backup_ref!r} in {repository.url} (targets:"
                                 f" {', '.join(targets)})")
        targets = holders
    raise UsageError(
        f"the repository {repository.url} holds several targets ({', '.join(targets)}) and"
        f" none is named {target_name!r}: say which with --from",
        hint=f"e.g. --from {targets[0]}")


COMMANDS = [restore]
