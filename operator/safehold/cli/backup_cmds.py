"""`safehold backup`, `safehold restore` and `safehold check`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, cast

import click

from safehold.api.errors import Aborted, DatabaseProblem, UsageError
from safehold.api.manifest import BACKUP_METHODS, BACKUP_TYPES, Manifest, method_of
from safehold.cli import (
    audit,
    common,
    locking,
    multidb,
    notify_run,
    physical_cmds,
    pitr_cmds,
    tables,
)
from safehold.cli.config import resolve_repository
from safehold.cli.errors import Exit
from safehold.codecs.compression import parse_codec
from safehold.engines import servers
from safehold.engines.base import ConflictPolicy, redact_url
from safehold.pipeline.backup import BackupOptions, check_database, run_backup
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.objects import ObjectReader, ReadTally
from safehold.pipeline.physical import method_problems
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


def manifest_summary(m: Manifest) -> dict[str, object]:
    return {
        "backup_id": m.backup_id,
        "target": m.target,
        "engine": m.engine,
        "type": m.type,
        "method": method_of(m),
        "parent_id": m.parent_id,
        "chain_id": m.chain_id,
        "started_at": m.started_at.isoformat(),
        "finished_at": m.finished_at.isoformat(),
        "raw_bytes": m.raw_bytes,
        "stored_bytes": m.stored_bytes,
        "compression": m.compression,
        "compression_ratio": m.reported_ratio,
        "encryption": m.encryption,
        "objects": len(m.objects),
        "end_position": m.end_position,
    }


@click.command()
@click.option("--target", "-t", required=True, help="Database URL or config name.")
@common.repo_option
@click.option(
    "--type",
    "backup_type",
    type=click.Choice(BACKUP_TYPES),
    default="full",
    show_default=True,
    help="incremental: changes since the last backup; differential: changes since the last full.",
)
@click.option(
    "--method",
    type=click.Choice(BACKUP_METHODS),
    default="logical",
    show_default=True,
    help="logical: the engine's dump (portable, selective restore); physical: the server's"
    " files (PostgreSQL base backup; incrementals and differentials chain onto physical fulls).",
)
@click.option(
    "--compression",
    "-c",
    default=None,
    help="gzip, bzip2, lz4, zstd or none, optionally :LEVEL (default zstd:3).",
)
@click.option("--name", help="Target name in the repository (default: config name or file stem).")
@click.option("--chunk-size", default="4MiB", show_default=True, help="Raw bytes per chunk.")
@click.option(
    "--no-encryption",
    is_flag=True,
    envvar="SAFEHOLD_NO_ENCRYPTION",
    help="Back up unencrypted even if a key is set. A target's first backup records its choice:"
    " without a key, a new target needs this flag (or `encryption: none` in the config file).",
)
@click.option(
    "--namespace",
    envvar="SAFEHOLD_NAMESPACE",
    default=None,
    help="Kubernetes namespace of the target (the operator sets it): bound into the backup, so"
    " two namespaces' targets of one name never pass for each other.",
)
@click.option(
    "--backup-id",
    envvar="SAFEHOLD_BACKUP_ID",
    default=None,
    help="Id of the backup (e.g. 20261126T114217.123456Z; default: the start time). Running"
    " again with the same id after an interruption resumes it where the upload stopped.",
)
@click.option("--databases", default=None, help="Several databases of the target's server,"
              " comma-separated: each becomes its own backup, NAME@DATABASE (the URL's"
              " database is where to log in). Exit 12 when only some succeed.")
@click.option("--all-databases", is_flag=True, help="Every database of the server (system"
              " ones left out), each its own backup, plus the server-wide objects.")
@click.option("--globals/--no-globals", "globals_flag", default=None, help="Also back up the"
              " server-wide objects (PostgreSQL roles, MySQL/MariaDB users and grants) as"
              " NAME@~globals [default: with --all-databases].")
@locking.lock_wait_option
@common.connection_options
@common.key_file_option
@common.output_option
@click.pass_context
@notify_run.notifying
def backup(
    ctx: click.Context,
    /,
    target: str,
    repo: str,
    backup_type: str,
    method: str,
    compression: str | None,
    name: str | None,
    chunk_size: str,
    no_encryption: bool,
    namespace: str | None,
    backup_id: str | None,
    databases: str | None,
    all_databases: bool,
    globals_flag: bool | None,
    lock_wait: float,
    key_files: tuple[Path, ...],
    output: str,
    **conn: Any,
) -> None:
    """Back up a database (or several of one server) into a repository.

    Holds the target's lease while it runs: another backup, prune or key rotation of the same
    target waits (--lock-wait) or fails with exit 11 naming this one.
    """
    repo_cfg = resolve_repository(common.config(ctx), repo)
    codec = parse_codec(compression or repo_cfg.compression or "zstd")
    chunk_bytes = parse_size(chunk_size)  # every flag is checked before anything is created
    target_name, settings, conn_options = common.target_settings(ctx, target, **conn)
    chosen = multidb.selection(databases, all_databases, globals_flag, settings.databases,
                               settings.globals, settings.url)
    if chosen is not None:
        repository = common.open_repo(ctx, repo, create=True)
        options = BackupOptions(
            target="-", type=backup_type,  # type: ignore[arg-type]
            codec=codec, chunk_size=chunk_bytes,
            no_encryption=no_encryption or repo_cfg.encryption == "none",
            namespace=namespace or None)
        own_name = target in common.config(ctx).targets
        multidb.back_up(
            ctx, url=settings.url, options=conn_options, chosen=chosen,
            name=name or (target_name if own_name else multidb.default_name(settings.url)),
            repository=repository, backup=options,
            keks=common.keks_for(ctx, repository, repo, key_files, create_kdf=True),
            lock_wait=lock_wait, backup_id=backup_id or None, summarize=manifest_summary,
            output=output)
        return
    if "@" in (name or target_name):
        raise UsageError(f"target name {name or target_name!r} contains '@', which separates a"
                         " target from its databases", hint="choose another name with --name")
    engine = common.engine_for(settings, conn_options)
    size = check_database(engine)  # a missing or unreachable one fails before the repository
    repository = common.open_repo(ctx, repo, create=True)
    no_encryption = no_encryption or repo_cfg.encryption == "none"
    keks = common.keks_for(ctx, repository, repo, key_files, create_kdf=True)
    options = BackupOptions(
        target=name or target_name,
        type=backup_type,  # type: ignore[arg-type]
        method=method,  # type: ignore[arg-type]
        codec=codec,
        chunk_size=chunk_bytes,
        no_encryption=no_encryption,
        namespace=namespace or None,
    )
    started, profile = time.monotonic(), Profile("backup")
    with locking.target_lease(repository, options.target, "backup", lock_wait,
                              backup_id=backup_id or None) as lease, \
            common.progress(f"backup {options.target}", size) as hook:
        manifest = run_backup(
            engine,
            repository,
            options,
            keks[0] if keks else None,
            keks[1:],
            progress=hook,
            backup_id=backup_id or None,
            lease=lease,
            profile=profile,
            estimated_size=size,
        )
    elapsed, report = time.monotonic() - started, profile.report()
    summary = {
        **manifest_summary(manifest),
        "seconds": round(elapsed, 3),
        "throughput_mib_s": round(manifest.raw_bytes / 2**20 / max(elapsed, 1e-9), 2),
        "pipeline": report.as_dict(),
    }
    common.emit(
        output,
        summary,
        lambda: click.echo(
            f"{manifest.type} backup {manifest.backup_id} of {manifest.target}:"
            f" {common.human_bytes(manifest.raw_bytes)} ->"
            f" {common.human_bytes(manifest.stored_bytes)}"
            f" ({manifest.ratio_text()}, {manifest.encryption}) in {elapsed:.1f}s"
            f"\n{report.bottleneck_line()}"
        ),
    )


def parse_size(text: str) -> int:
    """``--chunk-size`` in IEC units (KiB, MiB) or bytes."""
    units = {"": 1, "kib": 1024, "mib": 2**20}
    digits = text.rstrip("KkMmIiBb")
    unit = text[len(digits) :].lower()
    if not digits.isdigit() or unit not in units:
        raise UsageError(f"invalid --chunk-size {text!r}: use e.g. 4MiB, 512KiB or 1048576")
    size = int(digits) * units[unit]
    if not 64 * 1024 <= size <= 256 * 2**20:
        raise UsageError(f"--chunk-size {text} is outside 64KiB..256MiB")
    return size


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
    if engine.estimate_size() and not tables_:  # the target exists: whole restore replaces it
        _confirm(
            f"{target} exists and will be replaced by backup {manifest.backup_id}",
            yes or conflict == "fail",
            interactive=interactive,
        )
    elif interactive:
        _confirm(f"restore backup {manifest.backup_id} into {target}", yes, interactive=True)
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
            + f" in {elapsed:.1f}s\n{report.bottleneck_line()}"
        ),
    )


@click.command()
@click.option("--target", "-t", required=True, help="Database URL or config name.")
@click.option("--repo", "-r", default=None, help="Also check that this repository is writable.")
@click.option(
    "--purpose", type=click.Choice(["backup", "restore"]), default="backup", show_default=True
)
@click.option("--method", type=click.Choice(BACKUP_METHODS), default="logical",
              show_default=True, help="physical: also check what base backups need (PostgreSQL:"
              " REPLICATION, wal_level, summarize_wal for 17+ incrementals, pg_basebackup).")
@common.server_options
@common.output_option
@click.pass_context
def check(
    ctx: click.Context, /, target: str, repo: str | None, purpose: str, method: str,
    output: str, **conn: Any
) -> None:
    """Test the connection and the permissions a backup or restore needs."""
    _, engine = common.open_target(ctx, target, **conn)
    report = engine.check(purpose)  # type: ignore[arg-type]
    problems = list(report.problems)
    if purpose == "backup":
        problems += method_problems(engine, method)  # type: ignore[arg-type]
    if repo:
        repository = common.open_repo(ctx, repo, create=True)
        probe = ".safehold-check"
        try:
            repository.storage.put_bytes(probe, b"ok")
            repository.storage.delete(probe)
        except Exception as exc:
            problems.append(f"repository {repository.url} is not writable: {exc}")
    data = {
        "ok": not problems,
        "engine": engine.name,
        "server_version": report.server_version,
        "problems": problems,
        "notes": list(report.notes),
    }

    def text() -> None:
        click.echo(f"{engine.name} {report.server_version}: "
                   + ("ok" if not problems else "problems:\n  " + "\n  ".join(problems)))
        for note in report.notes:
            click.echo(f"note: {note}")

    common.emit(output, data, text)
    if problems:
        ctx.exit(int(Exit.DATABASE))


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


COMMANDS = [backup, restore]
