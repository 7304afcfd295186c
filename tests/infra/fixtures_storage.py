"""Fixtures: real object-storage emulators (S3, GCS, Azure) and fresh buckets/containers on them.

Servers are session-scoped (one per test run, started on first use); buckets are per test, with
unique names, and are emptied and deleted afterwards so the in-memory servers stay small.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.infra.objectstores import Azurite, FakeGCS, MotoS3
from tests.infra.procs import serve

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient
    from google.cloud.storage import Bucket

def unique_name(prefix: str) -> str:
    """A bucket/container name valid on all three stores (lowercase, digits, '-', <= 63)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    store = MotoS3(tmp_path_factory.mktemp("s3"))
    yield from serve(store, store.name)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGCS]:
    store = FakeGCS(tmp_path_factory.mktemp("gcs"))
    yield from serve(store, store.name)


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    store = Azurite(tmp_path_factory.mktemp("azure"))
    yield from serve(store, store.name)


@pytest.fixture
def s3_bucket(s3_server: MotoS3) -> Iterator[str]:
    """Name of a fresh empty S3 bucket (use ``s3_server.client()`` to reach it)."""
    client = s3_server.client()
    name = unique_name("sh-test")
    client.create_bucket(Bucket=name)
    yield name
    with contextlib.suppress(Exception):  # cleanup is best effort; the server dies with the run
        for up in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
        for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
            for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                client.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])
        client.delete_bucket(Bucket=name)


@pytest.fixture
def gcs_bucket(gcs_server: FakeGCS) -> Iterator[Bucket]:
    """A fresh empty GCS bucket (``google.cloud.storage.Bucket``; ``.name``, ``.client``)."""
    bucket = gcs_server.client().create_bucket(unique_name("sh-test"))
    yield bucket
    with contextlib.suppress(Exception):
        bucket.delete(force=True)


@pytest.fixture
def azure_container(azure_server: Azurite) -> Iterator[ContainerClient]:
    """A fresh empty Azure blob container (``ContainerClient``; ``.container_name``)."""
    container = azure_server.client().create_container(unique_name("sh-test"))
    yield container
    with contextlib.suppress(Exception):
        container.delete_container()
