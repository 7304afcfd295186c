"""S3Storage under injected faults: moto behind tests.infra.faults.FaultProxy.

Transient faults (503, a connection cut mid-download, a stall past the read timeout) are retried
and leave intact objects; permanent ones (bad credentials, a missing bucket) fail on the first
request with a message naming the fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from safehold.storage.base import StorageAuthError, StorageError, TransientStorageError
from safehold.storage.parts import MiB
from safehold.storage.retry import RetryPolicy
from safehold.storage.s3 import S3Storage
from tests.infra.faults import FaultProxy, Request
from tests.infra.objectstores import MotoS3

FAST = RetryPolicy(attempts=4, initial=0.01, maximum=0.05, deadline=60)
INVALID_KEY = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidAccessKeyId</Code>"
               b"<Message>The AWS Access Key Id you provided does not exist.</Message></Error>")


@pytest.fixture
def proxy(s3_server: MotoS3) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as p:
        yield p


@pytest.fixture
def storage(proxy: FaultProxy, s3_server: MotoS3, s3_bucket: str,
            monkeypatch: pytest.MonkeyPatch) -> S3Storage:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return S3Storage(s3_bucket, "repo", endpoint=proxy.endpoint, part_size=5 * MiB,
                     concurrency=2, timeout=1.0, policy=FAST)


def is_part(r: Request) -> bool:
    return r.method == "PUT" and "partNumber=" in r.target


def is_get(r: Request) -> bool:
    return r.method == "GET" and "/repo/" in r.target


def test_a_503_during_a_multipart_put_is_retried(storage: S3Storage, proxy: FaultProxy) -> None:
    data = os.urandom(12 * MiB)
    proxy.fail(nth=3, mode="503")  # list uploads, create upload, then the first part upload
    assert storage.put("obj", (data[i:i + MiB] for i in range(0, len(data), MiB))) == len(data)
    [fault] = proxy.faults()
    assert fault.n == 3 and is_part(fault) and fault.fault == "503"
    assert proxy.count(is_part) == 3 + 1  # 5 + 5 + 2 MiB, one of them twice
    assert storage.get_bytes("obj") == data


def test_a_download_cut_midway_resumes_with_a_range_request(storage: S3Storage,
                                                            proxy: FaultProxy) -> None:
    data = os.urandom(3 * MiB)
    storage.put_bytes("obj", data)
    proxy.clear()
    proxy.fail(nth=1, mode="reset", when=is_get, at=MiB + 7)
    assert b"".join(storage.get("obj", chunk_size=256 * 1024)) == data
    gets = [r for r in proxy.requests if is_get(r)]
    assert [r.fault for r in gets] == ["reset", None]
    assert "range" not in gets[0].headers
    offset = int(gets[1].headers["range"].removeprefix("bytes=").rstrip("-"))
    assert MiB <= offset <= MiB + 7  # the bytes already received were not fetched again
    assert gets[1].headers["if-match"].strip('"')  # pinned to the version read first


def test_a_stall_beyond_the_read_timeout_is_retried(storage: S3Storage,
                                                    proxy: FaultProxy) -> None:
    storage.put_bytes("obj", b"small but slow")
    proxy.clear()
    proxy.fail(nth=1, mode="stall", seconds=3, when=is_get)  # the read timeout is 1 s
    assert storage.get_bytes("obj") == b"small but slow"
    assert [r.fault for r in proxy.requests if is_get(r)] == ["stall", None]


def test_transient_errors_give_up_after_the_policy_attempts(storage: S3Storage,
                                                           proxy: FaultProxy) -> None:
    proxy.fail(nth=1, mode="503", times=100)
    with pytest.raises(TransientStorageError, match="ServiceUnavailable"):
        storage.put_bytes("obj", b"x")
    assert proxy.count() == FAST.attempts


def test_bad_credentials_fail_at_once_naming_the_fix(storage: S3Storage,
                                                     proxy: FaultProxy) -> None:
    proxy.fail(nth=1, mode="503", status=403, body=INVALID_KEY, times=100)
    with pytest.raises(StorageError, match="check AWS_ACCESS_KEY_ID") as raised:
        storage.put_bytes("obj", b"x")
    assert not raised.value.transient
    assert isinstance(raised.value, StorageAuthError) and raised.value.auth_failure
    assert proxy.count() == 1  # no retries


def test_a_missing_bucket_fails_at_once(proxy: FaultProxy, storage: S3Storage) -> None:
    missing = S3Storage("no-such-bucket-at-all", "repo", endpoint=proxy.endpoint, policy=FAST)
    with pytest.raises(StorageError, match="'no-such-bucket-at-all' does not exist: create it"
                       ) as raised:
        missing.get_bytes("safehold-repo.json")
    assert not raised.value.transient and not raised.value.auth_failure
    assert proxy.count() == 1
