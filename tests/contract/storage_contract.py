"""The behaviour every storage backend owes the pipeline, as one reusable test class.

A backend's test module subclasses :class:`StorageContract` and provides a ``storage`` fixture
that yields an empty repository (a fresh directory, bucket or container per test)::

    class TestS3Storage(StorageContract):
        @pytest.fixture
        def storage(self, s3_bucket): ...

Keys used here follow the repository's shape: no key is also a "directory" of another key
(``a/b`` and ``a/b/c`` never coexist), which filesystems cannot represent.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from safehold.storage import ConditionFailed, ObjectInfo, ObjectNotFound, Storage, open_storage

MiB = 1 << 20


class ProducerFailed(Exception):
    """Raised by a chunk iterator midway through a put, standing in for a failed dump."""


def failing_chunks(good: list[bytes]) -> Iterator[bytes]:
    yield from good
    raise ProducerFailed("the database dump broke off")


def _keys(storage: Storage, prefix: str = "") -> list[str]:
    return [info.key for info in storage.list(prefix)]


def race(writers: int, attempt: Callable[[int], str]) -> dict[int, str | Exception]:
    """Run ``attempt(i)`` in ``writers`` threads released at once; each one's version or error."""
    gate = threading.Barrier(writers)
    outcome: dict[int, str | Exception] = {}

    def run(i: int) -> None:
        gate.wait()
        try:
            outcome[i] = attempt(i)
        except Exception as exc:
            outcome[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(outcome) == writers, "a racing writer hung"
    return outcome


def winners(outcome: dict[int, str | Exception]) -> list[int]:
    """Writers that won; fails on any error other than a lost condition."""
    for i, result in outcome.items():
        if isinstance(result, Exception) and not isinstance(result, ConditionFailed):
            raise AssertionError(f"writer {i} failed with {result!r}, not ConditionFailed")
    return sorted(i for i, result in outcome.items() if isinstance(result, str))


# A child process for the cross-process race: opens the repository by URL (credentials from the
# environment), says "ready", waits for "go" on stdin, then tries to create the key once.
_CREATOR = """
import sys
from safehold.storage import ConditionFailed, open_storage
storage = open_storage(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
try:
    print("won", storage.put_if_absent(sys.argv[2], sys.argv[3].encode()), flush=True)
except ConditionFailed:
    print("lost", flush=True)
"""


class StorageContract:
    @pytest.fixture
    def storage(self) -> Storage:
        raise NotImplementedError(
            f"{type(self).__name__} must define a `storage` fixture yielding an empty repository"
        )

    def test_satisfies_the_protocol(self, storage: Storage) -> None:
        assert isinstance(storage, Storage)
        assert storage.url

    # -- put / get ---------------------------------------------------------------------------

    @pytest.mark.parametrize("data", [b"", b"\x00", b"hello, world\n"], ids=["empty", "1B", "text"])
    def test_small_round_trip(self, storage: Storage, data: bytes) -> None:
        assert storage.put("obj", [data]) == len(data)
        assert b"".join(storage.get("obj")) == data
        assert storage.get_bytes("obj") == data

    def test_multi_mib_object_streams_in_both_directions(self, storage: Storage) -> None:
        data = os.urandom(5 * MiB + 123)
        pieces = [data[i : i + 64 * 1024] for i in range(0, len(data), 64 * 1024)]
        assert len(pieces) > 80

        assert storage.put("big/object.bin", iter(pieces)) == len(data)

        blocks = list(storage.get("big/object.bin", chunk_size=MiB))
        assert all(len(b) <= MiB for b in blocks)
        assert len(blocks) >= 6
        assert b"".join(blocks) == data

    def test_concurrent_puts_of_distinct_keys(self, storage: Storage) -> None:
        # Engines stream several objects of one backup at once (per-table dumps), so a backend
        # must take puts of distinct keys from several threads.
        from concurrent.futures import ThreadPoolExecutor

        payloads = {f"par/{i}": os.urandom(200_000 + i) for i in range(6)}

        def put(key: str) -> int:
            data = payloads[key]
            return storage.put(key, (data[j : j + 50_000] for j in range(0, len(data), 50_000)))

        with ThreadPoolExecutor(max_workers=4) as pool:
            sizes = dict(zip(payloads, pool.map(put, payloads), strict=True))
        assert sizes == {k: len(v) for k, v in payloads.items()}
        for key, data in payloads.items():
            assert storage.get_bytes(key) == data

    def test_get_honours_small_chunk_sizes(self, storage: Storage) -> None:
        storage.put_bytes("obj", b"x" * 2500)
        blocks = list(storage.get("obj", chunk_size=1000))
        assert len(blocks) >= 3
        assert max(map(len, blocks)) <= 1000
        assert b"".join(blocks) == b"x" * 2500

    def test_put_accepts_a_generator_and_counts_its_bytes(self, storage: Storage) -> None:
        produced = (bytes([i]) * i for i in range(200))
        assert storage.put("gen", produced) == sum(range(200))
        assert storage.get_bytes("gen") == b"".join(bytes([i]) * i for i in range(200))

    def test_put_bytes_round_trip(self, storage: Storage) -> None:
        storage.put_bytes("dir/manifest.json", b'{"format": 1}')
        assert storage.get_bytes("dir/manifest.json") == b'{"format": 1}'

    def test_overwrite_replaces_only_once_complete(self, storage: Storage) -> None:
        storage.put_bytes("obj", b"old contents")
        seen_midway: list[bytes] = []

        def new_chunks() -> Iterator[bytes]:
            yield b"new "
            seen_midway.append(storage.get_bytes("obj"))
            yield b"contents, longer"

        storage.put("obj", new_chunks())
        assert seen_midway == [b"old contents"]
        assert storage.get_bytes("obj") == b"new contents, longer"
        assert _keys(storage) == ["obj"]

    def test_failed_put_leaves_no_object(self, storage: Storage) -> None:
        with pytest.raises(ProducerFailed):
            storage.put("a/b", failing_chunks([b"x" * 1000] * 10))
        assert not storage.exists("a/b")
        assert _keys(storage) == []
        with pytest.raises(ObjectNotFound):
            storage.get_bytes("a/b")

    def test_failed_overwrite_keeps_the_old_object(self, storage: Storage) -> None:
        storage.put_bytes("a/b", b"the good backup")
        with pytest.raises(ProducerFailed):
            storage.put("a/b", failing_chunks([b"y" * 1000] * 10))
        assert storage.get_bytes("a/b") == b"the good backup"
        assert _keys(storage) == ["a/b"]

    def test_missing_object_fails_before_anything_is_yielded(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFound) as raised:
            storage.get("no/such/object")  # not iterated: get() itself must raise
        assert raised.value.key == "no/such/object"
        with pytest.raises(ObjectNotFound):
            storage.get_bytes("no/such/object")

    # -- stat / exists -----------------------------------------------------------------------

    def test_stat(self, storage: Storage) -> None:
        storage.put_bytes("d/empty", b"")
        storage.put("d/sized", [b"a" * 700, b"b" * 300])
        now = datetime.now(UTC)

        info = storage.stat("d/sized")
        assert (info.key, info.size) == ("d/sized", 1000)
        assert info.modified.tzinfo is not None
        assert abs(info.modified - now) < timedelta(hours=1)
        assert storage.stat("d/empty").size == 0
        with pytest.raises(ObjectNotFound):
            storage.stat("d/missing")

    def test_exists(self, storage: Storage) -> None:
        storage.put_bytes("x/y/z", b"1")
        assert storage.exists("x/y/z")
        assert not storage.exists("x/y/zz")
        assert not storage.exists("x/y")  # a common prefix is not an object
        with pytest.raises(ObjectNotFound):
            storage.stat("x/y")

    # -- list --------------------------------------------------------------------------------

    def test_list_prefix_is_a_plain_string_prefix(self, storage: Storage) -> None:
        for key in ["a/b/c", "a/bc", "a/b-d", "a/c", "ab", "b"]:
            storage.put_bytes(key, key.encode())

        assert _keys(storage, "a/b") == ["a/b-d", "a/b/c", "a/bc"]  # '-' < '/' < 'c'
        assert _keys(storage, "a/b/") == ["a/b/c"]
        assert _keys(storage, "a/") == ["a/b-d", "a/b/c", "a/bc", "a/c"]
        assert _keys(storage, "a") == ["a/b-d", "a/b/c", "a/bc", "a/c", "ab"]
        assert _keys(storage, "a/bc") == ["a/bc"]
        assert _keys(storage, "zzz") == []
        assert _keys(storage, "a/x/y/") == []
        assert _keys(storage) == ["a/b-d", "a/b/c", "a/bc", "a/c", "ab", "b"]

    def test_list_reports_sizes(self, storage: Storage) -> None:
        storage.put_bytes("s/one", b"1")
        storage.put_bytes("s/three", b"333")
        infos = list(storage.list("s/"))
        assert [(i.key, i.size) for i in infos] == [("s/one", 1), ("s/three", 3)]
        assert all(isinstance(i, ObjectInfo) and i.modified.tzinfo for i in infos)

    def test_list_matches_a_sorted_filter_for_every_prefix(self, storage: Storage) -> None:
        rng = random.Random(20240611)
        dirs, files = ["d", "d-1", "d.x", "dd", "e"], ["f", "f-1", "f.1", "ff", "d0"]
        keys: set[str] = set()
        while len(keys) < 40:
            depth = rng.randint(0, 3)
            keys.add("/".join([*rng.choices(dirs, k=depth), rng.choice(files)]))
        for key in keys:
            storage.put_bytes(key, b"")

        prefixes = {k[:n] for k in keys for n in range(len(k) + 1)}
        for prefix in ["", *rng.sample(sorted(prefixes), 60)]:
            expected = sorted(k for k in keys if k.startswith(prefix))
            assert _keys(storage, prefix) == expected, prefix

    # -- delete ------------------------------------------------------------------------------

    def test_delete(self, storage: Storage) -> None:
        storage.put_bytes("t/b1/data/x", b"x")
        storage.put_bytes("t/b1/manifest.json", b"{}")
        storage.put_bytes("t/b10/manifest.json", b"{}")

        storage.delete("t/b1/data/x")
        assert not storage.exists("t/b1/data/x")
        with pytest.raises(ObjectNotFound):
            storage.get("t/b1/data/x")
        assert _keys(storage) == ["t/b1/manifest.json", "t/b10/manifest.json"]

        storage.delete("t/b1/manifest.json")
        assert _keys(storage, "t/b1/") == []
        assert _keys(storage) == ["t/b10/manifest.json"]

    def test_delete_is_idempotent(self, storage: Storage) -> None:
        storage.put_bytes("k", b"v")
        storage.delete("k")
        storage.delete("k")
        storage.delete("never/existed")
        assert _keys(storage) == []

    # -- names and space ---------------------------------------------------------------------

    def test_unicode_and_spaces_in_keys(self, storage: Storage) -> None:
        keys = ["with space/a b.bin", "ünïcødé/日本語 ファイル", "émoji/🗄️ backup"]
        for key in keys:
            storage.put_bytes(key, key.encode())
        assert _keys(storage) == sorted(keys)
        for key in keys:
            assert storage.get_bytes(key) == key.encode()
            assert storage.stat(key).size == len(key.encode())
        assert _keys(storage, "ünïcødé/日") == ["ünïcødé/日本語 ファイル"]

    # -- conditional writes (the primitive under leases) -------------------------------------

    def test_put_if_absent_creates_only_once(self, storage: Storage) -> None:
        first = b"holder one " + os.urandom(16)
        version = storage.put_if_absent("t/lease.json", first)
        assert isinstance(version, str) and version
        assert storage.get_versioned("t/lease.json") == (first, version)
        with pytest.raises(ConditionFailed) as raised:
            storage.put_if_absent("t/lease.json", b"holder two " + os.urandom(16))
        assert raised.value.key == "t/lease.json"
        assert not raised.value.transient
        assert storage.get_versioned("t/lease.json") == (first, version)
        assert _keys(storage) == ["t/lease.json"]  # no temp or part objects left visible

    def test_replace_if_needs_the_current_version(self, storage: Storage) -> None:
        v1 = storage.put_if_absent("t/lease.json", b"one " + os.urandom(16))
        two = b"two " + os.urandom(16)
        v2 = storage.replace_if("t/lease.json", two, v1)
        assert v2 != v1
        assert storage.get_versioned("t/lease.json") == (two, v2)
        with pytest.raises(ConditionFailed):
            storage.replace_if("t/lease.json", b"stale " + os.urandom(16), v1)
        assert storage.get_versioned("t/lease.json") == (two, v2)
        three = b"three " + os.urandom(16)
        v3 = storage.replace_if("t/lease.json", three, v2)
        assert storage.get_versioned("t/lease.json") == (three, v3)
        assert len({v1, v2, v3}) == 3

    def test_replace_if_never_creates(self, storage: Storage) -> None:
        version = storage.put_if_absent("t/other.json", b"x " + os.urandom(16))
        with pytest.raises(ConditionFailed):
            storage.replace_if("t/absent.json", b"y " + os.urandom(16), version)
        assert not storage.exists("t/absent.json")
        with pytest.raises(ObjectNotFound):
            storage.get_versioned("t/absent.json")

    def test_a_deleted_object_can_be_created_again(self, storage: Storage) -> None:
        storage.put_if_absent("t/lease.json", b"a " + os.urandom(16))
        storage.delete("t/lease.json")
        again = b"b " + os.urandom(16)
        version = storage.put_if_absent("t/lease.json", again)
        assert storage.get_versioned("t/lease.json") == (again, version)

    RACE_ROUNDS = 5
    RACE_WRITERS = 6
    RACE_SIZE = MiB  # large enough that a server checking before it stores leaves a window

    def test_racing_creators_exactly_one_wins(self, storage: Storage) -> None:
        for round_ in range(self.RACE_ROUNDS):
            key = f"race/{round_}/lease.json"
            payloads = [bytes([i]) * 16 + os.urandom(self.RACE_SIZE) for i in
                        range(self.RACE_WRITERS)]
            outcome = race(self.RACE_WRITERS, lambda i, k=key, p=payloads:  # type: ignore[misc]
                           storage.put_if_absent(k, p[i]))
            won = winners(outcome)
            assert len(won) == 1, f"round {round_}: writers {won} all won the create"
            assert storage.get_versioned(key) == (payloads[won[0]], outcome[won[0]])

    def test_racing_replacers_exactly_one_wins(self, storage: Storage) -> None:
        for round_ in range(self.RACE_ROUNDS):
            key = f"race/{round_}/lease.json"
            base = storage.put_if_absent(key, b"expired holder " + os.urandom(16))
            payloads = [bytes([i]) * 16 + os.urandom(self.RACE_SIZE) for i in
                        range(self.RACE_WRITERS)]
            outcome = race(self.RACE_WRITERS, lambda i, k=key, p=payloads, b=base:  # type: ignore[misc]
                           storage.replace_if(k, p[i], b))
            won = winners(outcome)
            assert len(won) == 1, f"round {round_}: writers {won} all broke the same version"
            assert storage.get_versioned(key) == (payloads[won[0]], outcome[won[0]])

    def test_racing_processes_exactly_one_creates(self, storage: Storage) -> None:
        writers, key = 4, "race/processes/lease.json"
        children = [subprocess.Popen([sys.executable, "-c", _CREATOR, storage.url, key,
                                      f"process {i} {os.urandom(8).hex()}"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                    for i in range(writers)]
        try:
            for child in children:
                assert child.stdout is not None and child.stdout.readline() == "ready\n"
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            results = [child.communicate(timeout=120)[0].split() for child in children]
        finally:
            for child in children:
                child.kill()
                child.wait()
        assert all(child.returncode == 0 for child in children), results
        won = [r for r in results if r[0] == "won"]
        assert len(won) == 1 and sorted(r[0] for r in results) == ["lost"] * 3 + ["won"]
        data, version = storage.get_versioned(key)
        assert version == won[0][1]
        assert data.startswith(b"process ")
        assert open_storage(storage.url).get_versioned(key) == (data, version)

    def test_a_lease_is_taken_refused_renewed_and_released_here(self, storage: Storage) -> None:
        """The lease on this backend (its conditional-write probe included)."""
        from safehold.api.errors import LeaseHeld
        from safehold.repository.lease import Holder, Lease, LeaseRecord, check_conditional_writes

        check_conditional_writes(storage, "app")  # each test has its own URL: a real probe
        first = Lease(storage, "app", Holder(operation="backup", host="h1", pid=1), ttl=30)
        first.acquire()
        with pytest.raises(LeaseHeld, match="pid 1 on host h1"):
            Lease(storage, "app", Holder(operation="prune", host="h2", pid=2)).acquire()
        first.renew()
        first.confirm()
        first.release()
        second = Lease(storage, "app", Holder(operation="prune", host="h2", pid=2))
        second.acquire()
        record = LeaseRecord.model_validate_json(storage.get_bytes("app/lease.json"))
        assert (record.holder.pid, record.released) == (2, False)
        second.release()
        assert _keys(storage) == ["app/lease.json"]  # probes cleaned up

    def test_free_space(self, storage: Storage) -> None:
        space = storage.free_space()
        assert space is None or (isinstance(space, int) and space > 0)
