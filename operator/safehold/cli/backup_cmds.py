"""`safehold backup` and `safehold check` (`safehold restore`: restore_cmds)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from safehold.api.errors import UsageError
from safehold.api.manifest import BACKUP_METHODS, BACKUP_TYPES, Manifest, method_of
from safehold.cli import common, locking, multidb, notify_run
from safehold.cli.config import resolve_repository
from safehold.cli.errors import Exit
from safehold.codecs.compression import parse_codec
from safehold.pipeline.backup import BackupOptions, check_database, run_backup
from safehold.pipeline.profile import Profile


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
            f" ({manifest.ratio_text()}, {manifest.encryption}) in {common.human_seconds(elapsed)}"
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
    from safehold.pipeline.physical import method_problems  # physical backups' own modules

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


COMMANDS = [backup]
