"""Google Cloud Storage: ``gs://bucket/prefix``; the key ``k`` is the object ``prefix/k``.

Authentication is Google's application default credentials: a service-account key file named
by GOOGLE_APPLICATION_CREDENTIALS, or, on GKE, workload identity (the Kubernetes service account
bound to a Google one). An emulator is used anonymously when STORAGE_EMULATOR_HOST is set or the
URL says ``?endpoint=http://host:port``.

put() streams in parts uploaded as temporary objects ``prefix/.parts/<hash of key>/<n>``
(several at once, each retried on its own, its MD5 checked against what GCS stored), then
*composes* them into the final object (at most 32 sources per compose, so large objects are
composed in a tree) and deletes them. Compose creates the final object in one step, so readers
see the old object or the new one, never part of it. The part objects are also what makes an
interrupted put resumable: a repeated put of the same key lists them and skips every part whose
size and MD5 match the bytes it is about to send. Resumable upload sessions were not used because
fake-gcs-server, the emulator the tests run against, finalizes a session on a status query (see
docs/testing.md), so resuming them could not be tested; compose behaves there as on GCS.
Objects smaller than one part are a single request.

The SDK's own retries are off: every request goes through :func:`retry_call`, the one policy.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import storage

from safehold.storage.base import (
    ConditionFailed,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    TransientStorageError,
    check_key,
    register,
)
from safehold.storage.cloud import ObjectStore, check_list_prefix
from safehold.storage.conditional import conditional_write
from safehold.storage.gcs_connect import classify, make_client, parse_url
from safehold.storage.parts import (
    MiB,
    TransferStats,
    check_tuning,
    md5_of,
    send_parts,
    upload_parts,
    whole_or_parts,
)
from safehold.storage.retry import DEFAULT_POLICY, RetryPolicy, resuming_read, retry_call

if TYPE_CHECKING:
    from google.cloud.storage import Blob

T = TypeVar("T")
log = logging.getLogger("safehold.storage.gcs")

PARTS_DIR = ".parts"  # first key segment reserved for the part objects of unfinished puts
COMPOSE_LIMIT = 32  # sources per compose request (a GCS limit)


class GCSStorage(ObjectStore):
    """Objects in one bucket under an optional prefix (see the module docstring)."""

    url: str

    def __init__(self, client: storage.Client, bucket: str, prefix: str = "", *,
                 url: str | None = None, part_size: int = 16 * MiB, concurrency: int = 4,
                 read_size: int = 8 * MiB, timeout: float = 120.0,
                 policy: RetryPolicy = DEFAULT_POLICY) -> None:
        check_tuning(part_size=part_size, concurrency=concurrency, timeout=timeout)
        self._client = client
        self._bucket = client.bucket(bucket)
        self._root = f"{prefix}/" if prefix else ""
        self.url = url or f"gs://{bucket}/{prefix}".rstrip("/")
        self.part_size, self.concurrency, self.read_size = part_size, concurrency, read_size
        self.timeout, self.policy = timeout, policy
        self.stats = TransferStats()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> GCSStorage:
        """Open ``gs://bucket/prefix?endpoint=…&part_size=…&concurrency=…&timeout=…``.

        ``endpoint`` points at an emulator; ``part_size`` (default 16MiB), ``concurrency``
        (parts in flight, default 4) and ``timeout`` (seconds per request, default 120) tune
        uploads. Keyword ``options`` override the URL's.
        """
        bucket, prefix, endpoint, tuning = parse_url(url)
        return cls(make_client(endpoint), bucket, prefix, url=url, **{**tuning, **options})

    # -- writing -----------------------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        name = self._name(key)
        parts = whole_or_parts(chunks, self.part_size)
        if isinstance(parts, bytes):
            data = parts
            self._call(lambda: self._upload(name, data), f"upload {key}")
            self.stats.uploaded(len(data))
            return len(data)
        return self._put_parts(key, name, parts)

    def _put_parts(self, key: str, name: str, parts: Iterator[bytes]) -> int:
        upload = self._upload_dir(name)
        stored = {b.name: (b.size, b.md5_hash) for b in self._blobs(upload)}

        def send(index: int, data: bytes) -> tuple[str, bool]:
            part = f"{upload}{index:06d}"
            md5 = base64.b64encode(md5_of(data)).decode()
            if stored.get(part) == (len(data), md5):
                return part, False  # stored by an earlier, interrupted put
            self._call(lambda: self._upload(part, data, md5), f"upload part {index} of {key}")
            return part, True

        sources, total = upload_parts(parts, send, stats=self.stats,
                                      concurrency=self.concurrency)
        self._compose(key, name, sources, upload)
        self._delete_all(upload)
        return total

    def _upload(self, name: str, data: bytes, md5: str | None = None) -> None:
        md5 = md5 or base64.b64encode(md5_of(data)).decode()
        blob = self._bucket.blob(name)
        blob.md5_hash = md5  # sent with the upload: GCS rejects the object if it differs
        with self._errors(f"upload {name}"):
            blob.upload_from_string(data, content_type="application/octet-stream",
                                    checksum=None, retry=None, timeout=self.timeout)
        if blob.md5_hash != md5:
            raise TransientStorageError(
                f"{name} was stored with MD5 {blob.md5_hash}, but {md5} was sent: the data was"
                " damaged in transit")

    def _compose(self, key: str, name: str, sources: list[str], upload: str) -> None:
        """Compose ``sources`` into ``name`` through a tree of at most 32-way composes."""
        level = 0
        while len(sources) > COMPOSE_LIMIT:
            groups = [sources[i:i + COMPOSE_LIMIT] for i in range(0, len(sources), COMPOSE_LIMIT)]
            sources = send_parts(
                groups,
                lambda n, group, lv=level: self._compose_one(  # type: ignore[misc]
                    key, f"{upload}c{lv}-{n:06d}", group),
                workers=self.concurrency)
            level += 1
        self._compose_one(key, name, sources)

    def _compose_one(self, key: str, target: str, sources: list[str]) -> str:
        def compose() -> None:
            dest = self._bucket.blob(target)
            dest.content_type = "application/octet-stream"
            vanished = StorageError(
                f"a part of {key} in {self.url} disappeared before it was composed (was"
                " cleanup_incomplete run with a short age while a backup was running?);"
                " run the backup again")
            with self._errors(f"compose {target}", lambda: vanished):
                dest.compose([self._bucket.blob(s) for s in sources], retry=None,
                             timeout=self.timeout)

        self._call(compose, f"compose {key}")
        return target

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._call(lambda: self._delete_blob(name), f"delete {key}")

    def _delete_blob(self, name: str) -> None:
        with self._errors(f"delete {name}"):
            try:
                self._bucket.delete_blob(name, retry=None, timeout=self.timeout)
            except gexc.NotFound:
                return

    def _delete_all(self, upload: str) -> int:
        """Delete an upload's part objects; failures only leave work for cleanup_incomplete."""
        names = [b.name for b in self._blobs(upload)]
        try:
            send_parts(names, lambda _i, n: self._call(lambda: self._delete_blob(n),
                                                       f"delete {n}"),
                       workers=self.concurrency)
        except StorageError as exc:
            log.warning("could not delete the part objects under %s (%s);"
                        " cleanup_incomplete will", upload, exc)
        return len(names)

    def cleanup_incomplete(self, older_than: float = 24 * 3600) -> int:
        """Delete the part objects of puts that ended unfinished; return how many puts.

        An upload is removed only when its newest part is older than ``older_than`` seconds,
        so a put that is still running (or resuming: it skips old parts) keeps its parts; the
        default of a day leaves a crashed backup the time to be retried and resumed.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        uploads: dict[str, list[Blob]] = defaultdict(list)
        for blob in self._blobs(f"{self._root}{PARTS_DIR}/"):
            uploads[blob.name.rsplit("/", 1)[0] + "/"].append(blob)
        stale = [u for u, blobs in uploads.items() if max(b.updated for b in blobs) < cutoff]
        for upload in stale:
            self._delete_all(upload)
        return len(stale)

    # -- conditional writes (leases) ---------------------------------------------------------
    # A single upload with ifGenerationMatch (0: only if absent); versions are generations.

    def put_if_absent(self, key: str, data: bytes) -> str:
        return self._upload_if(key, data, 0, "it already exists")

    def replace_if(self, key: str, data: bytes, expected: str) -> str:
        try:
            generation = int(expected)
        except ValueError:
            raise ConditionFailed(key, f"{expected!r} is not a GCS generation") from None
        return self._upload_if(key, data, generation, "it is absent or was replaced")

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        name = self._name(key)

        def download() -> tuple[bytes, str]:
            blob = self._bucket.blob(name)
            data: bytes = blob.download_as_bytes(retry=None, timeout=self.timeout)
            return data, str(blob.generation)  # from the same response's headers

        return self._call(lambda: self._object_call(key, download), f"get {key}")

    def _upload_if(self, key: str, data: bytes, generation: int, lost: str) -> str:
        name = self._name(key)
        md5 = base64.b64encode(md5_of(data)).decode()

        def write() -> str:
            blob = self._bucket.blob(name)
            blob.md5_hash = md5
            with self._errors(f"upload {key}"):
                try:
                    blob.upload_from_string(data, content_type="application/octet-stream",
                                            if_generation_match=generation, checksum=None,
                                            retry=None, timeout=self.timeout)
                except gexc.PreconditionFailed:
                    raise ConditionFailed(key, lost) from None
            return str(blob.generation)

        return conditional_write(write, lambda: self.get_versioned(key), data,
                                 what=f"upload {key} on {self.url}", policy=self.policy)

    # -- reading -----------------------------------------------------------------------------

    def get(self, key: str, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream the object as ranged reads of one generation, resumed at the byte reached.

        Pinning the generation means an object replaced meanwhile fails the read instead of
        mixing old and new bytes.
        """
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        blob = self._stat_blob(key)  # now, so a missing object fails before anything is yielded
        source = self._bucket.blob(blob.name)

        def reopen(offset: int) -> _RangeReader:
            return _RangeReader(self, key, source, blob, offset)

        return resuming_read(reopen(0), reopen, blob.size, chunk_size=chunk_size,
                             what=f"read {key} from {self.url}", policy=self.policy)

    def read_range(self, key: str, source: Blob, version: Blob, start: int, end: int
                   ) -> bytes:
        """Bytes ``start..end`` (inclusive) of the object ``version`` describes: one request,
        not retried here.

        GCS enforces the generation precondition. fake-gcs-server ignores it and keeps the
        generation when an object is overwritten, so the whole-object CRC32C that every
        response reports (``x-goog-hash``) is compared with the version's as well.
        """
        generation = version.generation
        replaced = StorageError(
            f"{key} in {self.url} was deleted or replaced while it was being read; read it again")
        try:
            with self._errors(f"read {key}", lambda: replaced):
                data: bytes = source.download_as_bytes(
                    start=start, end=end, if_generation_match=generation, checksum=None,
                    retry=None, timeout=self.timeout)
        except StorageError as exc:
            if isinstance(exc.__cause__, gexc.PreconditionFailed):
                raise replaced from None
            raise
        if source.generation != generation or source.crc32c not in (None, version.crc32c):
            raise replaced
        if len(data) != end - start + 1:
            raise TransientStorageError(
                f"short read of {key}: {len(data)} bytes at {start}, expected {end - start + 1}")
        return data

    def get_bytes(self, key: str) -> bytes:
        name = self._name(key)

        def download() -> bytes:
            data: bytes = self._bucket.blob(name).download_as_bytes(retry=None,
                                                                    timeout=self.timeout)
            return data

        return self._call(lambda: self._object_call(key, download), f"get {key}")

    def stat(self, key: str) -> ObjectInfo:
        blob = self._stat_blob(key)
        return ObjectInfo(key, blob.size, blob.updated)

    def _stat_blob(self, key: str) -> Blob:
        name = self._name(key)

        def lookup() -> Blob:
            blob = self._bucket.get_blob(name, retry=None, timeout=self.timeout)
            if blob is None:
                raise gexc.NotFound(name)  # type: ignore[no-untyped-call]
            return blob

        return self._call(lambda: self._object_call(key, lookup), f"stat {key}")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order (GCS lists in name order)."""
        check_list_prefix(prefix)
        hidden = f"{self._root}{PARTS_DIR}/"
        for blob in self._blobs(self._root + prefix):
            if not blob.name.startswith(hidden):
                yield ObjectInfo(blob.name[len(self._root):], blob.size, blob.updated)

    # -- internals ---------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        check_key(key)
        if key.split("/", 1)[0] == PARTS_DIR:
            raise ValueError(f"invalid storage key {key!r}: {PARTS_DIR!r} is reserved for the"
                             " parts of unfinished uploads")
        return self._root + key

    def _upload_dir(self, name: str) -> str:
        return f"{self._root}{PARTS_DIR}/{hashlib.sha256(name.encode()).hexdigest()[:32]}/"

    def _blobs(self, prefix: str) -> Iterator[Blob]:
        """Every object under ``prefix``, one retried request per page of 1000."""
        token: str | None = None
        while True:
            page, token = self._call(lambda t=token: self._list_page(prefix, t),  # type: ignore[misc]
                                     f"list {prefix!r}")
            yield from page
            if not token:
                return

    def _list_page(self, prefix: str, token: str | None, page_size: int = 1000
                   ) -> tuple[Sequence[Blob], str | None]:
        with self._errors(f"list {prefix!r}"):
            pages = self._client.list_blobs(self._bucket, prefix=prefix, page_token=token,
                                            page_size=page_size, retry=None, timeout=self.timeout)
            page = list(next(pages.pages))
            return page, pages.next_page_token

    def _object_call(self, key: str, fn: Callable[[], T]) -> T:
        """Run a request on one object; a 404 is ObjectNotFound unless the bucket is missing."""
        def missing() -> StorageError:
            # GCS answers 404 for a missing bucket too; listing tells them apart and needs only
            # storage.objects.list, which a runner has (storage.buckets.get it may not have).
            self._list_page(self._root, None, page_size=1)  # raises if the bucket is missing
            return ObjectNotFound(key)

        with self._errors(f"access {key}", missing):
            return fn()

    def _missing_bucket(self) -> StorageError:
        return StorageError(
            f"bucket {self._bucket.name!r} does not exist (repository {self.url}): create it"
            f" (gcloud storage buckets create gs://{self._bucket.name}) or fix the URL")

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return retry_call(fn, what=f"{what} on {self.url}", policy=self.policy)

    @contextmanager
    def _errors(self, what: str, missing: Callable[[], StorageError] | None = None
                ) -> Iterator[None]:
        """Translate SDK and transport exceptions into transient or permanent StorageErrors.

        A 404 means whatever ``missing`` says (an absent object, a vanished part); by default
        the bucket, which is what a 404 on an upload or a listing means.
        """
        try:
            yield
        except gexc.NotFound:
            raise (missing or self._missing_bucket)() from None
        except Exception as exc:
            error = classify(exc, what, self.url)
            if error is None:
                raise
            raise error from exc


class _RangeReader:
    """A BlockReader over one generation of an object: ranged GETs of ``read_size`` bytes.

    Nothing is requested until the first read(), so re-opening at an offset is free.
    """

    def __init__(self, storage: GCSStorage, key: str, source: Blob, version: Blob, offset: int
                 ) -> None:
        self.storage, self.key, self.source, self.version = storage, key, source, version
        self.pos, self.size = offset, version.size
        self.buf, self.at = memoryview(b""), 0

    def read(self, n: int) -> bytes:
        if self.at == len(self.buf):
            if self.pos >= self.size:
                return b""
            end = min(self.pos + max(n, self.storage.read_size), self.size) - 1
            self.buf = memoryview(self.storage.read_range(self.key, self.source, self.version,
                                                            self.pos, end))
            self.at, self.pos = 0, end + 1
        block = bytes(self.buf[self.at:self.at + n])
        self.at += len(block)
        return block

    def close(self) -> None:
        self.buf, self.at = memoryview(b""), 0


register("gs", GCSStorage.from_url)
