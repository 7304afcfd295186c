"""A repository: backups of one or more targets in one storage location, read from storage alone.

Nothing here decodes data; the pipeline does. This module knows the layout, reads and writes
manifests and the repository config, resolves backup references and chains.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from safehold.api.errors import (
    Exit,
    IntegrityError,
    KeyProblem,
    NotFoundError,
    SafeholdError,
    Unsupported,
)
from safehold.api.manifest import FORMAT_VERSION, Manifest
from safehold.api.validation import describe_validation_error
from safehold.repository import layout
from safehold.storage.base import ConditionFailed, ObjectNotFound, Storage


class RepositoryError(SafeholdError):
    """The repository is missing something or holds something inconsistent (base class)."""

    exit_code = Exit.NOT_FOUND


class BackupNotFound(RepositoryError, NotFoundError):
    """The repository, target or backup asked for does not exist."""

    exit_code = Exit.NOT_FOUND


class RepositoryDamaged(RepositoryError, IntegrityError):
    """A record in the repository (manifest, key record, chain) is damaged or inconsistent."""

    exit_code = Exit.CORRUPT


class KeyRecordLost(RepositoryError, KeyProblem):
    """An encrypted backup's key record (keys.json) is gone: its data cannot be decrypted."""

    exit_code = Exit.KEY


class FormatTooNew(RepositoryError, Unsupported):
    """The repository was written by a newer Safehold than this one."""

    exit_code = Exit.UNSUPPORTED


@dataclass(frozen=True)
class Damaged:
    """A backup whose manifest cannot be read: reported on its own, never fatal to a listing."""

    target: str
    backup_id: str
    key: str
    problem: str


