"""AzureBlobStorage against Azurite: the shared storage contract, plus block resumption, URLs,
credentials and errors that only Azure has."""

from __future__ import annotations

import pytest
from azure.storage.blob import ContainerClient

from safehold.storage.azure import AzureBlobStorage
from safehold.storage.retry import RetryPolicy
from tests.contract.storage_contract import StorageContract

PART = 256 * 1024
FAST = RetryPolicy(attempts=3, initial=0.01, maximum=0.05, deadline=10)


def azure_storage(container: ContainerClient, prefix: str = "repo", **options: object
                  ) -> AzureBlobStorage:
    options = {"part_size": PART, "read_size": PART, "policy": FAST, **options}
    return AzureBlobStorage(container, prefix, **options)  # type: ignore[arg-type]


class TestAzureStorage(StorageContract):
    @pytest.fixture
    def storage(self, azure_container: ContainerClient) -> AzureBlobStorage:
        return azure_storage(azure_container)
