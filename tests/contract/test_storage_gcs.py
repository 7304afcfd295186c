"""GCSStorage against fake-gcs-server: the shared storage contract, plus compose, resumption,
URLs and errors that only an object store has."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from google.cloud.storage import Bucket

from safehold.storage import StorageError, open_storage
from safehold.storage.gcs import PARTS_DIR, GCSStorage
from safehold.storage.retry import RetryPolicy
from tests.contract.storage_contract import MiB, ProducerFailed, StorageContract
from tests.infra.objectstores import FakeGCS

PART = 256 * 1024  # small parts, so that modest objects take the multi-part (compose) path
FAST = RetryPolicy(attempts=3, initial=0.01, maximum=0.05, deadline=10)


def gcs_storage(bucket: Bucket, prefix: str = "repo", **options: object) -> GCSStorage:
    options = {"part_size": PART, "read_size": PART, "policy": FAST, **options}
    return GCSStorage(bucket.client, bucket.name, prefix, **options)  # type: ignore[arg-type]


class TestGCSStorage(StorageContract):
    @pytest.fixture
    def storage(self, gcs_bucket: Bucket) -> GCSStorage:
        return gcs_storage(gcs_bucket)
