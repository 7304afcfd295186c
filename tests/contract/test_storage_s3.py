"""S3Storage against moto: the shared storage contract, URL parsing, multipart and resume."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

import pytest

from safehold.storage import StorageError, open_storage
from safehold.storage.base import ObjectNotFound
from safehold.storage.parts import MiB
from safehold.storage.s3 import S3Storage, check_bucket_name
from safehold.storage.s3_multipart import CHECKSUM, crc32_of, part_size_for
from tests.contract.storage_contract import ProducerFailed, StorageContract, failing_chunks
from tests.infra.objectstores import MotoS3


def s3_url(server: MotoS3, bucket: str, prefix: str = "repo", **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"endpoint": server.endpoint, **options}.items())
    return f"s3://{bucket}/{prefix}?{query}"


@pytest.fixture
def aws_env(s3_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's dummy credentials through the environment, as boto3's default chain reads them."""
    for name, value in s3_server.env().items():
        if name != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(name, value)


# moto's server checks If-None-Match / If-Match and then stores the object, without holding a lock
# in between (moto/s3/responses.py, put_object): concurrent conditional puts that all pass the
# check all succeed. The window is the time to store the body, so it shows with large bodies
# (several winners in 10 of 30 six-writer races of 5 MiB) and hardly with lease-sized ones (0 of
# 30 with 200 bytes). AWS S3 evaluates the condition atomically (a concurrent conflicting write
# gets 412 or 409 ConditionalRequestConflict); that cannot be proven against moto. See
# docs/storage.md, "Conditional writes".
MOTO_NOT_ATOMIC = pytest.mark.xfail(
    reason="moto checks the condition before storing, not atomically (known emulator gap)",
    strict=False)


class TestS3Storage(StorageContract):
    RACE_SIZE = 5 * MiB  # wide enough to show moto's gap in most runs

    test_racing_creators_exactly_one_wins = MOTO_NOT_ATOMIC(
        StorageContract.test_racing_creators_exactly_one_wins)
    test_racing_replacers_exactly_one_wins = MOTO_NOT_ATOMIC(
        StorageContract.test_racing_replacers_exactly_one_wins)

    @pytest.fixture
    def storage(self, s3_server: MotoS3, s3_bucket: str, aws_env: None) -> S3Storage:
        storage = open_storage(s3_url(s3_server, s3_bucket, part_size="5MiB"))
        assert isinstance(storage, S3Storage)
        return storage


# -- URLs ------------------------------------------------------------------------------------


def test_url_options_are_parsed(aws_env: None) -> None:
    s = S3Storage.from_url("s3://my-bucket/a/b/?endpoint=http://127.0.0.1:1&path_style=true"
                           "&region=eu-west-1&sse=aws:kms&kms_key_id=alias/x"
                           "&storage_class=STANDARD_IA&part_size=32MiB&concurrency=2&timeout=5")
    assert (s.bucket, s.prefix, s.part_size, s.concurrency) == ("my-bucket", "a/b", 32 * MiB, 2)
    assert s.extra == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/x",
                       "StorageClass": "STANDARD_IA"}
    assert s.client.meta.region_name == "eu-west-1"
    assert s.client.meta.endpoint_url == "http://127.0.0.1:1"
    assert s.client.meta.config.s3["addressing_style"] == "path"
    assert s.client.meta.config.retries["total_max_attempts"] == 1
    assert S3Storage.from_url("s3://bucket").prefix == ""


