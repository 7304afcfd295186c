"""S3 (and S3-compatible) storage: ``s3://bucket/prefix?option=value&…``.

Options in the URL query (all optional):

* ``endpoint`` — e.g. ``http://127.0.0.1:9000`` for MinIO/Ceph/moto (else ``AWS_ENDPOINT_URL``,
  else AWS); ``path_style=true`` for endpoints without virtual-hosted buckets; ``region``.
* ``sse=AES256|aws:kms|aws:kms:dsse`` and ``kms_key_id``; ``storage_class`` (``STANDARD_IA``…).
* ``part_size`` (default 16MiB, min 5MiB), ``concurrency`` (parts in flight, default 4),
  ``timeout`` (seconds to connect and between bytes read, default 60).

Credentials come only from boto3's default chain (environment, AWS_PROFILE, IRSA web identity,
ECS/EC2 instance roles): never from the URL. boto3's own retries are off (one attempt); every
request is retried here with the shared policy of :mod:`safehold.storage.retry`, so there is
one policy and one place that classifies errors (:mod:`safehold.storage.s3_errors`).

Objects larger than one part go up as multipart uploads (:mod:`safehold.storage.s3_multipart`).
A put that fails (or a runner that is killed) leaves its unfinished upload in place on purpose:
the retry of the same backup resumes from its parts, and ``cleanup_incomplete`` (prune) aborts
the ones nobody came back for. Readers never see them.

A missing bucket surfaces on the first request that names it (``NoSuchBucket``), except for
``stat``/``exists``: S3 answers a HEAD of a missing bucket with a bare 404, the same as for a
missing key.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from safehold.storage.base import (
    ConditionFailed,
    ObjectInfo,
    StorageError,
    TransientStorageError,
    check_key,
    register,
)
from safehold.storage.cloud import ObjectStore, parse_store_url
from safehold.storage.conditional import conditional_write
from safehold.storage.parts import MiB, TransferStats, check_tuning, whole_or_parts
from safehold.storage.retry import DEFAULT_POLICY, RetryPolicy, resuming_read, retry_call
from safehold.storage.s3_errors import classify, error_code
from safehold.storage.s3_multipart import (
    GROW_EVERY,
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    MultipartUpload,
    unfinished_uploads,
)

DEFAULT_PART_SIZE = 16 * MiB
DEFAULT_CONCURRENCY = 4
DEFAULT_TIMEOUT = 60.0
MAX_CONCURRENCY = 32
SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR",
                   "REDUCED_REDUNDANCY", "EXPRESS_ONEZONE")
_OPTIONS = ("endpoint", "path_style", "region", "sse", "kms_key_id", "storage_class")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def check_bucket_name(name: str) -> str:
    """Raise ValueError unless ``name`` follows S3's bucket naming rules."""
    problem = None
    if not _BUCKET.match(name):
        problem = ("bucket names are 3-63 characters of lowercase letters, digits, '.' and '-',"
                   " starting and ending with a letter or digit")
    elif ".." in name or ".-" in name or "-." in name:
        problem = "bucket names cannot contain '..', '.-' or '-.'"
    elif name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
        problem = "that prefix/suffix is reserved by S3"
    else:
        try:
            ipaddress.IPv4Address(name)
            problem = "bucket names cannot look like an IP address"
        except ValueError:
            pass
    if problem:
        raise ValueError(f"invalid S3 bucket name {name!r}: {problem}")
    return name


def _flag(value: str, what: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"invalid {what}={value!r}: use true or false")


