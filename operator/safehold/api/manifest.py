"""The backup manifest: what a backup is, read by both planes (see docs/format.md).

A backup is a set of data objects plus ``manifest.json``, written last. The manifest is plain JSON
(readable without any key); when the backup is encrypted it carries an HMAC keyed from the
backup's data key, so any edit is detected once the data key is unwrapped. The MAC covers the
backup id, the target (and its namespace), the repository id and the parent id, and readers check
them against where the manifest was read from (``source``), so a manifest copied under another
id, target or repository is refused.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from safehold.api.errors import Unsupported

FORMAT_VERSION = 2
"""2 added ``repo_id`` and ``namespace`` (bound by the MAC). Format-1 manifests are still read."""
BackupType = Literal["full", "incremental", "differential"]
BACKUP_TYPES: tuple[BackupType, ...] = ("full", "incremental", "differential")
BackupMethod = Literal["logical", "physical"]
"""logical: the engine's dump (portable, selective restore); physical: the server's files (a
PostgreSQL base backup), onto which block- and log-based incrementals chain."""
BACKUP_METHODS: tuple[BackupMethod, ...] = ("logical", "physical")


def method_of(manifest: Manifest) -> BackupMethod:
    """How a backup was taken (``engine_meta.method``; backups before methods are logical)."""
    return "physical" if manifest.engine_meta.get("method") == "physical" else "logical"


PIPELINE_KEY = "pipeline"
"""``engine_meta[PIPELINE_KEY]``: where the backup's time went (:class:`StageTimings`). Kept in
``engine_meta`` (covered by the MAC, free-form) rather than a field of its own, so that a
format-2 reader from before it reads the manifest unchanged: the model refuses unknown fields."""
_STAGE = r"^[a-z][a-z_]{0,31}$"


class StageTimings(BaseModel):
    """A backup's per-stage timings as its manifest records them (pipeline.profile.StageReport).

    ``stage_seconds``: thread-seconds per stage (read, compress, encrypt, hash, write, waiting);
    ``bottleneck``: the stage that did the most work; ``cores_busy``: the machine's CPU use
    over the run (0..1); ``wall_seconds``: how long the streaming took."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    stage_seconds: dict[str, float] = Field(default_factory=dict)
    bottleneck: str | None = Field(default=None, pattern=_STAGE)
    cores_busy: float | None = Field(default=None, ge=0, le=1)
    wall_seconds: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _stage_names(self) -> StageTimings:
        for name, seconds in self.stage_seconds.items():
            if not re.match(_STAGE, name) or seconds < 0:
                raise ValueError(f"stage {name!r} ({seconds}s): a lower-case name and seconds >= 0")
        return self


def stage_timings(manifest: Manifest) -> StageTimings | None:
    """The backup's recorded stage timings; None when it has none (taken before Safehold
    recorded them) or they are malformed (an unencrypted manifest is anyone's to edit)."""
    raw = manifest.engine_meta.get(PIPELINE_KEY)
    if not isinstance(raw, dict):
        return None
    try:
        return StageTimings.model_validate(raw)
    except ValidationError:
        return None


# ObjectRecord.sha256 of an object that is not hashed: an encrypted one (its tags check it).
# Empty rather than left out, so that a safehold from before (which requires the field, and
# restores encrypted objects by their tags) still restores such a backup.
NOT_HASHED = ""


