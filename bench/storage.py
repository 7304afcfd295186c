"""Upload throughput of each storage backend beside the plain SDK uploading the same bytes.

``run(work, size_mb)`` starts each emulator, uploads ``size_mb`` of incompressible bytes through
our backend's streaming ``put`` (parts, parallelism, retries, resume bookkeeping) and through the
cloud's own SDK upload helper, in the same run, and prints both with their ratio. First, S3
alone beside boto3's ``upload_fileobj`` with the same part size and threads, alternating rounds
(medians, min-max) and the CPU used by the client and by the emulator process during each.
Emulators on loopback measure our overhead over the SDK, not the network. Numbers are printed, never
asserted (DESIGN.md section 8).

Backends register in :data:`BACKENDS`: name -> :class:`Backend` (how to start the emulator, the
repository URL on it, and the plain-SDK upload to compare with): ``s3`` (moto), ``gs``
(fake-gcs-server; the SDK side is one resumable session) and ``az`` (Azurite).

    .venv/bin/python -c "from pathlib import Path; from bench.storage import run; run(Path('/tmp'))"
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from safehold.storage.base import open_storage

MiB = 1 << 20
BLOCK = MiB
ROUNDS = 2


@dataclass(frozen=True)
class Backend:
    """How to benchmark one backend: ``start(work)`` yields a started emulator ``store``;
    ``url(store, container)`` is our repository URL; ``prepare(store)`` creates a bucket and
    returns its name; ``sdk_upload(store, container, key, data)`` uploads with the SDK alone."""

    start: Callable[[Path], AbstractContextManager[Any]]
    prepare: Callable[[Any], str]
    url: Callable[[Any, str], str]
    sdk_upload: Callable[[Any, str, str, bytes], None]


def _moto(work: Path) -> AbstractContextManager[Any]:
    from tests.infra.objectstores import MotoS3

    store = MotoS3(work / "s3")
    for name, value in store.env().items():  # boto3's default credential chain reads these
        if name != "AWS_ENDPOINT_URL":
            os.environ.setdefault(name, value)
    return store


def _s3_bucket(store: Any) -> str:
    store.client().create_bucket(Bucket="bench")
    return "bench"


def _s3_sdk_upload(store: Any, bucket: str, key: str, data: bytes) -> None:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_chunksize=16 * MiB, max_concurrency=4)
    store.client().upload_fileobj(io.BytesIO(data), bucket, key, Config=config)


def _fake_gcs(work: Path) -> AbstractContextManager[Any]:
    from tests.infra.objectstores import FakeGCS

    return FakeGCS(work / "gcs")


def _gcs_bucket(store: Any) -> str:
    store.client().create_bucket("bench")
    return "bench"


def _gcs_sdk_upload(store: Any, bucket: str, key: str, data: bytes) -> None:
    # The SDK's own streaming upload: one resumable session, 16 MiB chunks, one at a time.
    blob = store.client().bucket(bucket).blob(key, chunk_size=16 * MiB)
    blob.upload_from_file(io.BytesIO(data), size=len(data))


def _azurite(work: Path) -> AbstractContextManager[Any]:
    from tests.infra.objectstores import Azurite

    store = Azurite(work / "azure")
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = store.connection_string  # our az:// reads it
    return store


def _az_container(store: Any) -> str:
    from azure.core.exceptions import ResourceExistsError

    with contextlib.suppress(ResourceExistsError):  # Azurite keeps its data in the work dir
        store.client().create_container("bench")
    return "bench"


def _az_sdk_upload(store: Any, container: str, key: str, data: bytes) -> None:
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(store.connection_string,
                                                      max_block_size=16 * MiB)
    client.get_blob_client(container, key).upload_blob(data, overwrite=True, max_concurrency=4)


BACKENDS: dict[str, Backend] = {
    "s3": Backend(start=_moto, prepare=_s3_bucket,
                  url=lambda store, bucket: f"s3://{bucket}/bench?endpoint={store.endpoint}",
                  sdk_upload=_s3_sdk_upload),
    "gs": Backend(start=lambda work: _fake_gcs(work), prepare=_gcs_bucket,
                  url=lambda store, bucket: f"gs://{bucket}/bench?endpoint={store.endpoint}",
                  sdk_upload=_gcs_sdk_upload),
    "az": Backend(start=lambda work: _azurite(work), prepare=_az_container,
                  url=lambda store, container: f"az://{container}/bench",
                  sdk_upload=_az_sdk_upload),
}


def _blocks(data: bytes) -> Iterator[bytes]:
    return (data[i:i + BLOCK] for i in range(0, len(data), BLOCK))


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _compare(name: str, backend: Backend, work: Path, data: bytes) -> None:
    with backend.start(work) as store:
        container = backend.prepare(store)
        storage = open_storage(backend.url(store, container))
        # The first large upload to a fresh emulator is slower whoever makes it: warm it up,
        # then alternate the two and keep the best of each.
        backend.sdk_upload(store, container, "bench/warmup", data[: 32 * MiB])
        ours = sdk = float("inf")
        # A fresh key every round: a repeated put of identical bytes to the same key is a
        # resume (Azure keeps committed blocks, so it would send almost nothing).
        for i in range(ROUNDS):
            key = f"object-{i}"
            ours = min(ours, _timed(lambda k=key: storage.put(f"ours/{k}", _blocks(data))))
            sdk = min(sdk, _timed(
                lambda k=key: backend.sdk_upload(store, container, f"bench/sdk/{k}", data)))
    mb = len(data) / 1e6
    print(f"{name:<8} {mb / ours:>14.1f} {mb / sdk:>10.1f} {sdk / ours:>7.2f}")


@dataclass
class _Runs:
    walls: list[float]
    own_cpu: list[float]  # this process (our upload or boto3's)
    emulator_cpu: list[float]  # moto_server during the run

    def line(self, name: str, mb: float) -> str:
        med = statistics.median(self.walls)
        return (f"{name:<44} {mb / med:>7.1f} MB/s  {med:>6.2f} s ({min(self.walls):.2f}-"
                f"{max(self.walls):.2f})  cpu: client {statistics.median(self.own_cpu):.2f} s,"
                f" emulator {statistics.median(self.emulator_cpu):.2f} s")


def _measured(runs: _Runs, emulator_cpu: Callable[[], float], fn: Callable[[], object]) -> None:
    emulator, own = emulator_cpu(), time.process_time()
    runs.walls.append(_timed(fn))
    runs.own_cpu.append(time.process_time() - own)
    runs.emulator_cpu.append(emulator_cpu() - emulator)


def s3_versus_upload_fileobj(work: Path, data: bytes, rounds: int = 3) -> None:
    """Our S3 put beside boto3's ``upload_fileobj`` of the same bytes, same part size and
    threads, same moto emulator: alternating rounds, medians with min-max, and the CPU that the
    client process and the emulator process each used (the emulator shares the 2 cores)."""
    from boto3.s3.transfer import TransferConfig

    from safehold.storage.s3 import DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE

    with _moto(work) as store:
        bucket = _s3_bucket(store)
        storage = open_storage(f"s3://{bucket}/bench?endpoint={store.endpoint}")
        client = store.client()
        config = TransferConfig(multipart_chunksize=DEFAULT_PART_SIZE,
                                max_concurrency=DEFAULT_CONCURRENCY)
        client.upload_fileobj(io.BytesIO(data[: 32 * MiB]), bucket, "warmup", Config=config)
        ours, sdk = _Runs([], [], []), _Runs([], [], [])
        def put_ours(key: str) -> None:
            storage.put(key, _blocks(data))

        def put_sdk(key: str) -> None:
            client.upload_fileobj(io.BytesIO(data), bucket, key, Config=config)

        runs: list[tuple[_Runs, Callable[[str], None]]] = [(ours, put_ours), (sdk, put_sdk)]
        for i in range(rounds):  # A B, B A, A B, …: neither always meets the emulator first
            for n, (into, upload) in enumerate(runs if i % 2 == 0 else runs[::-1]):
                store.reset()  # moto keeps objects in memory: each upload meets an empty one
                client.create_bucket(Bucket=bucket)
                _measured(into, store.server.cpu_seconds, partial(upload, f"o-{i}-{n}"))
    mb = len(data) / 1e6
    setup = (f"{DEFAULT_PART_SIZE // MiB} MiB parts, {DEFAULT_CONCURRENCY} threads,"
             f" median (min-max) of {rounds} alternating runs, order swapped each round")
    print(f"\n## S3 upload vs boto3 upload_fileobj ({len(data) // MiB} MiB incompressible,"
          f" moto on loopback; {setup})")
    print(ours.line("safehold S3Storage.put", mb))
    print(sdk.line("boto3 upload_fileobj", mb))
    print(f"ratio safehold/upload_fileobj (wall, < 1.0: ours faster):"
          f" {statistics.median(ours.walls) / statistics.median(sdk.walls):.2f}")


def run(work: Path, size_mb: int = 256) -> None:
    data = os.urandom(size_mb * MiB)
    s3_versus_upload_fileobj(work, data)
    print(f"storage upload, {size_mb} MiB incompressible, emulators on loopback")
    print(f"{'backend':<8} {'safehold MB/s':>14} {'SDK MB/s':>10} {'ratio':>7}")
    for name, backend in BACKENDS.items():
        _compare(name, backend, work, data)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp))
