"""Streaming, resumable S3 multipart uploads with bounded memory.

The stored stream is cut into parts at fixed offsets (``part_size``, growing every 1,000 parts so
that 10,000 parts still reach ~860 GiB at 16 MiB), at most ``concurrency`` parts are uploaded at
once by a small thread pool, and each part is retried on its own. Memory is therefore about
``(concurrency + 1) * part_size`` whatever the object's size.

Resumption: before creating an upload, the writer looks for an unfinished multipart upload of the
same key (a runner killed mid-backup leaves one; the backup id in the key makes it the same
backup). Since the pipeline's bytes are deterministic (synthetic nonces, see codecs.crypto), a
part whose number, size and MD5 (its ETag) match what is already stored is not sent again. A
part that differs is simply uploaded, replacing the old one, so the object completed is always
exactly the new stream. (With SSE-KMS, ETags are not MD5s: nothing matches, everything is sent.)
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from safehold.storage.base import StorageError
from safehold.storage.retry import DEFAULT_POLICY, RetryPolicy, retry_call
from safehold.storage.s3_errors import classify, error_code

log = logging.getLogger("safehold.storage.s3")

MiB = 1 << 20
MIN_PART_SIZE = 5 * MiB  # S3 rejects smaller parts (all but the last) at completion
MAX_PART_SIZE = 5 << 30
MAX_PARTS = 10_000
_GROWTH_EVERY = 1_000


def part_size_for(base: int, number: int) -> int:
    """Size of part ``number`` (1-based): ``base`` for parts 1-1000, 2x for 1001-2000, …"""
    return min(MAX_PART_SIZE, base * ((number - 1) // _GROWTH_EVERY + 1))


@dataclass
class UploadStats:
    """What put() sent and what it found already stored (read by tests and logs)."""

    parts_sent: int = 0
    bytes_sent: int = 0
    parts_skipped: int = 0
    bytes_skipped: int = 0
    resumed_uploads: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, size: int, *, skipped: bool) -> None:
        with self._lock:
            if skipped:
                self.parts_skipped += 1
                self.bytes_skipped += size
            else:
                self.parts_sent += 1
                self.bytes_sent += size


@dataclass(frozen=True)
class _Stored:
    size: int
    etag: str


@dataclass
class MultipartUpload:
    """One object's multipart upload; :meth:`run` streams, resumes and completes it."""

    client: Any  # botocore S3 client (thread-safe)
    bucket: str
    key: str  # full key in the bucket
    where: str  # s3://bucket/key for messages
    extra: dict[str, str]  # SSE / storage class for CreateMultipartUpload
    part_size: int
    concurrency: int
    stats: UploadStats
    policy: RetryPolicy = DEFAULT_POLICY

    def run(self, buffer: bytearray, rest: Iterator[bytes]) -> int:
        upload_id, stored = self._find_or_create()
        etags: dict[int, str] = {}
        total = 0
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="safehold-s3-part")
        pending: set[Future[tuple[int, str]]] = set()
        try:
            for number, data in self._parts(buffer, rest):
                while len(pending) >= self.concurrency:
                    pending = self._collect(pending, etags)
                total += len(data)
                pending.add(pool.submit(self._part, upload_id, number, data, stored.get(number)))
            while pending:
                pending = self._collect(pending, etags)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        self._complete(upload_id, etags)
        return total

    # -- parts -------------------------------------------------------------------------------

    def _parts(self, buffer: bytearray, rest: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
        number = 1
        for chunk in rest:
            buffer += chunk
            while len(buffer) > part_size_for(self.part_size, number):
                yield self._cut(buffer, number)
                number += 1
        while buffer:
            yield self._cut(buffer, number)
            number += 1

    def _cut(self, buffer: bytearray, number: int) -> tuple[int, bytes]:
        if number > MAX_PARTS:
            raise StorageError(
                f"{self.where} needs more than {MAX_PARTS} parts of up to"
                f" {part_size_for(self.part_size, MAX_PARTS) // MiB} MiB; raise ?part_size= in"
                " the repository URL"
            )
        size = part_size_for(self.part_size, number)
        with memoryview(buffer) as view:
            data = bytes(view[:size])  # one copy, not a bytearray slice and then a copy
        del buffer[:size]
        return number, data

    @staticmethod
    def _collect(pending: set[Future[tuple[int, str]]], etags: dict[int, str]
                 ) -> set[Future[tuple[int, str]]]:
        done, still = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            number, etag = fut.result()  # re-raises a part's final failure
            etags[number] = etag
        return still

    def _part(self, upload_id: str, number: int, data: bytes, stored: _Stored | None
              ) -> tuple[int, str]:
        etag = f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'
        if stored is not None and stored.size == len(data) and stored.etag == etag:
            self.stats.count(len(data), skipped=True)
            return number, etag
        response = self._call(
            lambda: self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=upload_id,
                                            PartNumber=number, Body=data),
            f"upload part {number} of")
        self.stats.count(len(data), skipped=False)
        return number, str(response["ETag"])

    # -- upload life cycle -------------------------------------------------------------------

    def _find_or_create(self) -> tuple[str, dict[int, _Stored]]:
        found = self._newest_unfinished()
        if found is None:
            created = self._call(
                lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                            **self.extra),
                "start multipart upload of")
            return str(created["UploadId"]), {}
        stored = self._stored_parts(found)
        with self.stats._lock:
            self.stats.resumed_uploads += 1
        log.info("resuming the unfinished upload of %s: %d parts (%d bytes) already stored",
                 self.where, len(stored), sum(p.size for p in stored.values()))
        return found, stored

    def _newest_unfinished(self) -> str | None:
        newest: tuple[Any, str] | None = None
        params: dict[str, str] = {"Bucket": self.bucket, "Prefix": self.key}
        while True:
            page = self._call(partial(self.client.list_multipart_uploads, **params),
                              "list unfinished uploads of")
            for upload in page.get("Uploads", []):
                if upload["Key"] == self.key and (newest is None
                                                  or upload["Initiated"] >= newest[0]):
                    newest = (upload["Initiated"], str(upload["UploadId"]))
            if not page.get("IsTruncated"):
                return newest[1] if newest else None
            params["KeyMarker"] = page["NextKeyMarker"]
            params["UploadIdMarker"] = page["NextUploadIdMarker"]

    def _stored_parts(self, upload_id: str) -> dict[int, _Stored]:
        parts: dict[int, _Stored] = {}
        marker = 0
        while True:
            page = self._call(
                partial(self.client.list_parts, Bucket=self.bucket, Key=self.key,
                        UploadId=upload_id, PartNumberMarker=marker),
                "list stored parts of")
            for p in page.get("Parts", []):
                parts[int(p["PartNumber"])] = _Stored(int(p["Size"]), str(p["ETag"]))
            if not page.get("IsTruncated"):
                return parts
            marker = int(page["NextPartNumberMarker"])

    def _complete(self, upload_id: str, etags: dict[int, str]) -> None:
        parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]

        def complete() -> None:
            try:
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts})
            except ClientError as exc:
                # A retry after a completion whose answer was lost finds the upload gone:
                # the object is there, and its ETag (MD5 of the part MD5s) proves it is ours.
                if error_code(exc) != "NoSuchUpload" or not self._is_completed(etags):
                    raise
        self._call(complete, "complete multipart upload of")

    def _is_completed(self, etags: dict[int, str]) -> bool:
        try:
            digests = b"".join(bytes.fromhex(etags[n].strip('"')) for n in sorted(etags))
        except ValueError:
            return False  # not MD5 ETags (SSE-KMS): cannot prove it, so fail loudly instead
        expected = f'"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(etags)}"'
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key)
        except ClientError:
            return False
        return bool(head.get("ETag") == expected)

    def _call(self, fn: Callable[[], Any], action: str) -> Any:
        def attempt() -> Any:
            try:
                return fn()
            except Exception as exc:  # classify() re-raises what is not a storage error
                raise classify(exc, action, self.where) from exc
        return retry_call(attempt, what=f"{action} {self.where}", policy=self.policy)