class ManifestFormatError(Unsupported):
    """A manifest written by a newer safehold (exit 8, as a newer repository config: upgrade)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class ObjectRecord(_Model):
    """One data object of a backup: a stream of independent chunks."""

    name: str = Field(description="object name inside the backup, e.g. 'db.pages'")
    raw_size: int = Field(ge=0, description="bytes before compression and encryption")
    stored_size: int = Field(ge=0, description="bytes in storage")
    sha256: str = Field(
        description="hex SHA-256 of the stored bytes; empty (NOT_HASHED) for an encrypted object:"
        " its frames' AES-GCM tags authenticate every payload byte, its place and its object,"
        " and the manifest's MAC its sizes (docs/format.md)")
    chunks: int = Field(ge=0)
    meta: dict[str, Any] = Field(default_factory=dict, description="engine-specific facts")
    compression: str | None = Field(
        default=None, description="the codec of this object's frames when it is not the"
        " backup's: 'none' for data its engine's tool compressed itself (a pg_dump archive"
        " compressed by pg_dump). Left out of the manifest and its MAC'd bytes when unset")


class Manifest(_Model):
    format: int = FORMAT_VERSION
    backup_id: str
    target: str
    namespace: str | None = Field(
        default=None, description="the target's namespace when the operator wrote it: the full"
        " name is '<namespace>/<target>', so two namespaces' 'orders' never pass for each other")
    repo_id: str | None = Field(
        default=None, description="id of the repository the backup was written to (format 2)")
    database: str | None = Field(
        default=None, description="the database's real name when the target names several"
        " (its backups live under '<target>@<database>'); left out of the MAC'd bytes when unset")
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
    # Where the manifest was read from, (target, backup id): set by the repository, not stored.
    _source: tuple[str, str] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _fields_of_its_format(self) -> Manifest:
        if self.format < 2 and (self.namespace is not None or self.repo_id is not None):
            raise ValueError("a format-1 manifest has no 'namespace' or 'repo_id'")
        return self

    @property
    def full_name(self) -> str:
        """The target's namespace-qualified name, e.g. 'shop/orders' (or just 'orders')."""
        return f"{self.namespace}/{self.target}" if self.namespace else self.target

    @property
    def source(self) -> tuple[str, str]:
        """(target, backup id) of the key the manifest was read from; its own fields if new."""
        return self._source or (self.target, self.backup_id)

    def __eq__(self, other: object) -> bool:  # content only: where it was read is no part of it
        return isinstance(other, Manifest) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # fields hold dicts: never hashable

    def read_from(self, target: str, backup_id: str) -> Manifest:
        self._source = (target, backup_id)
        return self

    @property
    def raw_bytes(self) -> int:
        return sum(o.raw_size for o in self.objects)

    @property
    def stored_bytes(self) -> int:
        return sum(o.stored_size for o in self.objects)

    @property
    def tool_compressed(self) -> bool:
        """Whether the engine's tool compressed some objects itself (pg_dump): their raw size
        is then the compressed size, and no compression ratio can be told."""
        return any(o.compression is not None for o in self.objects)

    @property
    def compression_ratio(self) -> float | None:
        """Raw / stored bytes; None when the dump tool compressed (:attr:`tool_compressed`)."""
        if self.tool_compressed:
            return None
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else 1.0

    @property
    def reported_ratio(self) -> float | None:
        """:attr:`compression_ratio` as results report it: to 3 places, or None."""
        ratio = self.compression_ratio
        return None if ratio is None else round(ratio, 3)

    def ratio_text(self) -> str:
        """``ratio 2.41``, or what compressed instead."""
        ratio = self.compression_ratio
        return "compressed by the dump tool" if ratio is None else f"ratio {ratio:.2f}"

    def object(self, name: str) -> ObjectRecord:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(f"backup {self.backup_id} has no object {name!r}")

    def signing_bytes(self) -> bytes:
        """Canonical bytes covered by the MAC: the manifest without its ``mac`` field."""
        # Format 1 had no namespace/repo_id: leave them out so its MACs still verify.
        legacy = ("namespace", "repo_id") if self.format < 2 else ()
        exclude = {"mac": True, **dict.fromkeys(legacy, True), **self._unset()}
        body = self.model_dump(mode="json", exclude=exclude)
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2, exclude=self._unset()).encode() + b"\n"

    def _unset(self) -> dict[str, Any]:
        """The optional fields added within format 2 that this manifest leaves unset: written
        and MAC'd as before they existed, so earlier manifests keep their bytes and MACs."""
        unset: dict[str, Any] = {"database": True} if self.database is None else {}
        plain = {i: {"compression"} for i, o in enumerate(self.objects) if o.compression is None}
        if plain:
            unset["objects"] = plain
        return unset

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            version = json.loads(data).get("format", 0)
        except (ValueError, AttributeError):
            version = 0  # not a JSON object: validation below names the problem
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise ManifestFormatError(
                f"manifest format {version} is newer than this safehold understands"
                f" ({FORMAT_VERSION}): upgrade safehold", hint="upgrade safehold")
        return cls.model_validate_json(data)
