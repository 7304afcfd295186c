"""The storage Protocol every backend implements, and the registry by URL scheme.

Keys are '/'-separated relative paths inside the repository root the backend was opened on.
Backends are small: retries, rate limits and logging are wrappers (see DESIGN.md section 7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from safehold.api.errors import Exit, StorageProblem
from safehold.registry import SchemeRegistry


class StorageError(StorageProblem):
    """A storage operation failed; ``transient`` says whether retrying may help."""

    transient = False


class ObjectNotFound(StorageError):
    exit_code = Exit.NOT_FOUND

    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key}")
        self.key = key


class NoSpaceError(StorageError):
    """Not enough free space for the backup that is about to start."""


class TransientStorageError(StorageError):
    transient = True


class StorageAuthError(StorageError):
    """The storage refused the credentials or denied the operation (S3 AccessDenied,
    InvalidAccessKeyId, SignatureDoesNotMatch, expired tokens, any 403; GCS and Azure 401/403;
    no usable credentials at all). Exit 7 like any storage failure; the audit log records it as
    ``auth.failure``."""

    auth_failure = True


class ConditionFailed(StorageError):
    """A conditional write lost: the object already exists (``put_if_absent``), or it is absent
    or no longer the version the caller named (``replace_if``). Nothing was written."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"conditional write of {key} refused: {detail}")
        self.key = key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


@runtime_checkable
class Storage(Protocol):
    url: str

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the concatenated chunks under ``key`` atomically; return the bytes written.

        Readers never see a partial object: on error nothing is left under ``key`` (an existing
        object is replaced only when the new one is complete).
        """
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get(self, key: str, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the object's bytes; raise ObjectNotFound when absent (before yielding)."""
        ...

    def get_bytes(self, key: str) -> bytes: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (a plain string prefix), sorted by key."""
        ...

    def delete(self, key: str) -> None:
        """Remove one object; absent objects are not an error."""
        ...

    def free_space(self) -> int | None:
        """Bytes available for new objects, or None when the backend has no such limit."""
        ...

    # -- conditional writes: the primitive under leases (safehold.repository.lease) ---------------
    # Versions are opaque strings (an S3/Azure ETag, a GCS generation, a local content hash).
    # Callers make every write's bytes unique (leases carry a random token): some backends
    # derive versions from content, and a retried write is recognised as ours by its bytes.

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Create ``key`` holding ``data`` only if no object exists there; return its version.

        Atomic on the server (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``, Azure
        ``If-None-Match: *``, a hard link locally): of concurrent callers exactly one wins, the
        others get ConditionFailed.
        """
        ...

    def replace_if(self, key: str, data: bytes, expected: str) -> str:
        """Overwrite ``key`` with ``data`` only if its current version is ``expected``; return
        the new version. ConditionFailed when it changed or is absent (nothing is created)."""
        ...

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """An object's bytes and the version they belong to, read together."""
        ...

    def cleanup_incomplete(self, older_than: float = 3600) -> int:
        """Discard writes abandoned for ``older_than`` seconds; return how many were discarded.

        A killed writer leaves an unfinished write behind (a temp file, an S3 multipart upload,
        uncommitted Azure blocks…) that readers never see but that takes space. They are kept
        for a while because a restarted writer resumes from them; ``safehold prune`` calls this.
        """
        ...


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid storage key, else raise ValueError naming the problem.

    Keys are relative '/'-separated paths without empty, '.' or '..' segments, so every backend
    (filesystems included) maps them to the same objects.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid storage key {key!r}: keys are non-empty strings")
    if key.startswith("/"):
        raise ValueError(f"invalid storage key {key!r}: keys are relative, drop the leading '/'")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or "\0" in segment:
            raise ValueError(
                f"invalid storage key {key!r}: the segment {segment!r} is empty, '.', '..' or"
                " holds a NUL; keys are relative '/'-separated paths such as"
                " 'target/backup-id/manifest.json'"
            )
    return key


StorageFactory = Callable[[str], Storage]
_BACKENDS: SchemeRegistry[StorageFactory] = SchemeRegistry(
    "repository",
    {
        "file": "safehold.storage.local",
        "s3": "safehold.storage.s3",
        "gs": "safehold.storage.gcs",
        "az": "safehold.storage.azure",
    },
    example="file:///abs/dir, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix",
)
register = _BACKENDS.register


def open_storage(url: str) -> Storage:
    """Open the backend for a repository URL such as ``file:///var/backups`` or ``s3://b/p``."""
    return _BACKENDS.factory(url)(url)
