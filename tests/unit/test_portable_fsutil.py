"""safehold.fsutil on every platform: the real branch of the platform running the test, and the
Windows branch simulated on POSIX (``fsutil.WINDOWS`` patched, a stand-in ``msvcrt``).

Marked ``portable``: the cross-platform workflow runs these on macOS and Windows too, where the
"real" tests take the native branch.
"""

from __future__ import annotations

import errno
import io
import os
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath

import pytest

from safehold import fsutil
from safehold.storage.local import LocalStorage

pytestmark = pytest.mark.portable
POSIX = os.name == "posix"


class FakeMsvcrt(types.ModuleType):
    """``msvcrt.locking`` on POSIX: byte-range locks through fcntl.lockf, LK_LOCK failing with
    EDEADLK a set number of times first (as the real one does after ten seconds)."""

    LK_UNLCK, LK_LOCK, LK_NBLCK = 0, 1, 2

    def __init__(self, deadlocks: int = 0) -> None:
        super().__init__("msvcrt")
        self.calls: list[tuple[int, int, int]] = []
        self.deadlocks = deadlocks

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        import fcntl

        self.calls.append((mode, nbytes, os.lseek(fd, 0, os.SEEK_CUR)))
        if mode == self.LK_LOCK and self.deadlocks:
            self.deadlocks -= 1
            raise OSError(errno.EDEADLK, "Resource deadlock avoided")
        op = {self.LK_UNLCK: fcntl.LOCK_UN, self.LK_LOCK: fcntl.LOCK_EX,
              self.LK_NBLCK: fcntl.LOCK_EX | fcntl.LOCK_NB}[mode]
        fcntl.lockf(fd, op, nbytes, 0)


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMsvcrt]:
    """Take fsutil's Windows branches (on POSIX, with a stand-in msvcrt)."""
    if not POSIX:
        pytest.skip("simulates Windows on POSIX; on Windows the real-branch tests cover it")
    fake = FakeMsvcrt()
    monkeypatch.setattr(fsutil, "WINDOWS", True)
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    yield fake


# -- directory fsync --------------------------------------------------------------------------


