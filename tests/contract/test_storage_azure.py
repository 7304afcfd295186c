"""AzureBlobStorage against Azurite: the shared storage contract, plus what only Azure has —
staged-block resumption, account/credential resolution, SAS permissions, missing containers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

from safehold.storage import ObjectNotFound, StorageError, TransientStorageError, open_storage
from safehold.storage.azure import AzureBlobStorage
from safehold.storage.retry import RetryPolicy
from tests.contract.storage_contract import MiB, ProducerFailed, StorageContract, failing_chunks
from tests.infra.objectstores import Azurite

PART = 256 * 1024  # small blocks, so that modest objects take the staged-block path
FAST = RetryPolicy(attempts=3, initial=0.01, maximum=0.05, deadline=10)
CREDENTIAL_VARS = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_KEY",
                   "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_ACCOUNT")


@pytest.fixture
def az_env(monkeypatch: pytest.MonkeyPatch, azure_server: Azurite) -> Azurite:
    """Azurite's connection string as the only Azure credential in the environment."""
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azure_server.connection_string)
    return azure_server


def open_az(container: ContainerClient, prefix: str = "repo", **options: object
            ) -> AzureBlobStorage:
    options = {"part_size": PART, "read_size": PART, "policy": FAST, **options}
    url = f"az://{container.container_name}/{prefix}"
    return AzureBlobStorage.from_url(url, **options)


class TestAzureStorage(StorageContract):
    @pytest.fixture
    def storage(self, az_env: Azurite, azure_container: ContainerClient) -> AzureBlobStorage:
        return open_az(azure_container)


def _blob_names(container: ContainerClient, uncommitted: bool = False) -> list[str]:
    include = ["uncommittedblobs"] if uncommitted else None
    return sorted(b.name for b in container.list_blobs(include=include))


def _parts(n: int, seed: int = 0) -> list[bytes]:
    return [bytes([(seed + i) % 256]) * PART for i in range(n)]


# -- staged blocks and resumption ------------------------------------------------------------


def test_a_large_put_commits_staged_blocks_named_by_content(
        az_env: Azurite, azure_container: ContainerClient) -> None:
    storage = open_az(azure_container)
    data = b"".join(_parts(5)) + b"tail"
    assert storage.put("t/b/data/pages", iter([data])) == len(data)

    committed, uncommitted = azure_container.get_blob_client("repo/t/b/data/pages"
                                                             ).get_block_list("all")
    assert uncommitted == []
    ids = [base64.b64decode(b.id).decode() for b in committed]
    assert [i.split("-")[0] for i in ids] == [f"{n:08d}" for n in range(6)]
    assert {len(b.id) for b in committed} == {56}  # Azure wants one length per blob
    assert [b.size for b in committed] == [PART] * 5 + [4]
    assert storage.get_bytes("t/b/data/pages") == data


def test_an_interrupted_put_resumes_from_the_staged_blocks(
        az_env: Azurite, azure_container: ContainerClient) -> None:
    storage = open_az(azure_container, concurrency=1)
    good = _parts(8)
    with pytest.raises(ProducerFailed):
        storage.put("t/b/data/pages", failing_chunks(good[:5]))
    assert not storage.exists("t/b/data/pages")
    assert [i.key for i in storage.list()] == []
    assert storage.stats.uploaded_parts == 4  # the 5th was still being read when it failed

    again = open_az(azure_container)
    assert again.put("t/b/data/pages", iter(good)) == 8 * PART
    assert (again.stats.skipped_parts, again.stats.uploaded_parts) == (4, 4)
    assert again.get_bytes("t/b/data/pages") == b"".join(good)

    # a complete object put again with the same bytes sends nothing but the commit
    third = open_az(azure_container)
    third.put("t/b/data/pages", iter(good))
    assert (third.stats.skipped_parts, third.stats.uploaded_bytes) == (8, 0)


def test_a_resumed_put_with_different_bytes_stores_the_new_bytes(
        az_env: Azurite, azure_container: ContainerClient) -> None:
    storage = open_az(azure_container)
    with pytest.raises(ProducerFailed):
        storage.put("k", failing_chunks(_parts(4, seed=1)))
    new = _parts(3, seed=7)
    storage.put("k", iter(new))
    assert storage.get_bytes("k") == b"".join(new)


def test_cleanup_incomplete_removes_abandoned_uploads_only_when_old(
        az_env: Azurite, azure_container: ContainerClient) -> None:
    storage = open_az(azure_container)
    storage.put_bytes("t/b/manifest.json", b"{}")
    with pytest.raises(ProducerFailed):
        storage.put("t/b/data/pages", failing_chunks(_parts(4)))
    assert _blob_names(azure_container, uncommitted=True) == [
        "repo/t/b/data/pages", "repo/t/b/manifest.json"]

    assert storage.cleanup_incomplete(older_than=3600) == 0  # may still be resumed
    assert storage.cleanup_incomplete(older_than=-60) == 1
    assert _blob_names(azure_container, uncommitted=True) == ["repo/t/b/manifest.json"]
    assert storage.get_bytes("t/b/manifest.json") == b"{}"


