"""The engine Protocol: how a database is streamed into objects and back.

An engine never sees storage or encryption. A backup hands iterables of raw bytes to a
:class:`BackupSink` (the pipeline chunks, compresses, encrypts and stores them); a restore reads
raw bytes back from a :class:`ChainReader`. The one exception to "the pipeline compresses": an
engine whose tool writes a compressed format (pg_dump) may have it compress with the backup's
codec and hand the result over as ``compressed``. Engines register by name in :data:`ENGINES`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from safehold.api.errors import Conflict, DatabaseProblem, Exit, NotFoundError, Unsupported
from safehold.api.manifest import BackupMethod, BackupType, Manifest, ObjectRecord
from safehold.engines.recovery import Recovery
from safehold.registry import SchemeRegistry


class EngineError(DatabaseProblem):
    """A database-side failure, with a message that says what to fix."""

    transient = False


class Abandoned(Exception):
    """A parallel task gave up because another one had failed first (``cause``):
    :func:`~safehold.engines.common.run_parallel` raises that failure, never this one, so no
    user sees it (one that escaped would be reported as the bug it is)."""

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


class UnsupportedError(EngineError, Unsupported):
    """The engine cannot do what was asked (backup type, selective restore, ...)."""

    exit_code = Exit.UNSUPPORTED


# Classified failures: every engine maps its driver's and tools' errors onto these, once, with a
# message that says what to fix. Transient ones are retried with backoff; the others fail at once.
class AuthenticationFailed(EngineError):
    """Wrong user or password, or a certificate the server refused."""


class HostUnreachable(EngineError):
    """Connection refused, no route, DNS failure."""

    transient = True


class ConnectTimeout(EngineError):
    transient = True


class DatabaseMissing(EngineError, NotFoundError):
    """The database (or a table/collection named in --include) does not exist."""

    exit_code = Exit.NOT_FOUND


class PermissionDenied(EngineError):
    """The user lacks a privilege the operation needs; the message names it."""


class VersionUnsupported(EngineError):
    """The server (or the client tools for it) is a version Safehold does not support."""


class ConflictError(EngineError, Conflict):
    """The restore target already holds what would be overwritten and --conflict is fail."""

    exit_code = Exit.CONFLICT


@dataclass(frozen=True)
class Capabilities:
    backup_types: tuple[BackupType, ...] = ("full",)
    selective_restore: bool = False
    point_in_time: bool = False
    # The backup types of each method the engine has besides logical (logical: backup_types).
    physical_types: tuple[BackupType, ...] = ()

    def types_of(self, method: BackupMethod) -> tuple[BackupType, ...]:
        return self.backup_types if method == "logical" else self.physical_types


class BackupSink(Protocol):
    """Where an engine streams its objects.

    ``put`` may be called from several threads at once for distinct names (engines dump tables
    or collections in parallel); every storage backend's contract suite checks concurrent puts.
    """

    def put(self, name: str, data: Iterable[bytes], *, meta: Mapping[str, Any] | None = None,
            compressed: bool = False) -> ObjectRecord:
        """Stream one object into the backup; returns its record once it is stored.

        ``compressed``: the engine's tool compressed ``data`` already (with
        :attr:`BackupRequest.compression`): it is stored encrypted but not compressed again."""
        ...


class ChainReader(Protocol):
    """Read access to the objects of backups in the repository (raw, decoded bytes)."""

    def open(self, backup: Manifest, name: str, *, head: bool = False) -> Iterator[bytes]:
        """The object's decoded bytes. ``head``: the caller reads only its first blocks (a
        listing) and reads the object again to use it, so they count neither as progress nor
        in the sizes a restore reports, even when the head is the whole object."""
        ...


@dataclass(frozen=True)
class BackupRequest:
    type: BackupType
    # The chain this backup extends, root (full) first; empty for a full backup. For an
    # incremental the parent is chain[-1]; for a differential it is chain[0].
    chain: Sequence[Manifest] = ()
    include: Sequence[str] | None = None
    method: BackupMethod = "logical"
    # The backup's codec spec ("zstd:3", "none"): an engine whose tool can compress with it may
    # have the tool do so and put that object ``compressed`` (BackupSink.put).
    compression: str = "none"


@dataclass
class BackupOutcome:
    server_version: str = ""
    start_position: dict[str, str] | None = None
    end_position: dict[str, str] | None = None
    engine_meta: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)


ConflictPolicy = Literal["fail", "replace"]


@dataclass(frozen=True)
class RestoreRequest:
    # The backups to apply, root (full) first, ending with the one restored to.
    chain: Sequence[Manifest]
    include: Sequence[str] | None = None
    conflict: ConflictPolicy = "replace"
    # Point-in-time: replay these logs after the chain, up to a target (engines/recovery.py).
    recovery: Recovery | None = None


@dataclass(frozen=True)
class CheckReport:
    ok: bool
    server_version: str = ""
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what could not be checked, and why (not a failure)


_USERINFO = re.compile(r"(?<=://)([^/@\s:]*):[^/@\s]*@")


def redact_url(text: str) -> str:
    """``text`` with the password of any ``scheme://user:password@host`` replaced by ``***``."""
    return _USERINFO.sub(r"\1:***@", text)