def test_fsync_dir_on_this_platform(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    fsutil.fsync_dir(tmp_path)  # opens and syncs on POSIX, nothing on Windows: never raises


def test_fsync_dir_is_skipped_on_windows(windows: FakeMsvcrt, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def no_open(*args: object, **kwargs: object) -> int:
        raise AssertionError("a directory cannot be opened for fsync on Windows")

    monkeypatch.setattr(os, "open", no_open)
    fsutil.fsync_dir(tmp_path)


# -- atomic replace ---------------------------------------------------------------------------


def _flaky_replace(monkeypatch: pytest.MonkeyPatch, failures: int) -> list[int]:
    real, calls = os.replace, []

    def replace(src: object, dst: object) -> None:
        calls.append(1)
        if len(calls) <= failures:
            raise PermissionError(errno.EACCES, "The process cannot access the file")
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(fsutil.time, "sleep", lambda s: None)
    return calls


def test_replace_retries_a_sharing_violation_on_windows(
        windows: FakeMsvcrt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "new", tmp_path / "old"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    calls = _flaky_replace(monkeypatch, failures=3)
    fsutil.replace(src, dst)
    assert dst.read_bytes() == b"new" and not src.exists() and len(calls) == 4


def test_replace_gives_up_on_windows_after_its_attempts(
        windows: FakeMsvcrt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "new", tmp_path / "old"
    src.write_bytes(b"new")
    calls = _flaky_replace(monkeypatch, failures=1000)
    with pytest.raises(PermissionError):
        fsutil.replace(src, dst)
    assert len(calls) == fsutil._REPLACE_ATTEMPTS and src.exists()


def test_replace_does_not_retry_a_posix_permission_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsutil, "WINDOWS", False)
    calls = _flaky_replace(monkeypatch, failures=1000)
    with pytest.raises(PermissionError):
        fsutil.replace(tmp_path / "a", tmp_path / "b")
    assert len(calls) == 1


# -- locks ------------------------------------------------------------------------------------


def _probe(fd: int) -> bool:
    """Whether another descriptor of the file could take the lock now (not blocking)."""
    if os.name == "nt":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def test_lock_is_exclusive_and_waits_for_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    a = os.open(path, os.O_RDWR | os.O_CREAT)
    b = os.open(path, os.O_RDWR)
    other = os.open(path, os.O_RDWR)
    try:
        fsutil.lock(a)
        assert not _probe(other), "a second descriptor took a held lock"
        got = threading.Event()
        waiter = threading.Thread(target=lambda: (fsutil.lock(b), got.set()))
        waiter.start()
        fsutil.unlock(a)
        waiter.join(timeout=60)
        assert got.is_set(), "the waiter never got the lock released by its holder"
        assert not _probe(other)
        fsutil.unlock(b)
        assert _probe(other)
    finally:
        for fd in (a, b, other):
            os.close(fd)


def test_windows_lock_uses_msvcrt_on_the_first_byte_and_keeps_waiting(
        windows: FakeMsvcrt, tmp_path: Path) -> None:
    windows.deadlocks = 2  # LK_LOCK gave up twice (10 s each on Windows): still waiting
    fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"xyz")  # the position moved: the lock must still be on byte 0
        fsutil.lock(fd)
        fsutil.unlock(fd)
    finally:
        os.close(fd)
    L, U = FakeMsvcrt.LK_LOCK, FakeMsvcrt.LK_UNLCK
    assert windows.calls == [(L, 1, 0), (L, 1, 0), (L, 1, 0), (U, 1, 0)]


def test_windows_lock_reports_other_errors(windows: FakeMsvcrt, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int, mode: int, nbytes: int) -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(windows, "locking", broken)
    fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)
    try:
        with pytest.raises(OSError, match="Bad file descriptor"):
            fsutil.lock(fd)
    finally:
        os.close(fd)


# -- modes and users --------------------------------------------------------------------------


def test_set_private_on_this_platform(tmp_path: Path) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fsutil.set_private(fd, path)
    finally:
        os.close(fd)
    if POSIX:
        assert path.stat().st_mode & 0o777 == 0o600
    else:  # Windows keeps the write bit only: the file stays writable by its owner
        assert os.access(path, os.W_OK)


def test_set_private_without_fchmod_uses_the_path(
        windows: FakeMsvcrt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    path.chmod(0o644)
    seen: list[tuple[object, int]] = []
    monkeypatch.delattr(os, "fchmod", raising=False)
    real_chmod = os.chmod
    monkeypatch.setattr(os, "chmod", lambda p, m: (seen.append((p, m)), real_chmod(p, m)))
    fd = os.open(path, os.O_RDWR)
    try:
        fsutil.set_private(fd, path)
    finally:
        os.close(fd)
    assert seen == [(path, 0o600)]


def test_whoami_names_a_uid_on_posix_and_the_login_on_windows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    if POSIX:
        assert fsutil.whoami() == f"uid {os.getuid()}"
    monkeypatch.setattr(fsutil, "WINDOWS", True)
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    assert fsutil.whoami() == "user alice"

    def no_login() -> str:
        raise OSError("no login name")

    monkeypatch.setattr("getpass.getuser", no_login)
    assert fsutil.whoami() == "this user"


# -- URLs -------------------------------------------------------------------------------------


def test_url_paths_on_this_platform(tmp_path: Path) -> None:
    from urllib.parse import unquote, urlsplit

    path = tmp_path / "a dir" / "app.db"
    assert fsutil.path_from_url(unquote(urlsplit(path.as_uri()).path)) == path
    assert fsutil.path_from_url("relative/app.db") is None


@pytest.mark.parametrize(("url_path", "expected"), [
    ("/C:/Users/alice/app.db", r"C:\Users\alice\app.db"),  # what Path.as_uri() writes
    ("C:/Users/alice/app.db", r"C:\Users\alice\app.db"),
    (r"C:\Users\alice\app.db", r"C:\Users\alice\app.db"),  # sqlite:C:\... as typed
    ("//server/share/app.db", r"\\server\share\app.db"),
    ("/no-drive/app.db", None),  # relative to the current drive: not absolute
    ("relative/app.db", None),
    ("C:relative.db", None),
])
def test_windows_url_paths(windows: FakeMsvcrt, url_path: str, expected: str | None) -> None:
    got = fsutil.path_from_url(url_path)
    assert (None if got is None else PureWindowsPath(str(got))) == \
        (None if expected is None else PureWindowsPath(expected))


def test_posix_url_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsutil, "WINDOWS", False)
    assert fsutil.path_from_url("/var/backups") == Path("/var/backups")
    assert fsutil.path_from_url("C:/x") is None


# -- local storage through the Windows branches -----------------------------------------------


def test_local_storage_works_through_the_windows_branches(
        windows: FakeMsvcrt, tmp_path: Path) -> None:
    """Writes, conditional writes (the lease's lock) and deletes with fsync_dir skipped,
    replace() retried and msvcrt locking, on a real directory."""
    storage = LocalStorage(tmp_path / "repo")  # (a POSIX path: no drive for from_url)
    storage.put("t/b/data", [b"abc", b"def"])
    assert storage.get_bytes("t/b/data") == b"abcdef"
    version = storage.put_if_absent("t/lease.json", b"one")
    assert storage.replace_if("t/lease.json", b"two", version)
    assert storage.get_versioned("t/lease.json")[0] == b"two"
    storage.delete("t/b/data")
    assert [i.key for i in storage.list("t/")] == ["t/lease.json"]
    locks = [c for c in windows.calls if c[0] == FakeMsvcrt.LK_LOCK]
    unlocks = [c for c in windows.calls if c[0] == FakeMsvcrt.LK_UNLCK]
    assert len(locks) == 2 and len(unlocks) == 2, windows.calls


@pytest.mark.parametrize("size", [0, 5, fsutil.WRITE_SIZE, 2 * fsutil.WRITE_SIZE + 7])
def test_write_sliced_hands_the_file_at_most_write_size_per_call(size: int) -> None:
    class Recorder(io.BytesIO):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[int] = []

        def write(self, chunk: bytes | memoryview) -> int:  # type: ignore[override]
            self.calls.append(len(memoryview(chunk)))
            return super().write(chunk)

    data = os.urandom(size)
    out = Recorder()
    fsutil.write_sliced(out, data)
    assert out.getvalue() == data
    assert max(out.calls) <= fsutil.WRITE_SIZE
    assert len(out.calls) == max(1, -(-size // fsutil.WRITE_SIZE))
