"""GCSStorage against fake-gcs-server: the shared storage contract, plus what only GCS has —
part objects composed (in a tree past 32), resumption from them, URLs, missing buckets."""

from __future__ import annotations

import pytest
from google.cloud.storage import Bucket

from safehold.storage import ObjectNotFound, StorageError, open_storage
from safehold.storage.gcs import PARTS_DIR, GCSStorage
from safehold.storage.retry import RetryPolicy
from tests.contract.storage_contract import MiB, ProducerFailed, StorageContract, failing_chunks
from tests.infra.objectstores import FakeGCS

PART = 256 * 1024  # small parts, so that modest objects take the multi-part (compose) path
FAST = RetryPolicy(attempts=3, initial=0.01, maximum=0.05, deadline=10)


def open_gcs(server: FakeGCS, bucket: Bucket | str, prefix: str = "repo", **options: object
             ) -> GCSStorage:
    options = {"part_size": PART, "read_size": PART, "policy": FAST, **options}
    name = bucket if isinstance(bucket, str) else bucket.name
    return GCSStorage.from_url(f"gs://{name}/{prefix}?endpoint={server.endpoint}", **options)


class TestGCSStorage(StorageContract):
    @pytest.fixture
    def storage(self, gcs_server: FakeGCS, gcs_bucket: Bucket) -> GCSStorage:
        return open_gcs(gcs_server, gcs_bucket)


def _names(bucket: Bucket) -> list[str]:
    return sorted(b.name for b in bucket.client.list_blobs(bucket))


def _parts(n: int, seed: int = 0, size: int = PART) -> list[bytes]:
    return [bytes([(seed + i) % 256]) * size for i in range(n)]


# -- compose and part objects ----------------------------------------------------------------


def test_more_than_32_parts_are_composed_in_a_tree(gcs_server: FakeGCS, gcs_bucket: Bucket
                                                   ) -> None:
    storage = open_gcs(gcs_server, gcs_bucket, part_size=16 * 1024, read_size=64 * 1024)
    data = b"".join(_parts(70, size=16 * 1024)) + b"tail"  # 71 parts: 3 composes, then 1
    assert storage.put("t/b/data/pages", iter([data])) == len(data)
    assert storage.stats.uploaded_parts == 71
    assert storage.get_bytes("t/b/data/pages") == data
    assert b"".join(storage.get("t/b/data/pages", chunk_size=10_000)) == data
    assert _names(gcs_bucket) == ["repo/t/b/data/pages"]  # parts and intermediates are gone


def test_small_objects_are_one_upload(gcs_server: FakeGCS, gcs_bucket: Bucket) -> None:
    storage = open_gcs(gcs_server, gcs_bucket)
    storage.put("k", iter([b"a" * 1000, b"b" * (PART - 1000)]))  # exactly one part
    assert storage.stats.uploaded_parts == 1
    assert _names(gcs_bucket) == ["repo/k"]


def test_an_interrupted_put_resumes_from_its_part_objects(gcs_server: FakeGCS,
                                                          gcs_bucket: Bucket) -> None:
    storage = open_gcs(gcs_server, gcs_bucket, concurrency=1)
    good = _parts(8)
    with pytest.raises(ProducerFailed):
        storage.put("t/b/data/pages", failing_chunks(good[:5]))
    assert not storage.exists("t/b/data/pages")
    assert [i.key for i in storage.list()] == []  # part objects are not keys
    assert storage.stats.uploaded_parts == 4
    assert len([n for n in _names(gcs_bucket) if f"/{PARTS_DIR}/" in n]) == 4

    again = open_gcs(gcs_server, gcs_bucket)
    assert again.put("t/b/data/pages", iter(good)) == 8 * PART
    assert (again.stats.skipped_parts, again.stats.uploaded_parts) == (4, 4)
    assert again.get_bytes("t/b/data/pages") == b"".join(good)
    assert _names(gcs_bucket) == ["repo/t/b/data/pages"]


def test_a_resumed_put_with_different_bytes_stores_the_new_bytes(
        gcs_server: FakeGCS, gcs_bucket: Bucket) -> None:
    storage = open_gcs(gcs_server, gcs_bucket)
    with pytest.raises(ProducerFailed):
        storage.put("k", failing_chunks(_parts(6, seed=1)))
    new = _parts(3, seed=7)  # fewer parts than were left behind: the extras must not be used
    storage.put("k", iter(new))
    assert storage.stats.skipped_parts == 0
    assert storage.get_bytes("k") == b"".join(new)
    assert _names(gcs_bucket) == ["repo/k"]


