"""LocalStorage: the shared storage contract, plus what only a filesystem can get wrong."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from safehold import fsutil
from safehold.storage import StorageError, local, open_storage
from safehold.storage.local import TEMP_PREFIX, LocalStorage
from tests.contract.storage_contract import ProducerFailed, StorageContract, failing_chunks
from tests.infra.portable import posix_only


@pytest.mark.portable
class TestLocalStorage(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> LocalStorage:
        return LocalStorage(tmp_path / "repo")


def _files_on_disk(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.portable
def test_open_storage_resolves_file_urls_and_creates_the_root(tmp_path: Path) -> None:
    root = tmp_path / "new dir" / "nested"
    storage = open_storage(root.as_uri())
    assert isinstance(storage, LocalStorage)
    assert storage.root == root
    assert root.is_dir()
    assert storage.url == root.as_uri()
    assert LocalStorage.from_url(f"file:{root}").root == root  # the one-slash form is absolute


@pytest.mark.portable
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file://backups/daily", "names the host 'backups'.*file:///backups/daily"),
        ("file://localhost/var/backups", "names the host 'localhost'.*file:///var/backups$"),
        ("file:relative/dir", "relative path 'relative/dir'"),
        ("file:", "relative path ''"),
        ("file:///var/backups?mode=x", "query or fragment"),
        ("s3://bucket/prefix", "not a file:// URL"),
    ],
)
def test_bad_file_urls_are_rejected(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalStorage.from_url(url)


def test_a_root_that_cannot_be_created_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(StorageError, match=r"cannot create the repository directory .*a-file/sub"):
        LocalStorage.from_url((tmp_path / "a-file" / "sub").as_uri())


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../escape", "a/../../escape", "a/..", "./a", "a//b", "a/", "a/./b",
     ".tmp-x", "a/.tmp-b/c", "nul\0byte"],
)
def test_keys_that_escape_or_alias_are_rejected(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "repo")
    for operation in (
        lambda: storage.put_bytes(key, b"x"),
        lambda: storage.get(key),
        lambda: storage.get_bytes(key),
        lambda: storage.stat(key),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
    ):
        with pytest.raises(ValueError, match="invalid storage key"):
            operation()
    assert list(tmp_path.rglob("*")) == [tmp_path / "repo"]


@pytest.mark.parametrize("prefix", ["../", "a/../../", "/etc/", "a//"])
def test_list_rejects_escaping_prefixes(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        LocalStorage(tmp_path).list(prefix)


# -- layout on disk --------------------------------------------------------------------------


def test_delete_removes_emptied_directories_up_to_the_root(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.put_bytes("t/b1/data/x", b"x")
    storage.put_bytes("t/keep", b"k")
    storage.delete("t/b1/data/x")
    assert sorted(p.name for p in storage.root.rglob("*")) == ["keep", "t"]
    storage.delete("t/keep")
    assert storage.root.is_dir()
    assert list(storage.root.iterdir()) == []
    storage.put_bytes("t", b"a key where a directory was")
    assert storage.get_bytes("t") == b"a key where a directory was"


def test_failed_put_leaves_no_file_behind(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.put_bytes("b/old", b"old")
    with pytest.raises(ProducerFailed):
        storage.put("b/old", failing_chunks([b"z" * 4096] * 4))
    with pytest.raises(ProducerFailed):
        storage.put("c/new", failing_chunks([b"z" * 4096] * 4))
    assert _files_on_disk(storage.root) == ["b/old"]


@pytest.mark.portable
def test_big_chunks_are_written_a_slice_at_a_time_and_short_writes_resumed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline hands put() 4 MiB chunks; each write() call takes at most WRITE_SIZE
    (big calls cost the kernel far more CPU), and a short write goes on where it stopped."""
    calls: list[int] = []
    real_fdopen = os.fdopen

    class ShortWrites:  # writes all but the last 7 bytes it is given, as a full pipe may
        def __init__(self, f: object) -> None:
            self.f = f

        def write(self, data: memoryview) -> int:
            calls.append(len(data))
            return self.f.write(data[:max(1, len(data) - 7)])  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(self.f, name)

        def __enter__(self) -> ShortWrites:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()  # type: ignore[attr-defined]

    monkeypatch.setattr(local.os, "fdopen", lambda *a, **k: ShortWrites(real_fdopen(*a, **k)))
    storage = LocalStorage(tmp_path / "repo")
    data = os.urandom(4 * fsutil.WRITE_SIZE + 12345)
    pieces = [data[:3 * fsutil.WRITE_SIZE + 5], data[3 * fsutil.WRITE_SIZE + 5:]]
    assert storage.put("big", pieces) == len(data)
    assert max(calls) == fsutil.WRITE_SIZE and len(calls) > 5
    monkeypatch.undo()
    assert storage.get_bytes("big") == data


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's posix_fadvise")
def test_an_object_is_written_back_while_it_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every FLUSH_AFTER bytes, the kernel is asked (for real: the call goes through) to start
    writing out the range just written, so the fsync at the end finds little left to do."""
    advice: list[tuple[int, int, int]] = []
    real = os.posix_fadvise

    def recorded(fd: int, offset: int, length: int, what: int) -> None:
        advice.append((offset, length, what))
        real(fd, offset, length, what)

    monkeypatch.setattr(fsutil.os, "posix_fadvise", recorded)
    storage = LocalStorage(tmp_path / "repo")
    data = os.urandom(2 * fsutil.FLUSH_AFTER + 3 * fsutil.WRITE_SIZE + 99)
    assert storage.put("big", [data[:5_000_000], data[5_000_000:]]) == len(data)
    # contiguous from the start, each range FLUSH_AFTER plus at most the write that crossed it
    assert len(advice) == 2 and {what for _, _, what in advice} == {os.POSIX_FADV_DONTNEED}
    assert advice[0][0] == 0 and advice[1][0] == advice[0][1]
    assert all(fsutil.FLUSH_AFTER <= length < fsutil.FLUSH_AFTER + fsutil.WRITE_SIZE
               for _, length, _ in advice)
    assert storage.get_bytes("big") == data
    storage.put_bytes("small", b"x" * 1000)  # below FLUSH_AFTER: the fsync alone
    assert len(advice) == 2


def test_advice_the_filesystem_refuses_is_given_up_and_the_object_still_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def refused(fd: int, offset: int, length: int, what: int) -> None:
        calls.append(offset)
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(fsutil.os, "posix_fadvise", refused, raising=False)
    monkeypatch.setattr(fsutil.sys, "platform", "linux")
    storage = LocalStorage(tmp_path / "repo")
    data = os.urandom(3 * fsutil.FLUSH_AFTER)
    assert storage.put("big", [data]) == len(data)
    assert calls == [0]  # tried once, then left to the fsync
    assert storage.get_bytes("big") == data


def test_no_advice_where_it_would_not_start_writeback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(fsutil.os, "posix_fadvise", lambda *a: calls.append(1), raising=False)
    monkeypatch.setattr(fsutil.sys, "platform", "darwin")
    storage = LocalStorage(tmp_path / "repo")
    data = os.urandom(2 * fsutil.FLUSH_AFTER)
    assert storage.put("big", [data]) == len(data)
    assert not calls and storage.get_bytes("big") == data


@posix_only("mode bits (Windows keeps only the read-only flag)")
def test_objects_are_private_to_the_owner(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.put_bytes("t/b/data/db", b"secret rows")
    assert (storage.root / "t/b/data/db").stat().st_mode & 0o777 == 0o600
    assert (storage.root / "t/b/data").stat().st_mode & 0o777 == 0o700


def test_writing_under_an_object_is_a_storage_error(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.put_bytes("a", b"file")
    with pytest.raises(StorageError, match="cannot create 'a/b'"):
        storage.put_bytes("a/b", b"x")
    assert _files_on_disk(storage.root) == ["a"]


# -- temp files ------------------------------------------------------------------------------


def test_temp_files_are_invisible_and_cleaned_when_stale(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.put_bytes("t/b/manifest.json", b"{}")
    stale = storage.root / "t/b/data" / f"{TEMP_PREFIX}stale"
    stale.parent.mkdir()
    stale.write_bytes(b"half an object")
    hour_ago = time.time() - 2 * 3600
    os.utime(stale, (hour_ago, hour_ago))
    fresh = storage.root / "t/b" / f"{TEMP_PREFIX}fresh"
    fresh.write_bytes(b"an upload in progress")

    assert [i.key for i in storage.list()] == ["t/b/manifest.json"]
    assert [i.key for i in storage.list("t/b/.tmp")] == []

    assert storage.cleanup_incomplete() == 1
    assert not stale.exists()
    assert not stale.parent.exists()  # its emptied directory went with it
    assert fresh.exists()
    assert storage.cleanup_incomplete(older_than=0) == 1
    assert _files_on_disk(storage.root) == ["t/b/manifest.json"]


def test_a_put_removes_its_own_abandoned_temp_files_listing_the_directory_rarely(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed backup's put of an object removes the temp files a killed writer left for
    that object, and only those: another object's stay until it is put, a live writer's
    (modified since the put began) stays. The directory is listed once per LISTING_TTL, not
    at every put (which cost a backup of n tables n² directory entries)."""
    data = tmp_path / "repo" / "t/b/data"
    data.mkdir(parents=True)
    temp = {name: data / f"{local._put_prefix(data / name)}killed" for name in "abc"}
    hour_ago = time.time() - 3600
    for name, path in temp.items():
        path.write_bytes(b"half an object")
        when = hour_ago if name != "c" else time.time() + 3600  # c: its writer is still busy
        os.utime(path, (when, when))
    listings: list[Path] = []
    real = local._put_temps
    monkeypatch.setattr(local, "_put_temps", lambda d: listings.append(d) or real(d))

    storage = LocalStorage(tmp_path / "repo")
    storage.put_bytes("t/b/data/a", b"a")
    assert not temp["a"].exists() and temp["b"].exists()
    for i in range(50):
        storage.put_bytes(f"t/b/data/n{i}", b"n")
    assert listings == [data]
    storage.put_bytes("t/b/data/b", b"b")
    storage.put_bytes("t/b/data/c", b"c")
    assert not temp["b"].exists() and temp["c"].exists()
    assert listings == [data]

    monkeypatch.setattr(local, "LISTING_TTL", 0.0)
    storage.put_bytes("t/b/data/d", b"d")
    assert listings == [data, data]
    assert sorted(p.name for p in data.iterdir() if p.name.startswith(TEMP_PREFIX)) \
        == [temp["c"].name]


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from safehold.storage.local import LocalStorage

    def chunks():
        for i in range(1_000_000):
            yield bytes([i % 256]) * 65536
            if i == 64:  # 4 MiB written: tell the parent, then keep writing until killed
                print("writing", flush=True)

    LocalStorage(Path(sys.argv[1])).put(sys.argv[2], chunks())
    """
)


@posix_only("SIGKILL of the writer")
@pytest.mark.parametrize("existing", [None, b"the previous good object"], ids=["new", "replace"])
def test_a_killed_writer_never_leaves_a_torn_object(tmp_path: Path, existing: bytes | None
                                                    ) -> None:
    root = tmp_path / "repo"
    storage = LocalStorage(root)
    key = "target/backup/data/db.pages"
    if existing is not None:
        storage.put_bytes(key, existing)

    writer = [sys.executable, "-c", _WRITER, str(root), key]
    with subprocess.Popen(writer, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "writing\n"
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL

    temps = [p for p in root.rglob(f"{TEMP_PREFIX}*") if p.is_file()]
    assert len(temps) == 1 and temps[0].stat().st_size >= 4 << 20  # killed midway, not before
    if existing is None:
        assert not storage.exists(key)
        assert [i.key for i in storage.list()] == []
    else:
        assert storage.get_bytes(key) == existing
        assert [i.key for i in storage.list()] == [key]

    assert storage.cleanup_incomplete(older_than=0) == 1
    assert not any(root.rglob(f"{TEMP_PREFIX}*"))
