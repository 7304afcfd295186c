"""`safehold keys generate|rotate|list`: envelope keys without re-encrypting any data."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import click

from safehold.api.errors import UsageError
from safehold.cli import audit, common, locking
from safehold.codecs import crypto
from safehold.pipeline.keys import backup_context, read_wrapped_key, write_wrapped_key
from safehold.repository.trust import resign_policies


@click.group()
def keys() -> None:
    """Generate, rotate and list encryption keys."""


@keys.command()
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the new key (created with mode 0600; never overwritten).")
@common.output_option
def generate(out: Path, output: str) -> None:
    """Write a new random 32-byte key (base64) to a file."""
    key = crypto.generate_key()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{out} exists; keys are never overwritten — choose another path") \
            from None
    with os.fdopen(fd, "w") as f:
        f.write(crypto.encode_key(key))
    key_id = crypto.key_id_for(key)
    audit.record("key.generated", key_id=key_id, path=str(out))
    common.emit(output, {"key_id": key_id, "path": str(out)},
                lambda: click.echo(f"wrote key {key_id} to {out}"))


@keys.command()
@common.repo_option
@click.option("--new-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The key that becomes active (see `keys generate`).")
@common.key_file_option
@locking.lock_wait_option
@common.output_option
@click.pass_context
def rotate(ctx: click.Context, repo: str, new_key_file: Path, key_files: tuple[Path, ...],
           lock_wait: float, output: str) -> None:
    """Make a new key active and re-wrap every backup's data key with it.

    Old keys come from --key-file / SAFEHOLD_KEY_FILE / SAFEHOLD_KEY / SAFEHOLD_PASSPHRASE.
    No data is re-encrypted; afterwards the old keys are retired and can be destroyed.
    Holds every target's lease while it re-wraps (--lock-wait applies to each).
    """
    repository = common.open_repo(ctx, repo)  # rotating keys of nothing is a mistyped path
    new = crypto.load_key_file(new_key_file)
    old = common.keks_for(ctx, repository, repo, key_files)
    rewrapped = 0
    with locking.target_leases(repository, repository.targets(), "keys rotate",
                               lock_wait) as leases:
        config = repository.config()
        retired: set[str] = set(config.retired_key_ids)
        # Unwrap everything first: a missing old key must fail before anything changes.
        pending = []
        for target in repository.targets():
            for manifest in repository.backups(target):
                if manifest.encryption == "none":
                    continue
                wrapped = read_wrapped_key(repository, target, manifest.backup_id)
                if wrapped.key_id == new.key_id:
                    continue
                data_key = crypto.unwrap_key([*old, new], wrapped,
                                             backup_context(manifest.backup_id))
                pending.append((target, manifest.backup_id, data_key, wrapped.key_id))
        resign_policies(repository, old, new)  # checks every record before writing any
        for target, backup_id, data_key, old_id in pending:
            for lease in leases:
                lease.check()
            write_wrapped_key(repository, target, backup_id, new, data_key)
            retired.add(old_id)
            rewrapped += 1
        retired.update(k.key_id for k in old if k.key_id != new.key_id)
        retired.discard(new.key_id)
        repository.update_config(active_key_id=new.key_id, retired_key_ids=tuple(sorted(retired)))
    audit.record("key.rotated", key_id=new.key_id, rewrapped=rewrapped)
    for key_id in sorted(retired - set(config.retired_key_ids)):
        audit.record("key.retired", key_id=key_id, replaced_by=new.key_id)
    data = {"active_key_id": new.key_id, "rewrapped": rewrapped, "retired": sorted(retired)}
    common.emit(output, data, lambda: click.echo(
        f"key {new.key_id} is now active; re-wrapped {rewrapped} backup key(s);"
        f" retired: {', '.join(sorted(retired)) or 'none'}"))


@keys.command("list")
@common.repo_option
@common.output_option
@click.pass_context
def list_keys(ctx: click.Context, repo: str, output: str) -> None:
    """Show which key protects how many backups, and which key is active."""
    repository = common.open_repo(ctx, repo)
    config = repository.config()
    usage: Counter[str] = Counter()
    for target in repository.targets():
        for manifest in repository.backups(target):
            if manifest.encryption != "none":
                usage[read_wrapped_key(repository, target, manifest.backup_id).key_id] += 1
    ids = sorted(set(usage) | set(config.retired_key_ids)
                 | ({config.active_key_id} if config.active_key_id else set()))
    rows = [{"key_id": k, "backups": usage[k], "active": k == config.active_key_id,
             "retired": k in config.retired_key_ids} for k in ids]

    def text() -> None:
        for r in rows:
            flags = ("  active" if r["active"] else "") + ("  retired" if r["retired"] else "")
            click.echo(f"{r['key_id']}  {r['backups']:>5} backups{flags}")

    common.emit(output, {"keys": rows, "password_mode": config.kdf is not None}, text)


COMMANDS = [keys]
