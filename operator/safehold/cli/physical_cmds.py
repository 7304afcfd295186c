"""`safehold restore --data-dir`: a physical backup chain into a new PostgreSQL data directory."""

from __future__ import annotations

import time
from pathlib import Path

import click

from safehold.api.errors import UsageError
from safehold.cli import audit, common
from safehold.pipeline.physical import run_data_dir_restore
from safehold.pipeline.profile import Profile


def restore_data_dir(ctx: click.Context, repo: str, backup_ref: str | None, source: str | None,
                     data_dir: Path, key_files: tuple[Path, ...], output: str) -> None:
    repository = common.open_repo(ctx, repo)
    if source is None:
        targets = repository.targets()
        if len(targets) != 1:
            raise UsageError(
                f"the repository {repository.url} holds {len(targets)} targets"
                f" ({', '.join(targets) or 'none'}): say whose backup to restore with --from")
        source = targets[0]
    keks = common.keks_for(ctx, repository, repo, key_files)
    manifest = repository.resolve(source, backup_ref or "latest")
    started, profile = time.monotonic(), Profile("restore")
    with common.progress(f"restore {manifest.backup_id}", manifest.raw_bytes) as hook:
        chain = run_data_dir_restore(repository, manifest, keks, data_dir, progress=hook,
                                     profile=profile)
    elapsed = time.monotonic() - started
    audit.record_restore(repository, chain, target=str(data_dir), source=source, include=None)
    data = {"backup_id": manifest.backup_id, "data_dir": str(data_dir.absolute()),
            "chain": [m.backup_id for m in chain], "server_version": manifest.server_version,
            "seconds": round(elapsed, 3)}
    common.emit(output, data, lambda: click.echo(
        f"restored {manifest.backup_id} ({len(chain)} backup(s) in chain) into {data_dir}"
        f" in {elapsed:.1f}s; start it with PostgreSQL {manifest.server_version.split('.')[0]}'s"
        " server as the data directory's owner"))