def test_a_blob_replaced_while_read_fails_instead_of_mixing_versions(
        az_env: Azurite, azure_container: ContainerClient) -> None:
    storage = open_az(azure_container)
    old = b"o" * (6 * MiB)  # more than the 4 MiB the SDK fetches with its first request
    storage.put_bytes("obj", old)
    stream = storage.get("obj", chunk_size=MiB)
    assert next(stream) == old[:MiB]
    storage.put_bytes("obj", b"n" * (6 * MiB))
    with pytest.raises(StorageError, match="replaced while it was being read"):
        b"".join(stream)


# -- URLs, accounts and credentials ----------------------------------------------------------


@pytest.mark.parametrize(("url", "message"), [
    ("s3://bucket/x", "not an az:// URL"),
    ("az:///prefix", "names no container"),
    ("az://Upper/x", "not a valid container name"),
    ("az://a/x", "not a valid container name"),
    ("az://double--hyphen/x", "not a valid container name"),
    ("az://ok-name/a//b", "invalid storage key"),
    ("az://ok-name/x?acount=typo", "unknown option.*acount"),
    ("az://ok-name/x?endpoint=ftp://h", "must be an http"),
    ("az://ok-name/x#frag", "fragment"),
])
def test_bad_urls_are_rejected(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AzureBlobStorage.from_url(url)


def test_an_account_is_required_without_a_connection_string(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match=r"names no storage account: add \?account=NAME"):
        open_storage("az://backups/prod")


def test_a_url_account_must_match_the_connection_string(az_env: Azurite) -> None:
    with pytest.raises(ValueError, match=r"names the account 'other'.*devstoreaccount1"):
        open_storage("az://backups/prod?account=other")


def test_account_key_and_endpoint_from_the_url(
        monkeypatch: pytest.MonkeyPatch, azure_server: Azurite,
        azure_container: ContainerClient) -> None:
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_KEY", azure_server.key)
    url = f"az://{azure_container.container_name}/p?endpoint={azure_server.blob_endpoint}"
    storage = open_storage(url)
    assert isinstance(storage, AzureBlobStorage)
    storage.put_bytes("k", b"v")
    assert azure_container.get_blob_client("p/k").download_blob().readall() == b"v"

    monkeypatch.setenv("AZURE_STORAGE_KEY", base64.b64encode(b"wrong" * 12).decode())
    # Azure says AuthenticationFailed, Azurite AuthorizationFailure: both name key and grant
    with pytest.raises(StorageError, match="check the account key") as raised:
        open_storage(url).get_bytes("k")
    assert not isinstance(raised.value, TransientStorageError)


def _sas(azure_server: Azurite, container: ContainerClient, permission: str) -> str:
    return generate_container_sas(
        azure_server.account, container.container_name, account_key=azure_server.key,
        permission=ContainerSasPermissions.from_string(permission),
        expiry=datetime.now(UTC) + timedelta(hours=1))


def test_sas_tokens_work_and_missing_permissions_name_the_fix(
        monkeypatch: pytest.MonkeyPatch, azure_server: Azurite,
        azure_container: ContainerClient) -> None:
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)
    url = f"az://{azure_container.container_name}/p?endpoint={azure_server.blob_endpoint}"
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "?" + _sas(azure_server, azure_container,
                                                             "racwdl"))
    writer = open_storage(url)
    writer.put_bytes("k", b"v")
    assert [i.key for i in writer.list()] == ["k"]

    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", _sas(azure_server, azure_container, "rl"))
    reader = open_storage(url)
    assert reader.get_bytes("k") == b"v"
    with pytest.raises(StorageError, match=r"denied upload k.*SAS token with read, add, create"):
        reader.put_bytes("k2", b"v")


def test_a_missing_container_is_named_with_the_fix(az_env: Azurite) -> None:
    storage = open_storage("az://no-such-container/p")
    for operation in (lambda: storage.put_bytes("k", b"v"), lambda: list(storage.list()),
                      lambda: storage.get("k"), lambda: storage.stat("k")):
        with pytest.raises(StorageError, match="container 'no-such-container' does not exist"):
            operation()


def test_a_missing_blob_in_an_existing_container_is_object_not_found(
        az_env: Azurite, azure_container: ContainerClient) -> None:
    storage = open_az(azure_container)
    for operation in (lambda: storage.get("k"), lambda: storage.get_bytes("k"),
                      lambda: storage.stat("k")):
        with pytest.raises(ObjectNotFound):
            operation()
    assert not storage.exists("k")


def test_huge_objects_get_growing_blocks() -> None:
    from safehold.storage.azure import GROW_EVERY
    from safehold.storage.parts import split_parts

    sizes = [len(p) for p in split_parts(iter([b"x" * 70]), 2, grow_every=3)]
    assert sizes == [2, 2, 2, 4, 4, 4, 6, 6, 6, 8, 8, 8, 10]
    assert GROW_EVERY * 5 <= 50_000  # five sizes fit Azure's block count


