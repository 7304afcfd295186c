"""`safehold list`, `show`, `verify` and `cat`: read a repository from storage alone."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from safehold.api.errors import UsageError
from safehold.cli import common
from safehold.cli.backup_cmds import manifest_summary
from safehold.cli.errors import Exit
from safehold.codecs.crypto import TamperedError
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.logarchive import LogArchive
from safehold.pipeline.objects import CorruptObjectError, ObjectReader
from safehold.pipeline.pitr import Window, window
from safehold.pipeline.restore import ObjectCheck, verify_backup
from safehold.repository.logarchive import readable_segments
from safehold.repository.repo import BackupNotFound, Damaged, Repository, RepositoryDamaged
from safehold.repository.trust import UNAUTHENTICATED


def _targets(repository: Repository, target_name: str | None) -> list[str]:
    """The targets a command reads: the one named (which must exist), or all of them."""
    if target_name:
        repository.require_target(target_name)
        return [target_name]
    return repository.targets()


def _damage_report(damaged: list[Damaged]) -> None:
    """Damaged manifests are reported one by one; the command goes on with the healthy ones."""
    for d in damaged:
        click.echo(f"error: {d.problem}", err=True)


@click.command("list")
@common.repo_option
@click.option("--target", "-t", "target_name", default=None, help="Only this target's backups.")
@common.output_option
@click.pass_context
def list_(ctx: click.Context, repo: str, target_name: str | None, output: str) -> None:
    """List the backups in a repository, oldest first (damaged ones too: exit 4).

    JSON: {"backups": [...], "audit_head": {...}}."""
    repository = common.open_repo(ctx, repo)
    rows: list[dict[str, Any]] = []
    damaged: list[Damaged] = []
    windows: dict[str, Window] = {}
    for name in _targets(repository, target_name):
        healthy, bad = repository.scan(name)
        damaged += bad
        windows[name] = window(healthy, readable_segments(repository, name)[0])
        rows += [{**manifest_summary(m), "recoverable_window": windows[name].as_dict()}
                 for m in healthy]
        rows += [{"backup_id": d.backup_id, "target": name, "type": "damaged",
                  "problem": d.problem} for d in bad]
        rows += [{"backup_id": bid, "target": name, "type": "incomplete"}
                 for bid in repository.backup_ids(name)[1]]
    rows.sort(key=lambda r: (r["target"], r["backup_id"]))

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
            if r["type"] == "damaged":
                click.echo(f"{r['target']:<16} {r['backup_id']:<24} DAMAGED manifest")
                continue
            click.echo(
                f"{r['target']:<16} {r['backup_id']:<24} {r['type']:<12}"
                f" {common.human_bytes(r['raw_bytes']):>10}"
                f" {common.human_bytes(r['stored_bytes']):>10}"
                f"  {r['encryption']:<11} {r['parent_id'] or '-'}")
        for name, win in windows.items():
            if win.start is not None:
                click.echo(f"{name}: recoverable window (point-in-time) {win.describe()}")
        click.echo(UNAUTHENTICATED, err=True)

    common.emit(output, {"backups": rows}, text)
    _damage_report(damaged if output == "text" else [])
    if damaged:
        ctx.exit(int(Exit.CORRUPT))


def _position(position: dict[str, str] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in position.items()) if position else "-"


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
        m = manifest
        rows = [
            ("backup", m.backup_id), ("target", m.target),
            ("engine", f"{m.engine} {m.server_version}".strip()),
            ("type", m.type), ("parent", m.parent_id or "none (a full backup)"),
            ("chain", " -> ".join(c.backup_id for c in chain)),
            ("started", m.started_at.isoformat(timespec="seconds")),
            ("finished", m.finished_at.isoformat(timespec="seconds")),
            ("size", f"{common.human_bytes(m.raw_bytes)} raw, {common.human_bytes(m.stored_bytes)}"
                     f" stored ({m.ratio_text()})"),
            ("compression", m.compression), ("encryption", m.encryption),
            ("start position", _position(m.start_position)),
            ("end position", _position(m.end_position)),
            ("tools", ", ".join(f"{k} {v}" for k, v in m.tools.items()) or "-"),
        ]
        for key, value in rows:
            click.echo(f"{key:<16} {value}")
        click.echo(f"objects ({len(m.objects)}):")
        for o in m.objects:
            click.echo(f"  {o.name:<30} {common.human_bytes(o.raw_size):>10}"
                       f" {common.human_bytes(o.stored_size):>10}  {o.chunks} chunks"
                       + (f"  sha256 {o.sha256[:16]}…" if o.sha256 else "  (checked by its tags)"))
        click.echo(UNAUTHENTICATED, err=True)

    data = {**manifest.model_dump(mode="json"), "chain": [m.backup_id for m in chain]}
    common.emit(output, data, text)


def _verify_segments(repository: Repository, target: str, keks: Any) -> list[ObjectCheck]:
    """Every archived log segment of the target, checked like a backup's objects."""
    records, damaged = readable_segments(repository, target)
    checks = [ObjectCheck("log archive", "segment.json", False, problem) for problem in damaged]
    archive = LogArchive(repository, target, keks)
    for record in records:
        try:
            archive.verify(record)
        except (CorruptObjectError, TamperedError, RepositoryDamaged) as exc:
            checks.append(ObjectCheck(record.id.label, "segment", False, str(exc)))
        else:
            checks.append(ObjectCheck(record.id.label, "segment", True))
    return checks


