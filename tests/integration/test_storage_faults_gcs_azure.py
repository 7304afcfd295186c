"""GCS and Azure backends under injected faults: the shared FaultProxy sits between the SDK and
the real emulator and fails chosen requests (503, a connection reset mid-body, a stall, a 403).

Each test asserts both the outcome (the object is intact, the error is permanent) and, from the
proxy's request log, that the fault really happened and how the backend reacted to it.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from azure.storage.blob import ContainerClient
from google.cloud.storage import Bucket

from safehold.storage import Storage, StorageAuthError, StorageError, TransientStorageError
from safehold.storage.azure import AzureBlobStorage
from safehold.storage.gcs import GCSStorage
from safehold.storage.retry import RetryPolicy
from tests.infra.faults import FaultProxy, Request
from tests.infra.objectstores import Azurite, FakeGCS

PART = 256 * 1024
FAST = RetryPolicy(attempts=4, initial=0.01, maximum=0.05, deadline=20)


@dataclass
class Rig:
    """A backend whose every request goes through ``proxy``, and how to recognise requests."""

    proxy: FaultProxy
    open: Callable[..., Storage]
    is_part_upload: Callable[[Request], bool]
    is_upload: Callable[[Request], bool]
    is_download: Callable[[Request], bool]
    forbidden_body: bytes


def _range_start(r: Request) -> int:
    value = r.headers.get("x-ms-range") or r.headers.get("range") or "bytes=0-"
    match = re.match(r"bytes=(\d+)-", value)
    assert match, value
    return int(match.group(1))


@pytest.fixture(params=["gcs", "azure"])
def rig(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    if request.param == "gcs":
        server: FakeGCS = request.getfixturevalue("gcs_server")
        bucket: Bucket = request.getfixturevalue("gcs_bucket")
        with FaultProxy(server.endpoint) as proxy:
            def open_gcs(**options: object) -> Storage:
                options = {"part_size": PART, "read_size": PART, "policy": FAST, **options}
                return GCSStorage.from_url(
                    f"gs://{bucket.name}/repo?endpoint={proxy.endpoint}", **options)

            yield Rig(proxy, open_gcs,
                      # in a multi-part put every upload is a part (names are in the body)
                      lambda r: r.method == "POST" and r.target.startswith("/upload/"),
                      lambda r: r.method == "POST" and r.target.startswith("/upload/"),
                      lambda r: r.method == "GET" and "alt=media" in r.target,
                      b'{"error": {"code": 403, "message": "caller does not have'
                      b' storage.objects.create access"}}')
        return
    azurite: Azurite = request.getfixturevalue("azure_server")
    container: ContainerClient = request.getfixturevalue("azure_container")
    with FaultProxy(azurite.endpoint) as proxy:
        for var in ("AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_ACCOUNT"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                           azurite.connection_string.replace(azurite.endpoint, proxy.endpoint))

        def open_azure(**options: object) -> Storage:
            options = {"part_size": PART, "read_size": PART, "policy": FAST, **options}
            return AzureBlobStorage.from_url(f"az://{container.container_name}/repo", **options)

        yield Rig(proxy, open_azure,
                  lambda r: r.method == "PUT" and "comp=block&" in r.target + "&",
                  lambda r: r.method == "PUT",
                  lambda r: r.method == "GET" and "comp=" not in r.target
                  and "restype=" not in r.target,
                  b"<?xml version='1.0' encoding='utf-8'?><Error><Code>"
                  b"AuthorizationPermissionMismatch</Code><Message>This request is not authorized"
                  b" to perform this operation using this permission.</Message></Error>")


def _data(parts: int) -> bytes:
    return os.urandom(parts * PART + 1234)


def test_a_503_on_a_part_upload_is_retried_and_the_object_is_intact(rig: Rig) -> None:
    storage = rig.open()
    data = _data(6)
    rig.proxy.fail(nth=3, mode="503", when=rig.is_part_upload)
    assert storage.put("t/b/data/pages", iter([data])) == len(data)

    faults = rig.proxy.faults()
    assert [f.fault for f in faults] == ["503"]
    assert rig.proxy.count(rig.is_part_upload) == 7 + 1  # 7 parts, one of them sent twice
    assert storage.get_bytes("t/b/data/pages") == data


def test_a_connection_reset_mid_download_resumes_at_the_offset(rig: Rig) -> None:
    storage = rig.open(read_size=PART)
    data = _data(40)  # 10 MiB: several ranged requests on both backends (Azure: 4 MiB each)
    storage.put("obj", iter([data]))
    rig.proxy.clear()
    rig.proxy.fail(nth=2, mode="reset", when=rig.is_download)

    assert b"".join(storage.get("obj", chunk_size=100_000)) == data

    downloads = [r for r in rig.proxy.requests if rig.is_download(r)]
    cut = next(r for r in downloads if r.fault == "reset")
    starts = [_range_start(r) for r in downloads]
    assert _range_start(cut) > 0  # the cut hit a later range, not the first request
    # Only the interrupted range is asked for twice: nothing before it is downloaded again.
    assert len(starts) == len(set(starts)) + 1
    assert starts.count(_range_start(cut)) == 2


def test_a_stalled_request_times_out_and_is_retried(rig: Rig) -> None:
    storage = rig.open(timeout=1.0)
    data = _data(3)
    rig.proxy.fail(nth=2, mode="stall", seconds=3, when=rig.is_part_upload)
    storage.put("k", iter([data]))
    assert [f.fault for f in rig.proxy.faults()] == ["stall"]
    assert storage.get_bytes("k") == data


def test_a_403_fails_at_once_without_retries(rig: Rig) -> None:
    storage = rig.open(policy=RetryPolicy(attempts=8, initial=0.01, maximum=0.05))
    rig.proxy.fail(nth=1, mode="503", status=403, body=rig.forbidden_body, when=rig.is_upload)
    with pytest.raises(StorageError, match="denied upload") as raised:
        storage.put_bytes("k", b"v")
    assert not isinstance(raised.value, TransientStorageError)
    assert isinstance(raised.value, StorageAuthError)  # auth.failure in the audit log
    assert rig.proxy.count(rig.is_upload) == 1


def test_azure_bad_account_key_fails_at_once(azure_server: Azurite,
                                             azure_container: ContainerClient,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with FaultProxy(azure_server.endpoint) as proxy:
        wrong = base64.b64encode(b"not the key" * 6).decode()
        bad = azure_server.connection_string.replace(azure_server.key, wrong).replace(
            azure_server.endpoint, proxy.endpoint)
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", bad)
        storage = AzureBlobStorage.from_url(f"az://{azure_container.container_name}/p")
        with pytest.raises(StorageError, match="check the account key") as raised:
            storage.put_bytes("k", b"v")
        assert not isinstance(raised.value, TransientStorageError)
        assert isinstance(raised.value, StorageAuthError)  # Azurite's own 403
        assert proxy.count() == 1