class S3Storage(ObjectStore):
    """Objects under ``prefix/`` in ``bucket``; the key ``a/b`` is ``prefix/a/b``."""

    url: str

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 region: str | None = None, path_style: bool | None = None,
                 sse: str | None = None, kms_key_id: str | None = None,
                 storage_class: str | None = None, part_size: int = DEFAULT_PART_SIZE,
                 concurrency: int = DEFAULT_CONCURRENCY, timeout: float = DEFAULT_TIMEOUT,
                 policy: RetryPolicy = DEFAULT_POLICY, url: str | None = None) -> None:
        self.bucket = check_bucket_name(bucket)
        self.prefix = prefix.strip("/")
        self.url = url or f"s3://{bucket}/{self.prefix}"
        if sse is not None and sse not in SSE_MODES:
            raise ValueError(f"invalid sse={sse!r}: use one of {', '.join(SSE_MODES)}")
        if kms_key_id and not (sse or "").startswith("aws:kms"):
            raise ValueError("kms_key_id needs sse=aws:kms (or aws:kms:dsse) in the URL")
        if storage_class is not None and storage_class not in STORAGE_CLASSES:
            raise ValueError(
                f"invalid storage_class={storage_class!r}: use one of {', '.join(STORAGE_CLASSES)}"
                " (GLACIER and DEEP_ARCHIVE are not readable without a restore, so backups there"
                " could not be listed or verified; use a lifecycle rule instead)")
        check_tuning(part_size=part_size, concurrency=concurrency, timeout=timeout,
                     smallest=MIN_PART_SIZE, largest=MAX_PART_SIZE,
                     most_concurrency=MAX_CONCURRENCY)
        self.extra = {k: v for k, v in (("ServerSideEncryption", sse), ("SSEKMSKeyId", kms_key_id),
                                        ("StorageClass", storage_class)) if v}
        self.part_size, self.concurrency, self.policy = part_size, concurrency, policy
        self.stats = TransferStats()
        self.client = _client(endpoint, region, path_style, concurrency, timeout)

    @classmethod
    def from_url(cls, url: str) -> S3Storage:
        parsed = parse_store_url(
            url, "s3", example="s3://bucket/prefix", options=_OPTIONS,
            credentials="AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a role")
        kwargs: dict[str, Any] = {**parsed.options, **parsed.tuning}
        if "path_style" in kwargs:
            kwargs["path_style"] = _flag(kwargs["path_style"], "path_style")
        return cls(parsed.bucket, parsed.prefix, url=url, **kwargs)

    # -- writing -----------------------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        full = self._key(key)
        parts = whole_or_parts(chunks, self.part_size, grow_every=GROW_EVERY,
                               largest=MAX_PART_SIZE)
        if isinstance(parts, bytes):
            data = parts
            self._call(lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=data,
                                                      **self.extra), "write", key)
            self.stats.uploaded(len(data))
            return len(data)
        upload = MultipartUpload(self.client, self.bucket, full, self._where(key),
                                 partial(self._call, key=key), self.extra, self.part_size,
                                 self.concurrency, self.stats)
        return upload.run(parts)

    def delete(self, key: str) -> None:
        full = self._key(key)
        self._call(lambda: self.client.delete_object(Bucket=self.bucket, Key=full), "delete", key)

    def cleanup_incomplete(self, older_than: float = 3600) -> int:
        """Abort multipart uploads under the prefix started more than ``older_than`` s ago."""
        cutoff = datetime.fromtimestamp(time.time() - older_than, UTC)
        root = self._key("")
        aborted = 0
        for up in unfinished_uploads(self.client, self.bucket, root,
                                     partial(self._call, key="")):
            if up["Initiated"] <= cutoff:
                self._call(partial(self.client.abort_multipart_upload, Bucket=self.bucket,
                                   Key=up["Key"], UploadId=up["UploadId"]),
                           "abort the unfinished upload of", up["Key"][len(root):])
                aborted += 1
        return aborted

    # -- conditional writes (leases) ---------------------------------------------------------
    # PutObject with If-None-Match: * / If-Match: <ETag> (S3 since 2024; MinIO, Ceph RGW and
    # others vary: see docs/storage.md). Versions are ETags.

    def put_if_absent(self, key: str, data: bytes) -> str:
        return self._put_conditionally(key, data, {"IfNoneMatch": "*"}, "it already exists")

    def replace_if(self, key: str, data: bytes, expected: str) -> str:
        return self._put_conditionally(key, data, {"IfMatch": expected},
                                       "it is absent or was replaced")

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        full = self._key(key)

        def fetch() -> tuple[bytes, str]:
            response = self.client.get_object(Bucket=self.bucket, Key=full)
            return bytes(response["Body"].read()), str(response["ETag"])

        result: tuple[bytes, str] = self._call(fetch, "read", key)
        return result

    def _put_conditionally(self, key: str, data: bytes, condition: dict[str, str],
                           lost: str) -> str:
        full = self._key(key)

        def write() -> str:
            try:
                response = self.client.put_object(Bucket=self.bucket, Key=full, Body=data,
                                                  **condition, **self.extra)
            except ClientError as exc:
                code = error_code(exc)
                if code == "PreconditionFailed" or ("IfMatch" in condition
                                                    and code in ("NoSuchKey", "404")):
                    raise ConditionFailed(key, lost) from None
                if code == "ConditionalRequestConflict":  # a concurrent write: S3 says retry
                    raise TransientStorageError(
                        f"conditional write of {self._where(key)} met a concurrent one") from exc
                raise classify(exc, "write", self._where(key)) from exc
            except Exception as exc:
                raise classify(exc, "write", self._where(key)) from exc
            return str(response["ETag"])

        return conditional_write(write, lambda: self.get_versioned(key), data,
                                 what=f"write {self._where(key)}", policy=self.policy)

    # -- reading -----------------------------------------------------------------------------

    def get(self, key: str, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        full = self._key(key)
        # Opened now: a missing object fails before anything is yielded. Re-opens after a cut
        # connection ask for the rest only, of the same version (If-Match on the ETag).
        first = self._call(lambda: self.client.get_object(Bucket=self.bucket, Key=full),
                           "read", key)
        etag, size = first["ETag"], int(first["ContentLength"])

        def reopen(offset: int) -> _Body:
            response = self._call(lambda: self.client.get_object(
                Bucket=self.bucket, Key=full, Range=f"bytes={offset}-", IfMatch=etag),
                "read", key)
            return _Body(response["Body"], self._where(key))

        return resuming_read(_Body(first["Body"], self._where(key)), reopen, size,
                             chunk_size=chunk_size, what=f"read {self._where(key)}",
                             policy=self.policy)

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.get(key))

    def stat(self, key: str) -> ObjectInfo:
        full = self._key(key)
        head = self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=full),
                          "stat", key)
        return ObjectInfo(key, int(head["ContentLength"]), head["LastModified"])

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``; S3 lists in UTF-8 byte = code point order."""
        root = self._key("")
        params = {"Bucket": self.bucket, "Prefix": root + prefix}
        while True:
            page = self._call(partial(self.client.list_objects_v2, **params), "list", prefix)
            for obj in page.get("Contents", []):
                yield ObjectInfo(obj["Key"][len(root):], int(obj["Size"]), obj["LastModified"])
            if not page.get("IsTruncated"):
                return
            params["ContinuationToken"] = page["NextContinuationToken"]

    # -- internals ---------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        if key:
            check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _where(self, key: str) -> str:
        """``s3://bucket/prefix/key`` for messages (``key`` may be a list prefix)."""
        return f"s3://{self.bucket}/{self.prefix}/{key}" if self.prefix else \
            f"s3://{self.bucket}/{key}"

    def _call(self, fn: Callable[[], Any], action: str, key: str) -> Any:
        """One request, classified and retried; a 404 means ObjectNotFound(key) for reads."""
        single = action in ("read", "stat")

        def attempt() -> Any:
            try:
                return fn()
            except Exception as exc:  # classify() re-raises what is not a storage error
                raise classify(exc, action, self._where(key), key if single else None) from exc
        return retry_call(attempt, what=f"{action} {self._where(key)}", policy=self.policy)


class _Body:
    """An S3 response body as a BlockReader: read errors become TransientStorageError."""

    def __init__(self, body: Any, where: str) -> None:
        self.body, self.where = body, where

    def read(self, n: int) -> bytes:
        try:
            return bytes(self.body.read(n))
        except Exception as exc:
            raise classify(exc, "read", self.where) from exc

    def close(self) -> None:
        self.body.close()


def _client(endpoint: str | None, region: str | None, path_style: bool | None,
            concurrency: int, timeout: float) -> Any:
    import boto3
    from botocore.config import Config

    s3_options = {"addressing_style": "path" if path_style else "auto"}
    if path_style is False:
        s3_options["addressing_style"] = "virtual"
    config = Config(
        region_name=region,
        retries={"total_max_attempts": 1, "mode": "standard"},  # our retry_call is the policy
        connect_timeout=min(timeout, 10.0),
        read_timeout=timeout,
        max_pool_connections=concurrency + 4,
        s3=s3_options,
    )
    try:
        return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
    except Exception as exc:
        raise StorageError(f"cannot set up the S3 client: {exc}") from exc


register("s3", S3Storage.from_url)
