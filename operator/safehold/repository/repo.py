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

from safehold.api.manifest import FORMAT_VERSION, Manifest
from safehold.repository import layout
from safehold.storage.base import ObjectNotFound, Storage


class RepositoryError(Exception):
    """The repository is missing something or holds something inconsistent."""


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
        body = json.loads(data)
        if body.get("format", 0) > FORMAT_VERSION:
            raise RepositoryError(
                f"repository format {body['format']} is newer than this safehold understands"
                f" ({FORMAT_VERSION}); upgrade safehold"
            )
        body["retired_key_ids"] = tuple(body.get("retired_key_ids", ()))
        return cls(**body)


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

        Read back after writing, so two writers creating a repository at once agree on the id
        that won (the manifest takes the id again when it is written).
        """
        config = self.config()
        if config.repo_id is None:
            self.save_config(replace(config, format=FORMAT_VERSION,
                                     repo_id="r-" + secrets.token_hex(16)))
            config = self.config()
        assert config.repo_id is not None
        return config.repo_id

    # -- listing --------------------------------------------------------------------------
    def targets(self) -> list[str]:
        names = {info.key.split("/", 1)[0] for info in self.storage.list() if "/" in info.key}
        return sorted(names)

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

    def manifest(self, target: str, backup_id: str) -> Manifest:
        key = layout.manifest_key(target, backup_id)
        try:
            data = self.storage.get_bytes(key)
        except ObjectNotFound:
            raise RepositoryError(f"no backup {backup_id!r} of target {target!r} in {self.url}") \
                from None
        try:
            return Manifest.from_json(data).read_from(target, backup_id)
        except ValidationError as exc:
            raise RepositoryError(f"manifest {key} is damaged: {exc}") from exc

    def resolve(self, target: str, ref: str) -> Manifest:
        """A backup by id, or ``latest``; the error lists what exists."""
        ids = self.backup_ids(target)[0]
        if not ids:
            raise RepositoryError(
                f"target {target!r} has no backups in {self.url}"
                + (f" (targets here: {', '.join(self.targets())})" if self.targets() else "")
            )
        if ref == "latest":
            return self.manifest(target, ids[-1])
        if ref not in ids:
            raise RepositoryError(
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
                raise RepositoryError(f"backup chain of {manifest.backup_id} loops")
        chain.reverse()
        if chain[0].type != "full":
            raise RepositoryError(f"the chain of {manifest.backup_id} does not start with a full")
        return chain

    def _parent(self, target: str, parent_id: str, child: Manifest) -> Manifest:
        try:
            return self.manifest(target, parent_id)
        except RepositoryError:
            raise RepositoryError(
                f"backup {child.backup_id} depends on {parent_id}, which is missing from the"
                " repository; it cannot be restored"
            ) from None

    # -- writing --------------------------------------------------------------------------
    def write_manifest(self, manifest: Manifest) -> None:
        self.storage.put_bytes(layout.manifest_key(manifest.target, manifest.backup_id),
                               manifest.to_json())

    def delete_backup(self, target: str, backup_id: str) -> int:
        """Delete the manifest first (the backup stops existing), then its objects."""
        self.storage.delete(layout.manifest_key(target, backup_id))
        infos = list(self.storage.list(layout.backup_prefix(target, backup_id)))
        for info in infos:
            self.storage.delete(info.key)
        return sum(i.size for i in infos)
