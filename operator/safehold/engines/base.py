"""The engine Protocol: how a database is streamed into objects and back.

An engine never sees storage, compression or encryption. A backup hands iterables of raw bytes to
a :class:`BackupSink` (the pipeline chunks, compresses, encrypts and stores them); a restore reads
raw bytes back from a :class:`ChainReader`. Engines register by name in :data:`ENGINES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from safehold.api.manifest import BackupType, Manifest, ObjectRecord


class EngineError(Exception):
    """A database-side failure, with a message that says what to fix."""

    transient = False


class UnsupportedError(EngineError):
    """The engine cannot do what was asked (backup type, selective restore, ...)."""


@dataclass(frozen=True)
class Capabilities:
    backup_types: tuple[BackupType, ...] = ("full",)
    selective_restore: bool = False
    point_in_time: bool = False


class BackupSink(Protocol):
    def put(self, name: str, data: Iterable[bytes], *, meta: Mapping[str, Any] | None = None
            ) -> ObjectRecord:
        """Stream one object into the backup; returns its record once it is stored."""
        ...


class ChainReader(Protocol):
    """Read access to the objects of backups in the repository (raw, decoded bytes)."""

    def open(self, backup: Manifest, name: str) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class BackupRequest:
    type: BackupType
    # The chain this backup extends, root (full) first; empty for a full backup. For an
    # incremental the parent is chain[-1]; for a differential it is chain[0].
    chain: Sequence[Manifest] = ()
    include: Sequence[str] | None = None


@dataclass
class BackupOutcome:
    server_version: str = ""
    start_position: dict[str, str] | None = None
    end_position: dict[str, str] | None = None
    engine_meta: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RestoreRequest:
    # The backups to apply, root (full) first, ending with the one restored to.
    chain: Sequence[Manifest]
    include: Sequence[str] | None = None
    conflict: Literal["fail", "replace"] = "replace"


@dataclass(frozen=True)
class CheckReport:
    ok: bool
    server_version: str = ""
    problems: tuple[str, ...] = ()


class Engine(Protocol):
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def check(self, purpose: Literal["backup", "restore"]) -> CheckReport: ...

    def estimate_size(self) -> int | None:
        """Bytes the next full backup will read (for the free-space check), if known."""
        ...

    def backup(self, request: BackupRequest, sink: BackupSink, chain: ChainReader
               ) -> BackupOutcome: ...

    def restore(self, request: RestoreRequest, chain: ChainReader) -> None: ...


def check_request(engine: Engine, backup_type: BackupType, *, include: object = None) -> None:
    """Refuse what the engine's capabilities do not cover, with a clear message."""
    caps = engine.capabilities
    if backup_type not in caps.backup_types:
        raise UnsupportedError(
            f"the {engine.name} engine cannot make {backup_type} backups;"
            f" supported: {', '.join(caps.backup_types)}"
        )
    if include and not caps.selective_restore:
        raise UnsupportedError(f"the {engine.name} engine does not support selective restore")


EngineFactory = Any  # Callable[[str], Engine]; typed loosely so engines register lazily
_REGISTRY: dict[str, EngineFactory] = {}


def register(scheme: str, factory: EngineFactory) -> None:
    _REGISTRY[scheme] = factory


def open_engine(url: str) -> Engine:
    """The engine for a target URL such as ``sqlite:///var/lib/app.db``."""
    from urllib.parse import urlsplit

    from safehold.engines import sqlite  # noqa: F401  (registers sqlite://)

    scheme = urlsplit(url).scheme
    if scheme not in _REGISTRY:
        raise ValueError(
            f"unsupported target {url!r}: expected one of "
            + ", ".join(f"{s}://" for s in sorted(_REGISTRY))
        )
    engine: Engine = _REGISTRY[scheme](url)
    return engine
