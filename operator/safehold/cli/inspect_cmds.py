"""`safehold list`, `show`, `verify` and `cat`: read a repository from storage alone."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from safehold.cli import common
from safehold.cli.backup_cmds import manifest_summary
from safehold.cli.errors import Exit
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.objects import ObjectReader
from safehold.pipeline.restore import verify_backup
from safehold.repository.trust import UNAUTHENTICATED


@click.command("list")
@common.repo_option
@click.option("--target", "-t", "target_name", default=None, help="Only this target's backups.")
@common.output_option
@click.pass_context
def list_(ctx: click.Context, repo: str, target_name: str | None, output: str) -> None:
    """List the backups in a repository, oldest first."""
    repository = common.open_repo(ctx, repo)
    targets = [target_name] if target_name else repository.targets()
    rows = []
    for name in targets:
        complete, incomplete = repository.backup_ids(name)
        rows += [manifest_summary(repository.manifest(name, bid)) for bid in complete]
        rows += [{"backup_id": bid, "target": name, "type": "incomplete"} for bid in incomplete]

    def text() -> None:
        if not rows:
            click.echo(f"no backups in {repository.url}")
            return
        click.echo(f"{'TARGET':<16} {'BACKUP':<24} {'TYPE':<12} {'RAW':>10} {'STORED':>10}"
                   f"  {'ENC':<11} PARENT")
        for r in rows:
            if r["type"] == "incomplete":
                click.echo(f"{r['target']:<16} {r['backup_id']:<24} incomplete (no manifest)")
                continue
            click.echo(
                f"{r['target']:<16} {r['backup_id']:<24} {r['type']:<12}"
                f" {common.human_bytes(r['raw_bytes']):>10}"  # type: ignore[arg-type]
                f" {common.human_bytes(r['stored_bytes']):>10}"  # type: ignore[arg-type]
                f"  {r['encryption']:<11} {r['parent_id'] or '-'}")
        click.echo(UNAUTHENTICATED, err=True)

    common.emit(output, rows, text)


@click.command()
@common.repo_option
@click.option("--target", "-t", "target_name", required=True, help="Target name in the repository.")
@click.option("--backup", "-b", "backup_ref", default="latest", show_default=True)
@common.output_option
@click.pass_context
def show(ctx: click.Context, repo: str, target_name: str, backup_ref: str, output: str) -> None:
    """Show one backup's manifest: chain, positions, objects."""
    repository = common.open_repo(ctx, repo)
    manifest = repository.resolve(target_name, backup_ref)
    chain = repository.chain(manifest)

    def text() -> None:
        for key, value in manifest_summary(manifest).items():
            click.echo(f"{key:<18} {value}")
        click.echo(f"{'chain':<18} {' -> '.join(m.backup_id for m in chain)}")
        click.echo("objects:")
        for o in manifest.objects:
            click.echo(f"  {o.name:<30} {common.human_bytes(o.raw_size):>10}"
                       f" {common.human_bytes(o.stored_size):>10}  {o.chunks} chunks"
                       f"  sha256 {o.sha256[:16]}…")
        click.echo(UNAUTHENTICATED, err=True)

    data = {**manifest.model_dump(mode="json"), "chain": [m.backup_id for m in chain]}
    common.emit(output, data, text)


@click.command()
@common.repo_option
@click.option("--target", "-t", "target_name", default=None, help="Only this target.")
@click.option("--backup", "-b", "backup_ref", default=None, help="Only this backup (id or latest).")
@common.key_file_option
@common.output_option
@click.pass_context
def verify(ctx: click.Context, repo: str, target_name: str | None, backup_ref: str | None,
           key_files: tuple[Path, ...], output: str) -> None:
    """Re-read every object and check hashes, authentication and framing."""
    repository = common.open_repo(ctx, repo)
    keys = DataKeys(repository, common.keks_for(ctx, repository, repo, key_files))
    targets = [target_name] if target_name else repository.targets()
    if backup_ref and len(targets) != 1:
        raise click.UsageError("--backup needs --target when the repository has several targets")
    checks = []
    for name in targets:
        backups = ([repository.resolve(name, backup_ref)] if backup_ref
                   else repository.backups(name))
        for manifest in backups:
            checks += verify_backup(repository, manifest, keys)
    bad = [c for c in checks if not c.ok]
    data = {"ok": not bad, "checked": len(checks),
            "failures": [{"backup_id": c.backup_id, "object": c.object, "detail": c.detail}
                         for c in bad]}
    common.emit(output, data, lambda: click.echo(
        f"verified {len(checks)} objects: " + ("all ok" if not bad else
                                               f"{len(bad)} FAILED\n  "
                                               + "\n  ".join(c.detail for c in bad))))
    if bad:
        ctx.exit(int(Exit.CORRUPT))


@click.command()
@common.repo_option
@click.option("--target", "-t", "target_name", required=True, help="Target name in the repository.")
@click.option("--backup", "-b", "backup_ref", default="latest", show_default=True)
@click.argument("object_name")
@common.key_file_option
@click.pass_context
def cat(ctx: click.Context, repo: str, target_name: str, backup_ref: str, object_name: str,
        key_files: tuple[Path, ...]) -> None:
    """Decode one object to stdout (decrypted and decompressed) for standard tools."""
    repository = common.open_repo(ctx, repo)
    manifest = repository.resolve(target_name, backup_ref)
    names = [o.name for o in manifest.objects]
    if object_name not in names:
        raise click.BadParameter(f"backup {manifest.backup_id} has no object {object_name!r};"
                                 f" it has: {', '.join(names)}", param_hint="OBJECT_NAME")
    keys = DataKeys(repository, common.keks_for(ctx, repository, repo, key_files))
    out = sys.stdout.buffer
    for block in ObjectReader(repository, keys).open(manifest, object_name):
        out.write(block)
    out.flush()


COMMANDS = [list_, show, verify, cat]