@dataclass(frozen=True)
class RepoConfig:
    """``safehold-repo.json``: facts shared by every backup of the repository."""

    format: int = FORMAT_VERSION
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    kdf: dict[str, Any] | None = None  # password mode: Argon2id parameters (salt, cost)
    active_key_id: str | None = None  # new backups must use this key (set by rotation)
    retired_key_ids: tuple[str, ...] = ()
    repo_id: str | None = None  # random, set at creation; every format-2 manifest's MAC binds it

    def to_json(self) -> bytes:
        body = {**self.__dict__, "retired_key_ids": list(self.retired_key_ids)}
        return json.dumps(body, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> RepoConfig:
        try:
            body = json.loads(data)
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise RepositoryDamaged(f"{layout.CONFIG} is damaged: not a valid JSON object ({exc})",
                                    hint="restore the file from a copy of the repository"
                                    ) from None
        if body.get("format", 0) > FORMAT_VERSION:
            raise FormatTooNew(
                f"repository format {body['format']} is newer than this safehold understands"
                f" ({FORMAT_VERSION}); upgrade safehold"
            )
        body["retired_key_ids"] = tuple(body.get("retired_key_ids", ()))
        try:
            return cls(**body)
        except TypeError as exc:
            raise RepositoryDamaged(f"{layout.CONFIG} is damaged: {exc}") from None


class Repository:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @property
    def url(self) -> str:
        return self.storage.url

    # -- config ---------------------------------------------------------------------------
    def config(self) -> RepoConfig:
        try:
            return RepoConfig.from_json(self.storage.get_bytes(layout.CONFIG))
        except ObjectNotFound:
            return RepoConfig()

    def save_config(self, config: RepoConfig) -> None:
        self.storage.put_bytes(layout.CONFIG, config.to_json())

    def update_config(self, **changes: Any) -> RepoConfig:
        config = replace(self.config(), **changes)
        self.save_config(config)
        return config

    def ensure_repo_id(self) -> str:
        """The repository's id, created (with the config, or added to an older one) if missing.

        A conditional write (create-if-absent, or replace-if-unchanged), so of writers creating
        a repository at once exactly one id wins and every writer uses it.
        """
        for _ in range(10):
            try:
                data, version = self.storage.get_versioned(layout.CONFIG)
            except ObjectNotFound:
                data, version = None, None
            config = RepoConfig.from_json(data) if data is not None else RepoConfig()
            if config.repo_id is not None:
                return config.repo_id
            body = replace(config, format=FORMAT_VERSION,
                           repo_id="r-" + secrets.token_hex(16)).to_json()
            try:
                if version is None:
                    self.storage.put_if_absent(layout.CONFIG, body)
                else:
                    self.storage.replace_if(layout.CONFIG, body, version)
            except ConditionFailed:
                continue  # another writer changed the config first: read what it wrote
        raise RepositoryDamaged(f"{layout.CONFIG} of {self.url} keeps changing: cannot give the"
                                " repository its id")

    # -- listing --------------------------------------------------------------------------
    def targets(self) -> list[str]:
        names = {info.key.split("/", 1)[0] for info in self.storage.list() if "/" in info.key}
        # other top-level folders (the audit log's ``_audit/``) are not target names
        return sorted(n for n in names if layout.is_target_name(n))

    def backup_ids(self, target: str) -> tuple[list[str], list[str]]:
        """(complete, incomplete) backup ids of a target, oldest first."""
        complete: set[str] = set()
        seen: set[str] = set()
        for info in self.storage.list(f"{target}/"):
            parts = info.key.split("/")
            if len(parts) < 3 or not layout.is_backup_id(parts[1]):
                continue
            seen.add(parts[1])
            if len(parts) == 3 and parts[2] == layout.MANIFEST:
                complete.add(parts[1])
        return sorted(complete), sorted(seen - complete)

    def backups(self, target: str) -> list[Manifest]:
        """The complete backups of a target (those with a manifest), oldest first."""
        return [self.manifest(target, bid) for bid in self.backup_ids(target)[0]]

    def scan(self, target: str) -> tuple[list[Manifest], list[Damaged]]:
        """The readable backups of a target and, separately, those whose manifest is damaged.

        One damaged manifest must not hide the healthy backups beside it: list, verify and
        prune report it on its own and go on with the rest.
        """
        healthy: list[Manifest] = []
        damaged: list[Damaged] = []
        for bid in self.backup_ids(target)[0]:
            try:
                healthy.append(self.manifest(target, bid))
            except RepositoryDamaged as exc:
                damaged.append(Damaged(target, bid, layout.manifest_key(target, bid), exc.message))
        return healthy, damaged

    def exists(self) -> bool:
        """Whether a repository is here: its config, or any object (a mistyped or unmounted
        location holds neither)."""
        return (self.storage.exists(layout.CONFIG)
                or next(iter(self.storage.list()), None) is not None)

    def initialize(self) -> None:
        """Mark the location as a repository (writes the config once), for commands that write."""
        if self.storage.exists(layout.CONFIG):
            self.config()  # refuses a damaged config, or one of a newer format
        else:
            self.ensure_repo_id()

    def require_target(self, target: str) -> None:
        """Raise BackupNotFound, listing the targets there are, unless ``target`` has backups."""
        targets = self.targets()
        if target not in targets:
            raise BackupNotFound(
                f"target {target!r} has no backups in {self.url}"
                + (f"; targets here: {', '.join(targets)}" if targets else "; it is empty"))

    def manifest(self, target: str, backup_id: str) -> Manifest:
        key = layout.manifest_key(target, backup_id)
        try:
            data = self.storage.get_bytes(key)
        except ObjectNotFound:
            raise BackupNotFound(f"no backup {backup_id!r} of target {target!r} in {self.url}") \
                from None
        try:
            return Manifest.from_json(data).read_from(target, backup_id)
        except ValidationError as exc:
            raise RepositoryDamaged(
                f"backup {backup_id} of {target}: {key} is damaged:"
                f" {describe_validation_error(exc)}",
                hint="`safehold verify` lists every damaged backup; delete this one or restore"
                " the file from a copy") from None

    def resolve(self, target: str, ref: str) -> Manifest:
        """A backup by id, or ``latest``; the error lists what exists."""
        ids = self.backup_ids(target)[0]
        if not ids:
            raise BackupNotFound(
                f"target {target!r} has no backups in {self.url}"
                + (f" (targets here: {', '.join(self.targets())})" if self.targets() else "")
            )
        if ref == "latest":
            return self.manifest(target, ids[-1])
        if ref not in ids:
            raise BackupNotFound(
                f"no backup {ref!r} of target {target!r}; the newest are: {', '.join(ids[-5:])}"
                " (use `safehold list` to see all, or 'latest')"
            )
        return self.manifest(target, ref)

    def chain(self, manifest: Manifest, known: Sequence[Manifest] = ()) -> list[Manifest]:
        """The backups needed to restore ``manifest``, root (full) first."""
        target = manifest.source[0]  # parents are read beside it, whatever the manifest claims
        by_id = {m.source[1]: m for m in known if m.source[0] == target}
        chain = [manifest]
        while chain[-1].parent_id is not None:
            parent_id = chain[-1].parent_id
            parent = by_id.get(parent_id) or self._parent(target, parent_id, chain[-1])
            chain.append(parent)
            if len(chain) > 10_000:
                raise RepositoryDamaged(f"backup chain of {manifest.backup_id} loops")
        chain.reverse()
        if chain[0].type != "full":
            raise RepositoryDamaged(
                f"the chain of {manifest.backup_id} does not start with a full")
        return chain

    def _parent(self, target: str, parent_id: str, child: Manifest) -> Manifest:
        try:
            return self.manifest(target, parent_id)
        except BackupNotFound:
            raise RepositoryDamaged(
                f"backup {child.backup_id} depends on {parent_id}, which is missing from the"
                " repository; it cannot be restored"
            ) from None

    # -- writing --------------------------------------------------------------------------
    def write_manifest(self, manifest: Manifest) -> None:
        self.storage.put_bytes(layout.manifest_key(manifest.target, manifest.backup_id),
                               manifest.to_json())

    def delete_backup(self, target: str, backup_id: str) -> int:
        """Delete the manifest first (the backup stops existing), then its objects; return the
        bytes freed (the manifest's included)."""
        manifest = layout.manifest_key(target, backup_id)
        infos = list(self.storage.list(layout.backup_prefix(target, backup_id)))
        self.storage.delete(manifest)
        for info in infos:
            if info.key != manifest:
                self.storage.delete(info.key)
        return sum(i.size for i in infos)
