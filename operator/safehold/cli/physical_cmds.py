"""`safehold restore --data-dir`: a physical backup chain into a new PostgreSQL data directory,
optionally recovered to a point in time (--to-time / --to-lsn) from archived WAL."""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import click

from safehold.api.errors import UsageError
from safehold.cli import audit, common, selfcmd
from safehold.cli.config import resolve_repository
from safehold.pipeline.objects import ReadTally
from safehold.pipeline.physical import (
    archive_reaches,
    archived_wal,
    bundle_wal,
    check_wal_cluster,
    new_data_dir,
    run_data_dir_restore,
)
from safehold.pipeline.profile import Profile


@dataclass(frozen=True)
class PointInTime:
    to_time: datetime | None
    to_lsn: str | None
    restore_command: str | None  # None: `safehold wal fetch` from the same repository
    bundle: bool = False  # the WAL copied into the data directory instead

    @classmethod
    def of(cls, to_time: str | None, to_lsn: str | None, restore_command: str | None,
           backup_ref: str | None, bundle: bool = False) -> PointInTime | None:
        if to_time is None and to_lsn is None:
            if restore_command or bundle:
                raise UsageError("--restore-command and --bundle-wal are only for --to-time or"
                                 " --to-lsn")
            return None
        if restore_command and bundle:
            raise UsageError("--bundle-wal sets the restore_command itself (a copy from the"
                             " data directory): leave out --restore-command")
        if to_time and to_lsn:
            raise UsageError("give one recovery target: --to-time or --to-lsn")
        if backup_ref:
            raise UsageError("--to-time/--to-lsn choose the backup themselves: leave out -b")
        when = None
        if to_time:
            try:
                when = datetime.fromisoformat(to_time)
            except ValueError:
                raise UsageError(f"--to-time {to_time!r} is not an ISO 8601 time, e.g."
                                 " 2026-12-02T18:00:00Z") from None
        return cls(when, to_lsn, restore_command, bundle)


def restore_data_dir(ctx: click.Context, repo: str, backup_ref: str | None, source: str | None,
                     data_dir: Path, key_files: tuple[Path, ...], output: str,
                     point: PointInTime | None = None) -> None:
    from safehold.engines.postgres import pitr  # PostgreSQL only

    repository = common.open_repo(ctx, repo)
    if source is None:
        targets = repository.targets()
        if len(targets) != 1:
            raise UsageError(
                f"the repository {repository.url} holds {len(targets)} targets"
                f" ({', '.join(targets) or 'none'}): say whose backup to restore with --from")
        source = targets[0]
    keks = common.keks_for(ctx, repository, repo, key_files)
    if point is None:
        manifest = repository.resolve(source, backup_ref or "latest")
    else:
        backups = repository.backups(source)
        manifest = pitr.choose_base(backups, to_time=point.to_time, to_lsn=point.to_lsn)
        if point.restore_command is None:  # the WAL comes from this repository's archive
            segments = archived_wal(repository, source)
            check_wal_cluster(manifest, segments, source)
            archive_reaches(backups, manifest, segments, to_time=point.to_time,
                            to_lsn=point.to_lsn,
                            what="--to-time" if point.to_time else "--to-lsn")
    from safehold.pipeline import walarchive  # PostgreSQL only

    started, profile, tally = time.monotonic(), Profile("restore"), ReadTally()
    settings, bundled = {}, None
    with new_data_dir(data_dir):
        with common.progress(f"restore {manifest.backup_id}", manifest.raw_bytes) as hook:
            chain = run_data_dir_restore(repository, manifest, keks, data_dir, progress=hook,
                                         profile=profile, tally=tally)
        if point is not None:
            if point.bundle:
                bundled = bundle_wal(repository, source, keks, manifest, data_dir, segments,
                                     to_lsn=point.to_lsn)
                settings = pitr.recovery_settings(walarchive.BUNDLE_RESTORE_COMMAND,
                                                  to_time=point.to_time, to_lsn=point.to_lsn)
                settings["recovery_end_command"] = walarchive.BUNDLE_END_COMMAND
            else:
                command = point.restore_command or fetch_command(
                    ctx, repo, source, key_files, encrypted=manifest.encryption != "none")
                settings = pitr.recovery_settings(command, to_time=point.to_time,
                                                  to_lsn=point.to_lsn)
            pitr.prepare_recovery(data_dir, settings)
    elapsed = time.monotonic() - started
    audit.record_restore(repository, chain, target=str(data_dir), source=source, include=None)
    data = {"backup_id": manifest.backup_id, "data_dir": str(data_dir.absolute()),
            "chain": [m.backup_id for m in chain], "server_version": manifest.server_version,
            "recovery": settings or None, "seconds": round(elapsed, 3),
            **tally.as_dict(elapsed),
            "bundled_wal": {"segments": len(bundled[0]), "bytes": bundled[1]}
            if bundled else None}
    target_text = ""
    if point is not None:
        origin = (f"the {len(bundled[0])} WAL segment(s) bundled in it" if bundled
                  else "archived WAL")
        target_text = (f"; it recovers to {point.to_time.isoformat() if point.to_time else ''}"
                       f"{point.to_lsn or ''} from {origin} and promotes when started")
    common.emit(output, data, lambda: click.echo(
        f"restored {manifest.backup_id} ({len(chain)} backup(s) in chain) into {data_dir}"
        f" in {common.human_seconds(elapsed)}{target_text}; start it with PostgreSQL"
        f" {manifest.server_version.split('.')[0]}'s server as the data directory's owner"))


def fetch_command(ctx: click.Context, repo: str, source: str, key_files: tuple[Path, ...], *,
                  encrypted: bool) -> str:
    """The default restore_command: this safehold's `wal fetch` from the same repository.

    The server runs it as its own OS user, with its own environment: the repository goes in
    as its URL (a config name would need this user's config file), the key as the absolute
    path of the key file this restore used (never the key itself: the command is stored in
    postgresql.auto.conf). Storage credentials (S3, GCS, Azure) come from the server's
    environment, as for any restore_command.
    """
    url = resolve_repository(common.config(ctx), repo).url
    files = common.repo_key_files(ctx, repo, key_files)
    if os.environ.get("SAFEHOLD_KEY_FILE"):
        files.append(Path(os.environ["SAFEHOLD_KEY_FILE"]))
    if encrypted and not files:
        raise UsageError(
            "the backup is encrypted, and the key did not come from a file: the default"
            " restore_command (`safehold wal fetch`) could only read it from the server's"
            " environment. Give the key as a file the server's OS user can read (--key-file or"
            " SAFEHOLD_KEY_FILE), or give --restore-command yourself",
            hint="e.g. --key-file /etc/safehold/kek (readable by the postgres user)")
    argv = [*selfcmd.command(), "--log-level", "warning", "wal", "fetch",
            "-r", url, "--name", source, *[f"--key-file={p.absolute()}" for p in files]]
    # %-signs are PostgreSQL's placeholders (%f, %p, %%): literal ones are doubled
    return " ".join(shlex.quote(a).replace("%", "%%") for a in argv) + " %f %p"
