"""Key handling for the pipeline: which KEKs the user supplied, and each backup's data key.

Secrets come from files or the environment, never from the command line:
``--key-file`` / SAFEHOLD_KEY_FILE (base64 32-byte key), SAFEHOLD_KEY (base64 inline), or
SAFEHOLD_PASSPHRASE (Argon2id with the parameters stored in the repository config).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from safehold.api.manifest import Manifest
from safehold.codecs import crypto
from safehold.pipeline import keyuse
from safehold.repository import layout
from safehold.repository.repo import KeyRecordLost, Repository, RepositoryDamaged
from safehold.repository.trust import Trust
from safehold.storage.base import ObjectNotFound


def backup_context(backup_id: str) -> bytes:
    """AAD binding a wrapped data key to its backup (a key record moved elsewhere fails)."""
    return f"safehold/v1 backup {backup_id}".encode()


def load_keks(repo: Repository, key_files: Sequence[Path] = (), *,
              env: Mapping[str, str] = os.environ, create_kdf: bool = False) -> list[crypto.Kek]:
    """Every KEK the user supplied, in priority order (the first one encrypts new backups)."""
    keks = [crypto.load_key_file(p) for p in key_files]
    if env.get("SAFEHOLD_KEY_FILE"):
        keks.append(crypto.load_key_file(Path(env["SAFEHOLD_KEY_FILE"])))
    if env.get("SAFEHOLD_KEY"):
        keks.append(crypto.kek_from_b64(env["SAFEHOLD_KEY"]))
    if env.get("SAFEHOLD_PASSPHRASE"):
        config = repo.config()
        if config.kdf is None:
            if not create_kdf:
                raise crypto.MissingKeyError(
                    f"SAFEHOLD_PASSPHRASE is set but {repo.url} has no password set up"
                    " (no backup was ever made with a passphrase); use the key it was made with"
                )
            config = repo.update_config(kdf=crypto.new_kdf_params().to_dict())
        assert config.kdf is not None
        keks.append(crypto.derive_kek(env["SAFEHOLD_PASSPHRASE"],
                                      crypto.KdfParams.from_dict(config.kdf)))
    return keks


def check_active(repo: Repository, kek: crypto.Kek) -> None:
    """Refuse to encrypt new backups with a retired key, or with another than the active one."""
    config = repo.config()
    if kek.key_id in config.retired_key_ids:
        raise crypto.WrongKeyError(
            f"key {kek.key_id} was retired by `safehold keys rotate`;"
            f" encrypt with the active key {config.active_key_id}"
        )
    if config.active_key_id and kek.key_id != config.active_key_id:
        raise crypto.WrongKeyError(
            f"key {kek.key_id} is not the repository's active key {config.active_key_id};"
            " pass the active key (see `safehold keys list`)"
        )


def write_wrapped_key(repo: Repository, target: str, backup_id: str, kek: crypto.Kek,
                      data_key: bytes) -> None:
    wrapped = crypto.wrap_key(kek, data_key, backup_context(backup_id))
    body = {"cipher": "aes-256-gcm", "wrapped": wrapped.to_dict()}
    repo.storage.put_bytes(layout.keys_key(target, backup_id), json.dumps(body).encode())


def read_wrapped_key(repo: Repository, target: str, backup_id: str) -> crypto.WrappedKey:
    key = layout.keys_key(target, backup_id)
    try:
        body = json.loads(repo.storage.get_bytes(key))
        return crypto.WrappedKey.from_dict(body["wrapped"])
    except ObjectNotFound:
        raise KeyRecordLost(f"encrypted backup {backup_id} has lost its key record {key}") \
            from None
    except (ValueError, KeyError, TypeError) as exc:  # not JSON, or not a key record
        detail = "not valid JSON" if isinstance(exc, json.JSONDecodeError) else f"{exc}"
        raise RepositoryDamaged(f"backup {backup_id}: the key record {key} is damaged"
                                f" ({detail})") from None


class DataKeys:
    """Unwraps (and caches) data keys, verifying each manifest's MAC on first use.

    Before anything else every manifest passes the repository's trust rules (``Trust.check``):
    it is where it claims to be, and it is encrypted whenever its target's policy or a supplied
    key demands it.
    """

    def __init__(self, repo: Repository, keks: Sequence[crypto.Kek]) -> None:
        self.repo = repo
        self.keks = list(keks)
        self.trust = Trust(repo, self.keks)
        self._cache: dict[tuple[str, str], bytes] = {}  # by (target, backup id)

    def for_backup(self, manifest: Manifest) -> bytes | None:
        self.trust.check(manifest)
        if manifest.encryption == "none":
            return None
        if manifest.source not in self._cache:
            if not self.keks:
                raise crypto.MissingKeyError(
                    f"backup {manifest.backup_id} is encrypted: supply its key with --key-file,"
                    " SAFEHOLD_KEY_FILE, SAFEHOLD_KEY or SAFEHOLD_PASSPHRASE"
                )
            wrapped = read_wrapped_key(self.repo, manifest.target, manifest.backup_id)
            data_key = crypto.unwrap_key(self.keks, wrapped, backup_context(manifest.backup_id))
            if manifest.mac is None:
                raise crypto.TamperedError(f"manifest of {manifest.backup_id} lacks its MAC")
            try:
                crypto.verify_manifest_mac(data_key, manifest.signing_bytes(), manifest.mac)
            except crypto.TamperedError:
                raise crypto.TamperedError(
                    f"the manifest of backup {manifest.backup_id} was modified after it was"
                    " written (its MAC does not match); do not trust this backup"
                ) from None
            self._cache[manifest.source] = data_key
            keyuse.used(wrapped.key_id, target=manifest.target, backup_id=manifest.backup_id)
        return self._cache[manifest.source]