class Engine(Protocol):
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def check(self, purpose: Literal["backup", "restore"]) -> CheckReport: ...

    def estimate_size(self) -> int | None:
        """Bytes the next full backup will read (for the free-space check), if known."""
        ...

    def require_database(self) -> None:
        """Raise :class:`DatabaseMissing` if the database to back up does not exist. A backup
        asks this when ``estimate_size()`` gave no size, before it writes anything to the
        repository (a missing and an empty database both have no size)."""
        ...

    def backup(self, request: BackupRequest, sink: BackupSink, chain: ChainReader
               ) -> BackupOutcome: ...

    def restore(self, request: RestoreRequest, chain: ChainReader) -> None: ...


def check_request(engine: Engine, backup_type: BackupType, *, include: object = None,
                  method: BackupMethod = "logical") -> None:
    """Refuse what the engine's capabilities do not cover, with a message that says what to
    run instead."""
    caps = engine.capabilities
    types = caps.types_of(method)
    if not types:
        raise UnsupportedError(
            f"the {engine.name} engine has no {method} backups; use --method logical")
    if backup_type not in types:
        other: BackupMethod = "physical" if method == "logical" else "logical"
        if backup_type in caps.types_of(other):
            raise UnsupportedError(
                f"{engine.name} {backup_type} backups chain onto {other} fulls, not {method}"
                f" ones: take a full with `safehold backup --method {other}`, then"
                f" `safehold backup --method {other} --type {backup_type}`",
                hint=f"use --method {other} (BackupTarget spec.method: {other})")
        raise UnsupportedError(
            f"the {engine.name} engine cannot make {backup_type} backups;"
            f" supported: {', '.join(caps.backup_types)}"
        )
    if include and not caps.selective_restore:
        raise UnsupportedError(f"the {engine.name} engine does not support selective restore")


@dataclass(frozen=True)
class ConnectionOptions:
    """How to reach a database server, beyond what the target URL says.

    The password is resolved by the caller (URL, --password-file, SAFEHOLD_PASSWORD, or the
    client's own convention such as PGPASSWORD / MYSQL_PWD) and must never reach logs, errors,
    process arguments or manifests: client tools get it through the environment or a file.
    """

    password: str | None = field(default=None, repr=False)
    tls: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    connect_timeout: float = 10.0
    jobs: int | None = None  # parallel workers for engines that dump per table/collection
    scratch_dir: str | None = None  # for engines that need a local snapshot (SQLite)


EngineFactory = Callable[[str, ConnectionOptions], Engine]
_ENGINES: SchemeRegistry[EngineFactory] = SchemeRegistry(
    "target",
    {
        "sqlite": "safehold.engines.sqlite",
        "postgresql": "safehold.engines.postgres",
        "postgres": "safehold.engines.postgres",
        "mysql": "safehold.engines.mysql",
        "mariadb": "safehold.engines.mysql",
        "mongodb": "safehold.engines.mongodb",
        "mongodb+srv": "safehold.engines.mongodb",
    },
    example="sqlite:///abs/path.db or postgresql://user@host:5432/db",
)
register = _ENGINES.register


def open_engine(url: str, options: ConnectionOptions | None = None) -> Engine:
    """The engine for a target URL such as ``sqlite:///var/lib/app.db``."""
    return _ENGINES.factory(url)(url, options or ConnectionOptions())
