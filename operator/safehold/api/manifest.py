"""The backup manifest: what a backup is, read by both planes (see docs/format.md).

A backup is a set of data objects plus ``manifest.json``, written last. The manifest is plain JSON
(readable without any key); when the backup is encrypted it carries an HMAC keyed from the
backup's data key, so any edit is detected once the data key is unwrapped.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 1
BackupType = Literal["full", "incremental", "differential"]
BACKUP_TYPES: tuple[BackupType, ...] = ("full", "incremental", "differential")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectRecord(_Model):
    """One data object of a backup: a stream of independent chunks."""

    name: str = Field(description="object name inside the backup, e.g. 'db.pages'")
    raw_size: int = Field(ge=0, description="bytes before compression and encryption")
    stored_size: int = Field(ge=0, description="bytes in storage")
    sha256: str = Field(description="hex SHA-256 of the stored bytes")
    chunks: int = Field(ge=0)
    meta: dict[str, Any] = Field(default_factory=dict, description="engine-specific facts")


class Manifest(_Model):
    format: int = FORMAT_VERSION
    backup_id: str
    target: str
    engine: str
    server_version: str = ""
    type: BackupType
    parent_id: str | None = Field(default=None, description="previous backup this one builds on")
    chain_id: str = Field(description="the full backup at the root of this backup's chain")
    started_at: datetime
    finished_at: datetime
    start_position: dict[str, str] | None = Field(default=None, description="log position at start")
    end_position: dict[str, str] | None = Field(default=None, description="log position at end")
    compression: str = Field(description="codec spec, e.g. 'zstd:3'")
    encryption: Literal["none", "aes-256-gcm"] = "none"
    chunk_size: int
    objects: tuple[ObjectRecord, ...] = ()
    include: tuple[str, ...] | None = None
    engine_meta: dict[str, Any] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict, description="versions of the tools used")
    mac: str | None = Field(
        default=None, description="HMAC-SHA256 (hex) of the manifest without 'mac'"
    )

    @property
    def raw_bytes(self) -> int:
        return sum(o.raw_size for o in self.objects)

    @property
    def stored_bytes(self) -> int:
        return sum(o.stored_size for o in self.objects)

    @property
    def compression_ratio(self) -> float:
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else 1.0

    def object(self, name: str) -> ObjectRecord:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(f"backup {self.backup_id} has no object {name!r}")

    def signing_bytes(self) -> bytes:
        """Canonical bytes covered by the MAC: the manifest without its ``mac`` field."""
        body = self.model_dump(mode="json", exclude={"mac"})
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        return cls.model_validate_json(data)
