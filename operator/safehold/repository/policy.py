"""Each target's encryption policy: one record per target, written with its first backup.

``<target>/target.json`` says whether the target's backups are encrypted, which repository and
(namespace-qualified) target it belongs to, and carries a MAC under a key-encryption key when one
was supplied. Readers enforce it (``safehold.pipeline.keys``): in an encrypted target every
manifest must be encrypted and MAC-verified, so an unencrypted backup copied over an encrypted one
is refused. The record can only ever make a reader stricter, never more lenient, unless its MAC
verifies under a key the reader holds (see docs/security.md).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safehold.api.errors import UsageError
from safehold.codecs import crypto
from safehold.repository import layout
from safehold.repository.repo import Repository, RepositoryError
from safehold.storage.base import ConditionFailed, ObjectNotFound

Encryption = Literal["aes-256-gcm", "none"]
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
KEY_HELP = ("create a key with `safehold keys generate --out ~/.safehold.key` and pass it with"
            " --key-file or SAFEHOLD_KEY_FILE (or set SAFEHOLD_KEY / SAFEHOLD_PASSPHRASE)")


class RepositoryTampered(crypto.TamperedError):
    """A manifest or policy record is not what was written where it was read from (exit 4)."""


class EncryptionKeyRequired(crypto.MissingKeyError):
    """A backup needs a key: a new target without an explicit --no-encryption, or an encrypted
    target (exit 5)."""


class PolicyConflict(UsageError, ValueError):
    """The backup asked for something the target's recorded policy forbids (exit 2)."""


def check_namespace(namespace: str | None) -> str | None:
    if namespace is not None and not _NAMESPACE.match(namespace):
        raise PolicyConflict(f"invalid namespace {namespace!r}: a Kubernetes namespace name"
                             " (1-63 lower-case letters, digits or '-')")
    return namespace


class TargetPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    format: int = 1
    target: str
    namespace: str | None = None
    repo_id: str
    encryption: Encryption
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    mac_key_id: str | None = Field(default=None, description="the KEK the MAC is keyed from")
    mac: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.namespace}/{self.target}" if self.namespace else self.target

    def signing_bytes(self) -> bytes:
        body = self.model_dump(mode="json", exclude={"mac"})
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def signed(self, kek: crypto.Kek) -> TargetPolicy:
        unsigned = self.model_copy(update={"mac_key_id": kek.key_id, "mac": None})
        return unsigned.model_copy(
            update={"mac": crypto.policy_mac(kek, unsigned.signing_bytes())})

    def verified_by(self, keks: list[crypto.Kek]) -> bool:
        """True when a supplied KEK authenticates the record; False when none can check it.

        Raises RepositoryTampered when the key it names is supplied and the MAC does not match.
        """
        kek = next((k for k in keks if k.key_id == self.mac_key_id), None)
        if kek is None or self.mac is None:
            return False
        try:
            crypto.verify_policy_mac(kek, self.signing_bytes(), self.mac)
        except crypto.TamperedError:
            raise RepositoryTampered(
                f"the policy record {layout.policy_key(self.target)} was modified after it was"
                " written (its MAC does not match): do not trust this target's backups") from None
        return True


def read_policy(repo: Repository, target: str) -> TargetPolicy | None:
    """The target's policy record, or None when there is none; a misplaced one is tamper."""
    key = layout.policy_key(target)
    try:
        data = repo.storage.get_bytes(key)
    except ObjectNotFound:
        return None
    try:
        policy = TargetPolicy.model_validate_json(data)
    except ValidationError as exc:
        raise RepositoryTampered(f"the policy record {key} is damaged: {exc}") from None
    if policy.target != target:
        raise RepositoryTampered(
            f"the policy record {key} belongs to target {policy.target!r}: it was copied here")
    return policy


def write_policy(repo: Repository, policy: TargetPolicy) -> None:
    repo.storage.put_bytes(layout.policy_key(policy.target), policy.model_dump_json(
        indent=2).encode() + b"\n")


def create_policy(repo: Repository, policy: TargetPolicy) -> bool:
    """Write a new target's record only if it has none (a conditional create); False if another
    writer's record got there first."""
    try:
        repo.storage.put_if_absent(layout.policy_key(policy.target), policy.model_dump_json(
            indent=2).encode() + b"\n")
    except ConditionFailed:
        return False
    return True


def has_key_records(repo: Repository, target: str) -> bool:
    """Whether any backup (complete or not) of the target left a wrapped key: evidence that the
    target is encrypted even when its manifests or policy record are gone."""
    return any(info.key.endswith("/" + layout.KEYS) for info in repo.storage.list(f"{target}/"))


def was_encrypted(repo: Repository, target: str) -> bool:
    """The evidence for a target without a policy record (a repository from before format 2):
    a wrapped key left by any backup, or any manifest that declares encryption."""
    if has_key_records(repo, target):
        return True
    for backup_id in repo.backup_ids(target)[0]:
        try:
            if repo.manifest(target, backup_id).encryption != "none":
                return True
        except RepositoryError:
            continue  # a damaged manifest is no evidence either way; readers name it
    return False
