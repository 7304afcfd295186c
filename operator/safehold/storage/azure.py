"""Azure Blob Storage: ``az://container/prefix``; the key ``k`` is the block blob ``prefix/k``.

The account comes from the URL (``?account=NAME`` for ``https://NAME.blob.core.windows.net``, or
``?endpoint=URL`` for another endpoint such as Azurite's) or from a connection string.
Credentials, first found wins: AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY (account
key), AZURE_STORAGE_SAS_TOKEN, else azure-identity's DefaultAzureCredential (managed identity,
AKS workload identity, environment service principal).

put() stages fixed-size blocks (several at once, each retried on its own and MD5-checked by the
service) and commits the block list at the end: the blob changes in that one step, so readers see
the old blob or the new one. Block ids are the base64 of ``<index:08d>-<md5 hex>`` (one fixed
length, as Azure requires), so they name their content: a repeated put of the same key asks for
the blob's block lists and skips every block that is already there with identical content, which
makes an interrupted upload resumable. Objects smaller than one block are a single Put Blob.
Uncommitted blocks of an abandoned put expire on Azure by themselves after 7 days.

The SDK's own retry policy is off (retry_total=0); every request goes through
:func:`retry_call`. One SDK loop cannot be turned off: the downloader re-reads a range whose body
broke off up to 3 times (1 s apart) before it reports an error.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core import exceptions as aexc
from azure.storage.blob import (
    BlobBlock,
    BlobClient,
    ContainerClient,
    StorageStreamDownloader,
)

from safehold.storage.azure_connect import classify, make_service, parse_url
from safehold.storage.base import (
    ConditionFailed,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    check_key,
    register,
)
from safehold.storage.cloud import ObjectStore, check_list_prefix
from safehold.storage.conditional import conditional_write
from safehold.storage.parts import (
    MiB,
    TransferStats,
    check_tuning,
    md5_of,
    upload_parts,
    whole_or_parts,
)
from safehold.storage.retry import DEFAULT_POLICY, RetryPolicy, resuming_read, retry_call

T = TypeVar("T")
# A blob holds at most 50,000 blocks: growing them every 10,000 reaches 15 x part_size x 10,000
# (2.3 TiB at 16 MiB) while ordinary objects keep small blocks.
GROW_EVERY = 10_000


class AzureBlobStorage(ObjectStore):
    """Block blobs in one container under an optional prefix (see the module docstring)."""

    url: str

    def __init__(self, container: ContainerClient, prefix: str = "", *, url: str | None = None,
                 part_size: int = 16 * MiB, concurrency: int = 4, read_size: int = 8 * MiB,
                 policy: RetryPolicy = DEFAULT_POLICY) -> None:
        check_tuning(part_size=part_size, concurrency=concurrency)
        self._container = container
        self._root = f"{prefix}/" if prefix else ""
        self.url = url or f"az://{container.container_name}/{prefix}".rstrip("/")
        self.part_size, self.concurrency, self.read_size = part_size, concurrency, read_size
        self.policy = policy
        self.stats = TransferStats()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AzureBlobStorage:
        """Open ``az://container/prefix?account=NAME`` (or ``?endpoint=URL``).

        ``part_size`` (default 16MiB), ``concurrency`` (blocks in flight, default 4) and
        ``timeout`` (seconds, default 120) in the query tune transfers; keyword ``options``
        override them.
        """
        container, prefix, account, endpoint, tuning = parse_url(url)
        options = {**tuning, **options}
        timeout = options.pop("timeout", 120.0)
        check_tuning(timeout=timeout)
        service = make_service(account, endpoint, timeout)
        return cls(service.get_container_client(container), prefix, url=url, **options)

    # -- writing -----------------------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        blob = self._blob(key)
        parts = whole_or_parts(chunks, self.part_size, grow_every=GROW_EVERY)
        if isinstance(parts, bytes):
            data = parts
            self._call(lambda: self._put_blob(key, blob, data), f"upload {key}")
            self.stats.uploaded(len(data))
            return len(data)
        return self._put_blocks(key, blob, parts)

    def _put_blob(self, key: str, blob: BlobClient, data: bytes) -> None:
        with self._errors(f"upload {key}"):
            blob.upload_blob(data, overwrite=True, validate_content=True, max_concurrency=1)

    def _put_blocks(self, key: str, blob: BlobClient, parts: Iterator[bytes]) -> int:
        stored = self._call(lambda: self._stored_blocks(key, blob), f"list blocks of {key}")

        def send(index: int, data: bytes) -> tuple[str, bool]:
            block_id = base64.b64encode(f"{index:08d}-{md5_of(data).hex()}".encode()).decode()
            if stored.get(block_id) == len(data):
                return block_id, False  # staged by an earlier, interrupted put

            def stage() -> None:
                with self._errors(f"upload block {index} of {key}"):
                    blob.stage_block(block_id, data, length=len(data), validate_content=True)

            self._call(stage, f"upload block {index} of {key}")
            return block_id, True

        ids, total = upload_parts(parts, send, stats=self.stats, concurrency=self.concurrency)

        def commit() -> None:
            with self._errors(f"commit {key}"):
                blob.commit_block_list([BlobBlock(block_id=i) for i in ids])

        self._call(commit, f"commit {key}")
        return total

    def _stored_blocks(self, key: str, blob: BlobClient) -> dict[str, int]:
        """Ids and sizes of the blob's committed and uncommitted blocks (none if no blob)."""
        try:
            with self._errors(f"list blocks of {key}", key):
                committed, uncommitted = blob.get_block_list("all")
        except ObjectNotFound:
            return {}
        return {b.id: b.size for b in [*committed, *uncommitted]}

    def delete(self, key: str) -> None:
        blob = self._blob(key)

        def delete() -> None:
            with self._errors(f"delete {key}", key):
                blob.delete_blob(delete_snapshots="include")

        try:
            self._call(delete, f"delete {key}")
        except ObjectNotFound:
            return

    def cleanup_incomplete(self, older_than: float = 24 * 3600) -> int:
        """Delete blobs that only have uncommitted blocks, older than ``older_than`` seconds.

        Those are what a put killed mid-way leaves behind (Azure would drop them itself after 7
        days). Uncommitted blocks staged for a blob that *has* committed content (an
        interrupted overwrite) cannot be removed without rewriting the blob; they expire.
        Returns how many were deleted.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        committed = {b.name for b in self._blobs(self._root)}
        removed = 0
        for blob in self._blobs(self._root, include=["uncommittedblobs"]):
            if blob.name in committed or blob.last_modified >= cutoff:
                continue
            try:
                self.delete(blob.name[len(self._root):])
            except StorageError:
                continue  # the service keeps them: they expire after 7 days
            removed += 1
        return removed

    # -- conditional writes (leases) ---------------------------------------------------------
    # Put Blob with If-None-Match: * (overwrite=False) or If-Match: <etag>; versions are ETags.

    def put_if_absent(self, key: str, data: bytes) -> str:
        return self._upload_if(key, data, {"overwrite": False}, "it already exists")

    def replace_if(self, key: str, data: bytes, expected: str) -> str:
        return self._upload_if(key, data, {"overwrite": True, "etag": expected,
                                           "match_condition": MatchConditions.IfNotModified},
                               "it is absent or was replaced")

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        blob = self._blob(key)

        def download() -> tuple[bytes, str]:
            with self._errors(f"read {key}", key):
                downloader = blob.download_blob(max_concurrency=1)
                return downloader.readall(), str(downloader.properties.etag)

        return self._call(download, f"read {key}")

    def _upload_if(self, key: str, data: bytes, condition: dict[str, Any], lost: str) -> str:
        blob = self._blob(key)

        def write() -> str:
            with self._errors(f"upload {key}"):
                try:
                    response = blob.upload_blob(data, validate_content=True, max_concurrency=1,
                                                **condition)
                except (aexc.ResourceExistsError, aexc.ResourceModifiedError) as exc:
                    raise ConditionFailed(key, lost) from exc
                except aexc.ResourceNotFoundError as exc:
                    code = getattr(exc, "error_code", None)
                    if "etag" in condition and getattr(code, "value", code) == "BlobNotFound":
                        raise ConditionFailed(key, lost) from exc
                    raise
            return str(response["etag"])

        return conditional_write(write, lambda: self.get_versioned(key), data,
                                 what=f"upload {key} on {self.url}", policy=self.policy)

    # -- reading -----------------------------------------------------------------------------

    def get(self, key: str, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the blob; after a broken connection, resume with a ranged read at the byte
        reached, of the same version (etag), so a blob replaced meanwhile fails the read
        instead of mixing old and new bytes."""
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        blob = self._blob(key)

        def download(**ranged: Any) -> _Body:
            with self._errors(f"read {key}", key):
                return _Body(blob.download_blob(max_concurrency=1, **ranged), self, key)

        first = self._call(download, f"read {key}")  # ObjectNotFound before anything is yielded
        size, etag = first.downloader.size, first.downloader.properties.etag

        def reopen(offset: int) -> _Body:
            try:
                return download(offset=offset, length=size - offset, etag=etag,
                                match_condition=MatchConditions.IfNotModified)
            except ObjectNotFound:
                raise StorageError(f"{key} in {self.url} was deleted while it was being read;"
                                   " read it again") from None

        return resuming_read(first, reopen, size, chunk_size=chunk_size,
                             what=f"read {key} from {self.url}", policy=self.policy)

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.get(key, chunk_size=self.read_size))

    def stat(self, key: str) -> ObjectInfo:
        blob = self._blob(key)
        props = self._call(lambda: self._properties(key, blob), f"stat {key}")
        return ObjectInfo(key, props.size, props.last_modified)

    def _properties(self, key: str, blob: BlobClient) -> Any:
        with self._errors(f"stat {key}", key):
            return blob.get_blob_properties()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Blobs whose key starts with ``prefix``, in key order (Azure lists in name order)."""
        check_list_prefix(prefix)
        for blob in self._blobs(self._root + prefix):
            yield ObjectInfo(blob.name[len(self._root):], blob.size, blob.last_modified)

    # -- internals ---------------------------------------------------------------------------

    def _blob(self, key: str) -> BlobClient:
        check_key(key)
        return self._container.get_blob_client(self._root + key)

    def _blobs(self, prefix: str, include: Sequence[str] | None = None) -> Iterator[Any]:
        """Every blob under ``prefix``, one retried request per page of 1000."""
        token: str | None = None
        while True:
            page, token = self._call(
                lambda t=token: self._list_page(prefix, t, include),  # type: ignore[misc]
                f"list {prefix!r}")
            yield from page
            if not token:
                return

    def _list_page(self, prefix: str, token: str | None, include: Sequence[str] | None
                   ) -> tuple[Sequence[Any], str | None]:
        with self._errors(f"list {prefix!r}"):
            pages: Any = self._container.list_blobs(
                name_starts_with=prefix or None, include=[*include] if include else None,
                results_per_page=1000).by_page(token)
            page = list(next(pages))
            return page, pages.continuation_token

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return retry_call(fn, what=f"{what} on {self.url}", policy=self.policy)

    @contextmanager
    def _errors(self, what: str, key: str = "") -> Iterator[None]:
        """Translate SDK exceptions into ObjectNotFound (of ``key``), transient or permanent
        StorageErrors."""
        try:
            yield
        except aexc.AzureError as exc:
            raise classify(exc, what, key, self.url, self._container.container_name) from exc


class _Body:
    """A download as a BlockReader: SDK errors become (mostly transient) StorageErrors."""

    def __init__(self, downloader: StorageStreamDownloader[bytes], storage: AzureBlobStorage,
                 key: str) -> None:
        self.downloader, self.storage, self.key = downloader, storage, key

    def read(self, n: int) -> bytes:
        with self.storage._errors(f"read {self.key}", self.key):
            return bytes(self.downloader.read(n))

    def close(self) -> None:
        """Nothing to release: the SDK holds no connection between reads."""


register("az", AzureBlobStorage.from_url)
