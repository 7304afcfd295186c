"""Smoke: each real storage emulator stores a 20 MiB object through its chunked upload path.

Put (multipart / resumable / staged blocks), get (SHA-256 compared), list, delete — the
operations the runner's storage drivers rely on.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobBlock
from botocore.exceptions import ClientError

from tests.infra.objectstores import MotoS3
from tests.infra.procs import ServerError

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient
    from google.cloud.storage import Bucket

MiB = 1024 * 1024
SIZE = 20 * MiB
PART = 5 * MiB  # S3's minimum part size (all parts but the last)
KEY = "backups/pg/2026-01-01T00-00-00Z/base.tar.zst"


@pytest.fixture(scope="module")
def payload() -> bytes:
    return os.urandom(SIZE)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_s3_multipart_roundtrip(s3_server: MotoS3, s3_bucket: str, payload: bytes) -> None:
    s3 = s3_server.client()
    up = s3.create_multipart_upload(Bucket=s3_bucket, Key=KEY)
    parts = []
    for n, chunk in enumerate(chunks(payload, PART), start=1):
        r = s3.upload_part(
            Bucket=s3_bucket, Key=KEY, UploadId=up["UploadId"], PartNumber=n, Body=chunk
        )
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    assert len(parts) == 4
    s3.complete_multipart_upload(
        Bucket=s3_bucket, Key=KEY, UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )

    head = s3.head_object(Bucket=s3_bucket, Key=KEY)
    assert head["ContentLength"] == SIZE
    assert head["ETag"].strip('"').endswith("-4")  # really assembled from 4 parts
    body = s3.get_object(Bucket=s3_bucket, Key=KEY)["Body"].read()
    assert sha256(body) == sha256(payload)
    # ranged read, as a restore resuming mid-object would do
    tail = s3.get_object(Bucket=s3_bucket, Key=KEY, Range=f"bytes={SIZE - 10}-")["Body"].read()
    assert tail == payload[-10:]

    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="backups/pg/")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [(KEY, SIZE)]

    s3.delete_object(Bucket=s3_bucket, Key=KEY)
    assert s3.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=s3_bucket, Key=KEY)
    assert e.value.response["Error"]["Code"] == "404"


def test_gcs_resumable_roundtrip(gcs_bucket: Bucket, payload: bytes) -> None:
    blob = gcs_bucket.blob(KEY)
    # A chunk_size makes the client use a resumable upload session, sent in 5 MiB PUTs
    # (must be a multiple of 256 KiB).
    blob.chunk_size = PART
    blob.upload_from_file(io.BytesIO(payload), content_type="application/octet-stream")

    got = gcs_bucket.get_blob(KEY)
    assert got is not None and got.size == SIZE
    body = got.download_as_bytes()
    assert sha256(body) == sha256(payload)
    assert got.download_as_bytes(start=SIZE - 10) == payload[-10:]

    listed = list(gcs_bucket.list_blobs(prefix="backups/pg/"))
    assert [(b.name, b.size) for b in listed] == [(KEY, SIZE)]

    got.delete()
    assert list(gcs_bucket.list_blobs()) == []
    assert gcs_bucket.get_blob(KEY) is None


def test_gcs_explicit_resumable_session(gcs_bucket: Bucket, payload: bytes) -> None:
    """The raw protocol: create a session URL, PUT chunks with Content-Range, finish."""
    import requests

    url = gcs_bucket.blob(KEY).create_resumable_upload_session(
        content_type="application/octet-stream", size=SIZE
    )
    assert url is not None
    offset = 0
    for chunk in chunks(payload, PART):
        end = offset + len(chunk) - 1
        r = requests.put(
            url, data=chunk, headers={"Content-Range": f"bytes {offset}-{end}/{SIZE}"}, timeout=60
        )
        offset = end + 1
        # 308 "Resume Incomplete" until the last chunk, then 200/201 with the object resource
        assert r.status_code == (308 if offset < SIZE else 200), (r.status_code, r.text[:200])
    blob = gcs_bucket.get_blob(KEY)
    assert blob is not None and blob.size == SIZE
    assert sha256(blob.download_as_bytes()) == sha256(payload)


def test_azure_staged_blocks_roundtrip(azure_container: ContainerClient, payload: bytes) -> None:
    blob = azure_container.get_blob_client(KEY)
    ids = []
    for n, chunk in enumerate(chunks(payload, PART)):
        block_id = f"{n:08d}"  # ids must all have the same length; the SDK base64-encodes them
        blob.stage_block(block_id, chunk)
        ids.append(block_id)
    committed, uncommitted = blob.get_block_list("all")
    assert committed == [] and len(uncommitted) == 4
    blob.commit_block_list([BlobBlock(block_id=i) for i in ids])

    props = blob.get_blob_properties()
    assert props.size == SIZE and props.blob_type == "BlockBlob"
    assert len(blob.get_block_list("committed")[0]) == 4
    body = blob.download_blob().readall()
    assert sha256(body) == sha256(payload)
    assert blob.download_blob(offset=SIZE - 10, length=10).readall() == payload[-10:]

    listed = list(azure_container.list_blobs(name_starts_with="backups/pg/"))
    assert [(b.name, b.size) for b in listed] == [(KEY, SIZE)]

    blob.delete_blob()
    assert list(azure_container.list_blobs()) == []
    with pytest.raises(ResourceNotFoundError):
        blob.get_blob_properties()


def test_start_failure_carries_log_tail(s3_server: MotoS3, tmp_path: Path) -> None:
    """A server that cannot start raises ServerError whose message ends with its own log.

    Also checks readiness is not fooled by the *other* server answering on the same port.
    """
    clash = MotoS3(tmp_path, port=s3_server.port)  # the port is taken: moto_server exits
    try:
        with pytest.raises(ServerError) as e:
            clash.start()
        assert "exited with code" in str(e.value)
        assert "in use" in str(e.value).lower()
        assert clash.pid is None
    finally:
        clash.stop()