@pytest.mark.parametrize(("url", "message"), [
    ("s3:///prefix", "names no bucket"),
    ("s3://Upper/p", "invalid S3 bucket name 'Upper'"),
    ("s3://ab/p", "3-63 characters"),
    ("s3://a..b/p", "cannot contain '..'"),
    ("s3://192.168.1.1/p", "IP address"),
    ("s3://key:secret@bucket/p", "holds credentials"),
    ("s3://bucket/a//b", "invalid storage key"),
    ("s3://bucket/p?region=x&colour=red", r"unknown option\(s\) colour"),
    ("s3://bucket/p?sse=des", "invalid sse='des'"),
    ("s3://bucket/p?kms_key_id=k", "kms_key_id needs sse=aws:kms"),
    ("s3://bucket/p?storage_class=GLACIER", "not readable without a restore"),
    ("s3://bucket/p?part_size=1MiB", "between 5MiB and 5GiB"),
    ("s3://bucket/p?part_size=lots", "invalid part_size 'lots'"),
    ("s3://bucket/p?concurrency=0", "between 1 and 32"),
    ("s3://bucket/p?path_style=maybe", "use true or false"),
    ("s3://bucket/p?endpoint=127.0.0.1:9000", "use http"),
    ("gs://bucket/p", "not an s3:// URL"),
])
def test_bad_urls_are_rejected_with_the_fix(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3Storage.from_url(url)


def test_bucket_names() -> None:
    for good in ("abc", "my.bucket-1", "a" * 63):
        assert check_bucket_name(good) == good
    for bad in ("a" * 64, "-abc", "abc-", "xn--abc", "abc-s3alias"):
        with pytest.raises(ValueError):
            check_bucket_name(bad)


def test_part_sizes_grow_to_reach_large_objects() -> None:
    assert part_size_for(16 * MiB, 1) == part_size_for(16 * MiB, 1000) == 16 * MiB
    assert part_size_for(16 * MiB, 1001) == 32 * MiB
    assert sum(part_size_for(16 * MiB, n) for n in range(1, 10_001)) > 800 * 1024 * MiB


# -- multipart -------------------------------------------------------------------------------


def _pieces(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    return (data[i:i + size] for i in range(0, len(data), size))


def test_large_objects_go_up_in_parts(s3_server: MotoS3, s3_bucket: str, aws_env: None) -> None:
    storage = S3Storage.from_url(s3_url(s3_server, s3_bucket, part_size="5MiB"))
    data = os.urandom(17 * MiB + 5)
    assert storage.put("t/b/data/pages", _pieces(data)) == len(data)
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="repo/t/b/data/pages")
    assert head["ETag"].strip('"').endswith("-4")  # 5 + 5 + 5 + 2 MiB
    assert (storage.stats.uploaded_parts, storage.stats.uploaded_bytes) == (4, len(data))
    assert hashlib.sha256(storage.get_bytes("t/b/data/pages")).digest() == \
        hashlib.sha256(data).digest()
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_an_unfinished_upload_is_resumed_part_by_part(s3_server: MotoS3, s3_bucket: str,
                                                      aws_env: None) -> None:
    """A put killed after 2 parts leaves them; the next put of the same bytes skips them, and a
    changed third part is re-sent: the object is exactly the new stream."""
    storage = S3Storage.from_url(s3_url(s3_server, s3_bucket, part_size="5MiB", concurrency="1"))
    client = s3_server.client()
    old = os.urandom(16 * MiB)

    def stored_parts() -> int:
        uploads = client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
        assert [u["Key"] for u in uploads] in ([], ["repo/obj"])
        return len(client.list_parts(Bucket=s3_bucket, Key="repo/obj",
                                     UploadId=uploads[0]["UploadId"]).get("Parts", [])
                   ) if uploads else 0

    def dies_after_two_parts() -> Iterator[bytes]:
        yield from _pieces(old[:13 * MiB])
        deadline = time.monotonic() + 30
        while stored_parts() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        raise ProducerFailed("the dump broke off")

    with pytest.raises(ProducerFailed):
        storage.put("obj", dies_after_two_parts())
    assert stored_parts() == 2
    assert not storage.exists("obj")

    new = old[:10 * MiB] + os.urandom(6 * MiB)  # parts 1-2 unchanged, the rest differs
    fresh = S3Storage.from_url(storage.url)
    assert fresh.put("obj", _pieces(new)) == len(new)
    assert fresh.get_bytes("obj") == new
    assert fresh.stats.resumed_uploads == 1
    assert (fresh.stats.skipped_parts, fresh.stats.skipped_bytes) == (2, 10 * MiB)
    assert (fresh.stats.uploaded_parts, fresh.stats.uploaded_bytes) == (2, 6 * MiB)
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def _requests(storage: S3Storage, *operations: str) -> dict[str, list[dict[str, object]]]:
    """The parameters of every ``operations`` call the storage's client makes from now on."""
    seen: dict[str, list[dict[str, object]]] = {op: [] for op in operations}
    for op in operations:
        storage.client.meta.events.register(
            f"provide-client-params.s3.{op}",
            lambda params, op=op, **_: seen[op].append(dict(params)))
    return seen


@pytest.mark.parametrize("calculation", ["when_supported", "when_required"])
def test_multipart_checksums_follow_the_client_as_boto3_does(
        s3_server: MotoS3, s3_bucket: str, aws_env: None, monkeypatch: pytest.MonkeyPatch,
        calculation: str) -> None:
    """By default (botocore's when_supported) an upload declares CRC32, as boto3's
    upload_fileobj does, and its completion names each part's CRC32; under when_required (for
    stores without checksums) neither."""
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", calculation)
    storage = S3Storage.from_url(s3_url(s3_server, s3_bucket, part_size="5MiB"))
    seen = _requests(storage, "CreateMultipartUpload", "CompleteMultipartUpload")
    data = os.urandom(12 * MiB)
    assert storage.put("sums", _pieces(data)) == len(data)
    assert storage.get_bytes("sums") == data
    (create,), (complete,) = seen["CreateMultipartUpload"], seen["CompleteMultipartUpload"]
    parts = complete["MultipartUpload"]["Parts"]  # type: ignore[index]
    if calculation == "when_supported":
        assert create["ChecksumAlgorithm"] == CHECKSUM
        assert [p["ChecksumCRC32"] for p in parts] == [
            crc32_of(data[i:i + 5 * MiB]) for i in range(0, len(data), 5 * MiB)]
    else:
        assert "ChecksumAlgorithm" not in create
        assert all("ChecksumCRC32" not in p for p in parts)


def test_a_resumed_upload_with_the_algorithm_names_every_part_checksum(
        s3_server: MotoS3, s3_bucket: str, aws_env: None) -> None:
    """Parts an earlier put stored are not sent again, but a completion of an upload created
    with CRC32 must still name their checksums. AWS reports the upload's algorithm in
    ListParts (moto does not: a hook adds it here, as AWS sends it)."""
    storage = S3Storage.from_url(s3_url(s3_server, s3_bucket, part_size="5MiB", concurrency="1"))
    client = s3_server.client()
    data = os.urandom(11 * MiB)
    up = client.create_multipart_upload(Bucket=s3_bucket, Key="repo/again",
                                        ChecksumAlgorithm=CHECKSUM)
    client.upload_part(Bucket=s3_bucket, Key="repo/again", UploadId=up["UploadId"],
                       PartNumber=1, Body=data[:5 * MiB])
    storage.client.meta.events.register(
        "after-call.s3.ListParts",
        lambda parsed, **_: parsed.setdefault("ChecksumAlgorithm", CHECKSUM))
    seen = _requests(storage, "CompleteMultipartUpload")
    assert storage.put("again", _pieces(data)) == len(data)
    assert storage.stats.skipped_parts == 1
    assert storage.get_bytes("again") == data
    (complete,) = seen["CompleteMultipartUpload"]
    assert [p["ChecksumCRC32"] for p in complete["MultipartUpload"]["Parts"]] == [  # type: ignore[index]
        crc32_of(data[:5 * MiB]), crc32_of(data[5 * MiB:10 * MiB]), crc32_of(data[10 * MiB:])]


def test_cleanup_incomplete_aborts_unfinished_uploads_under_the_prefix(
        s3_server: MotoS3, s3_bucket: str, aws_env: None) -> None:
    storage = S3Storage.from_url(s3_url(s3_server, s3_bucket, part_size="5MiB"))
    client = s3_server.client()
    client.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/x")
    with pytest.raises(ProducerFailed):
        storage.put("t/b/data/x", failing_chunks([os.urandom(6 * MiB)]))
    assert storage.cleanup_incomplete(older_than=40 * 365 * 86400) == 0  # nothing that old
    # moto reports every upload as initiated in 2010, so "older than a minute" is all of them
    assert storage.cleanup_incomplete(older_than=60) == 1
    assert [u["Key"] for u in client.list_multipart_uploads(Bucket=s3_bucket)["Uploads"]] == \
        ["elsewhere/x"]


def test_missing_bucket_is_a_permanent_error_naming_the_fix(s3_server: MotoS3,
                                                           aws_env: None) -> None:
    storage = S3Storage.from_url(s3_url(s3_server, "no-such-bucket-here"))
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist: create"
                       ) as raised:
        storage.get_bytes("safehold-repo.json")
    assert not raised.value.transient
    assert not isinstance(raised.value, ObjectNotFound)
    with pytest.raises(StorageError, match="does not exist"):
        storage.put_bytes("x", b"1")