def test_cleanup_incomplete_removes_abandoned_uploads_only_when_old(
        gcs_server: FakeGCS, gcs_bucket: Bucket) -> None:
    storage = open_gcs(gcs_server, gcs_bucket)
    storage.put_bytes("t/b/manifest.json", b"{}")
    for key in ("t/b/data/a", "t/b/data/b"):
        with pytest.raises(ProducerFailed):
            storage.put(key, failing_chunks(_parts(3)))
    assert storage.cleanup_incomplete(older_than=3600) == 0  # may still be resumed
    assert storage.cleanup_incomplete(older_than=-60) == 2
    assert _names(gcs_bucket) == ["repo/t/b/manifest.json"]


def test_the_parts_directory_is_reserved(gcs_server: FakeGCS, gcs_bucket: Bucket) -> None:
    storage = open_gcs(gcs_server, gcs_bucket)
    with pytest.raises(ValueError, match="reserved"):
        storage.put_bytes(f"{PARTS_DIR}/x", b"")
    storage.put_bytes(f"t/{PARTS_DIR}/x", b"only the first segment is reserved")


def test_an_object_replaced_while_read_fails_instead_of_mixing_versions(
        gcs_server: FakeGCS, gcs_bucket: Bucket) -> None:
    storage = open_gcs(gcs_server, gcs_bucket)
    old = b"o" * (2 * MiB)
    storage.put_bytes("obj", old)
    stream = storage.get("obj", chunk_size=PART)
    assert next(stream) == old[:PART]
    storage.put_bytes("obj", b"n" * (2 * MiB))
    with pytest.raises(StorageError, match="replaced while it was being read"):
        b"".join(stream)


# -- URLs, endpoints and errors --------------------------------------------------------------


@pytest.mark.parametrize(("url", "message"), [
    ("s3://bucket/x", "not a gs:// URL"),
    ("gs:///prefix", "names no bucket"),
    ("gs://Upper/x", "not a valid bucket name"),
    ("gs://ab/x", "not a valid bucket name"),
    ("gs://ok-name/a//b", "invalid storage key"),
    ("gs://ok-name/x?endpiont=http://h", "unknown option.*endpiont"),
    ("gs://ok-name/x?endpoint=h:1", "must be an http"),
    ("gs://ok-name/x#frag", "fragment"),
])
def test_bad_urls_are_rejected(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GCSStorage.from_url(url)


def test_the_emulator_host_variable_selects_anonymous_access(
        monkeypatch: pytest.MonkeyPatch, gcs_server: FakeGCS, gcs_bucket: Bucket) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    storage = open_storage(f"gs://{gcs_bucket.name}/via-env")
    assert isinstance(storage, GCSStorage)
    storage.put_bytes("k", b"v")
    assert _names(gcs_bucket) == ["via-env/k"]


def test_missing_credentials_name_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for var in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(StorageError, match=r"GOOGLE_APPLICATION_CREDENTIALS names .*missing"
                       r"\.json, which does not exist.*workload identity"):
        open_storage("gs://some-bucket/p")



def test_a_missing_bucket_is_named_with_the_fix(gcs_server: FakeGCS) -> None:
    storage = open_gcs(gcs_server, "no-such-bucket")
    for operation in (lambda: storage.put_bytes("k", b"v"), lambda: list(storage.list()),
                      lambda: storage.get("k"), lambda: storage.get_bytes("k"),
                      lambda: storage.stat("k"),
                      lambda: storage.put("k", iter(_parts(3)))):
        with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
            operation()


def test_a_missing_object_in_an_existing_bucket_is_object_not_found(
        gcs_server: FakeGCS, gcs_bucket: Bucket) -> None:
    storage = open_gcs(gcs_server, gcs_bucket)
    for operation in (lambda: storage.get("k"), lambda: storage.get_bytes("k"),
                      lambda: storage.stat("k")):
        with pytest.raises(ObjectNotFound):
            operation()
    assert not storage.exists("k")