@click.command()
@common.repo_option
@click.option("--target", "-t", "target_name", default=None, help="Only this target.")
@click.option("--backup", "-b", "backup_ref", default=None, help="Only this backup (id or latest).")
@common.key_file_option
@common.output_option
@click.pass_context
def verify(ctx: click.Context, repo: str, target_name: str | None, backup_ref: str | None,
           key_files: tuple[Path, ...], output: str) -> None:
    """Re-read every object (and archived log segment) and check hashes, authentication and
    framing.

    Exit 0 only when something was verified and all of it is sound: a damaged manifest or an
    incomplete backup (no manifest.json) is a failure, and so is a repository with no backups.
    """
    repository = common.open_repo(ctx, repo)
    keys = DataKeys(repository, common.keks_for(ctx, repository, repo, key_files))
    targets = _targets(repository, target_name)
    if backup_ref and len(targets) != 1:
        raise UsageError("--backup needs --target when the repository has several targets",
                         hint=f"targets here: {', '.join(targets)}")
    checks: list[ObjectCheck] = []
    backups = 0
    for name in targets:
        if backup_ref:
            healthy, damaged = [repository.resolve(name, backup_ref)], list[Damaged]()
        else:
            healthy, damaged = repository.scan(name)
            checks += [ObjectCheck(bid, "manifest.json", False,
                                   f"backup {bid} of {name} is incomplete: it has no manifest.json"
                                   " (interrupted, or still running); `safehold prune` removes it")
                       for bid in repository.backup_ids(name)[1]]
        checks += [ObjectCheck(d.backup_id, "manifest.json", False, d.problem) for d in damaged]
        for manifest in healthy:
            backups += 1
            checks += verify_backup(repository, manifest, keys)
        if not backup_ref:
            checks += _verify_segments(repository, name, keys.keks)
    if not checks:
        raise BackupNotFound(f"nothing to verify: {repository.url} holds no backups"
                             + (f" of {target_name}" if target_name else ""))
    bad = [c for c in checks if not c.ok]
    data = {"ok": not bad, "backups": backups, "checked": len(checks),
            "failures": [{"backup_id": c.backup_id, "object": c.object, "detail": c.detail}
                         for c in bad]}
    common.emit(output, data, lambda: click.echo(
        f"verified {len(checks)} objects of {backups} backup(s): "
        + ("all ok" if not bad else f"{len(bad)} FAILED\n  " + "\n  ".join(c.detail for c in bad))))
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
    common.audit_heads_to_stderr()  # stdout is the object's bytes


COMMANDS = [list_, show, verify, cat]
