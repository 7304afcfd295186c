"""Retries for storage, on the runner's one policy (:mod:`safehold.retry`), transient errors only.

Backends classify their SDK's exceptions into :class:`TransientStorageError` (5xx, throttling,
connection resets, timeouts) or a permanent :class:`StorageError` (403, missing bucket, bad
credentials) and call :func:`retry_call` around each idempotent request (a part upload, a ranged
read, a list page). :class:`RetryingStorage` wraps any backend's whole idempotent operations.
A streaming ``put`` cannot be replayed from its iterator, so backends retry its parts instead;
a streaming ``get`` resumes where it broke off with :func:`resuming_read` (a ranged re-open).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

from safehold.retry import DEFAULT_POLICY, RetryPolicy, retry_call
from safehold.storage.base import ObjectInfo, Storage, StorageError, TransientStorageError

__all__ = ["DEFAULT_POLICY", "RetryPolicy", "RetryingStorage", "is_transient", "resuming_read",
           "retry_call"]
T = TypeVar("T")
log = logging.getLogger("safehold.storage.retry")


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, StorageError) and exc.transient


class BlockReader(Protocol):
    """An open download: ``read(n)`` returns up to ``n`` bytes (b"" at the end).

    Backends adapt their SDK's response body to this, raising TransientStorageError for a cut
    connection or a read timeout so that :func:`resuming_read` re-opens at the offset reached.
    """

    def read(self, n: int) -> bytes: ...

    def close(self) -> None: ...


def resuming_read(first: BlockReader, reopen: Callable[[int], BlockReader], size: int, *,
                  chunk_size: int, what: str, policy: RetryPolicy = DEFAULT_POLICY
                  ) -> Iterator[bytes]:
    """Yield ``size`` bytes from ``first``; after a transient failure, ``reopen(offset)`` and go on.

    Each block gets the full retry budget of ``policy``, so a long download survives many
    separate interruptions while a dead endpoint still fails after ``policy.attempts`` tries.
    ``reopen`` should pin the version it read first (an ETag precondition), so an object
    overwritten meanwhile fails instead of yielding a torn mixture of the two.
    """
    current: BlockReader | None = first
    offset = 0

    def next_block() -> bytes:
        nonlocal current
        if current is None:
            current = reopen(offset)
        try:
            block = current.read(min(chunk_size, size - offset))
            if not block:
                raise TransientStorageError(f"{what}: connection ended at byte {offset} of {size}")
        except TransientStorageError:
            current.close()
            current = None
            raise
        return block

    try:
        while offset < size:
            block = retry_call(next_block, what=f"{what} (from byte {offset})", policy=policy)
            offset += len(block)
            yield block
    finally:
        if current is not None:
            current.close()


class RetryingStorage:
    """Any backend, with its idempotent whole-object operations retried."""

    def __init__(self, inner: Storage, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.inner = inner
        self.policy = policy
        self.url = inner.url

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return retry_call(fn, what=f"{what} on {self.url}", policy=self.policy)

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        return self.inner.put(key, chunks)  # parts are retried inside the backend

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(lambda: self.inner.put_bytes(key, data), f"put {key}")

    def get(self, key: str, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        return self.inner.get(key, chunk_size=chunk_size)

    def get_bytes(self, key: str) -> bytes:
        return self._call(lambda: self.inner.get_bytes(key), f"get {key}")

    def stat(self, key: str) -> ObjectInfo:
        return self._call(lambda: self.inner.stat(key), f"stat {key}")

    def exists(self, key: str) -> bool:
        return self._call(lambda: self.inner.exists(key), f"exists {key}")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(self._call(lambda: list(self.inner.list(prefix)), f"list {prefix!r}"))

    def delete(self, key: str) -> None:
        self._call(lambda: self.inner.delete(key), f"delete {key}")

    def free_space(self) -> int | None:
        return self.inner.free_space()

    # conditional writes retry inside the backends (they must tell a lost race from a lost reply)
    def put_if_absent(self, key: str, data: bytes) -> str:
        return self.inner.put_if_absent(key, data)

    def replace_if(self, key: str, data: bytes, expected: str) -> str:
        return self.inner.replace_if(key, data, expected)

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        return self._call(lambda: self.inner.get_versioned(key), f"get {key}")

    def cleanup_incomplete(self, older_than: float = 3600) -> int:
        return self._call(lambda: self.inner.cleanup_incomplete(older_than), "cleanup")
