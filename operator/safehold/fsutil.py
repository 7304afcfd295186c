"""Small filesystem helpers shared by local storage, the SQLite engine and the CLI.

They hold every difference between POSIX (Linux, macOS) and Windows on those paths, so the
callers never test the platform themselves (docs/cli.md#platforms):

* directories: POSIX needs a directory fsynced to make a rename durable; Windows cannot open a
  directory for fsync (NTFS journals its metadata), so :func:`fsync_dir` does nothing there.
* atomic rename: :func:`replace` is ``os.replace`` (atomic on both); Windows refuses it while
  another process has the target open (an antivirus scan, a reader), so it retries briefly.
* locks: :func:`lock` is ``flock`` on POSIX and ``msvcrt.locking`` on Windows; both are
  released by the OS when the holder dies.
* modes: Windows keeps only the read-only flag of a mode (the user profile's ACLs keep files
  private); :func:`set_private` is exact where modes exist and harmless where they do not.
* users: :func:`whoami` names the user for messages (a uid on POSIX, the login on Windows).

One rule holds on every platform: a file is written at most :data:`WRITE_SIZE` bytes per call
(:func:`write_sliced`; local storage's own loop). On Linux, local storage also starts each
object's writeback while it is written (:class:`Writeback`).

``WINDOWS`` is read at call time, so tests take the Windows branches on any platform by
patching it (``tests/unit/test_portable_fsutil.py``).
"""

from __future__ import annotations

import errno
import os
import re
import sys
import time
from pathlib import Path, PureWindowsPath
from typing import BinaryIO

WINDOWS = os.name == "nt"
# os.open flag that keeps a descriptor from leaking into child processes (Windows descriptors
# are not inherited by default: PEP 446).
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# os.open flag for byte-exact files: Windows opens in text mode (\n written as \r\n) without it.
O_BINARY = getattr(os, "O_BINARY", 0)
_REPLACE_ATTEMPTS = 10
# The most one write() call hands the kernel. The pipeline's chunks are 4 MiB; written in 4 MiB
# calls, the kernel's copy into the page cache cost 20 times the CPU of the same bytes in 1 MiB
# calls (perf, 400 MiB to ext4 on Linux 6.18: copy_folio_from_iter_atomic 0.40 s against
# 0.02 s). A 1 GB PostgreSQL backup's writes to local storage took 0.47-0.52 CPU-s against
# 0.13-0.14, the backup 3-5% less time (docs/performance.md).
WRITE_SIZE = 1 << 20
# Bytes written to a file before the kernel is asked to start writing them out (Writeback).
FLUSH_AFTER = 8 << 20
_DRIVE = re.compile(r"^/[A-Za-z]:")


def write_sliced(f: BinaryIO, data: bytes | memoryview) -> None:
    """``f.write(data)`` in calls of at most :data:`WRITE_SIZE` bytes, for a buffered file
    (whose write takes all it is given or raises)."""
    if len(data) <= WRITE_SIZE:
        f.write(data)
        return
    with memoryview(data) as view:
        for start in range(0, len(view), WRITE_SIZE):
            f.write(view[start:start + WRITE_SIZE])


class Writeback:
    """Starts the kernel's writeback of a file as it is written, :data:`FLUSH_AFTER` bytes at a
    time, so that the fsync that makes it durable finds little left to write.

    Left to the kernel, a backup's objects stayed in the page cache until their fsync at the
    end, which then wrote them out while the backup waited: 400 MiB written in 1 MiB calls and
    fsynced took 0.27 s here, of which the fsync 0.17 s; with the writeback started every 8 MiB,
    0.17 s, the fsync 8 ms (ext4, Linux 6.18). In a backup the writing overlaps the dumps and
    compression, and the wait at the end is gone (docs/performance.md).

    On Linux ``posix_fadvise(POSIX_FADV_DONTNEED)`` starts writing back a range's dirty pages
    without waiting for them (and drops pages already clean: none, in a range just written).
    It is what PostgreSQL's ``pg_flush_data`` calls where ``sync_file_range`` is missing, and
    Python offers no ``sync_file_range``. Elsewhere this does nothing; durability never
    depends on it (the fsync does that).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.started = 0  # bytes whose writeback has been started
        self.enabled = sys.platform.startswith("linux") and hasattr(os, "posix_fadvise")

    def written(self, end: int) -> None:
        """The file now holds ``end`` bytes, written from its start."""
        if self.enabled and end - self.started >= FLUSH_AFTER:
            try:
                os.posix_fadvise(self.fd, self.started, end - self.started,
                                 os.POSIX_FADV_DONTNEED)
            except OSError:  # advice a filesystem refuses: the fsync does it all, as before
                self.enabled = False
            self.started = end


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (POSIX needs the directory synced)."""
    if WINDOWS or not hasattr(os, "O_DIRECTORY"):
        return  # NTFS journals metadata; a directory cannot be opened for fsync there
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(source: str | Path, target: str | Path) -> None:
    """``os.replace``, retried for a moment on Windows while another process holds ``target``
    open (a sharing violation there; POSIX renames over open files)."""
    for attempt in range(1, _REPLACE_ATTEMPTS + 1):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if not WINDOWS or attempt == _REPLACE_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)


def lock(fd: int) -> None:
    """Block until this process holds an exclusive lock on the open file ``fd``."""
    if WINDOWS:
        import msvcrt

        while True:
            os.lseek(fd, 0, os.SEEK_SET)  # msvcrt locks bytes from the current position
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
                return
            except OSError as exc:  # LK_LOCK gives up after 10 s: keep waiting, as flock does
                if exc.errno not in (errno.EDEADLK, errno.EACCES):
                    raise
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)


def unlock(fd: int) -> None:
    """Release :func:`lock` (closing ``fd`` releases it too)."""
    if WINDOWS:
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


def set_private(fd: int, path: str | Path, mode: int = 0o600) -> None:
    """Give the file ``path`` (open as ``fd``) exactly ``mode``; O_CREAT's mode is narrowed by
    the umask, never widened. Without ``os.fchmod`` (Windows before Python 3.13) the path is
    used; Windows keeps only the read-only flag and relies on the profile's ACLs."""
    if hasattr(os, "fchmod") and not WINDOWS:
        os.fchmod(fd, mode)
    else:
        os.chmod(path, mode)


def whoami() -> str:
    """The user this process runs as, for messages: ``uid 1000`` or ``user alice``."""
    if hasattr(os, "getuid") and not WINDOWS:
        return f"uid {os.getuid()}"
    import getpass

    try:
        return f"user {getpass.getuser()}"
    except Exception:  # no login name in the environment
        return "this user"


def path_from_url(url_path: str) -> Path | None:
    """The local path of a ``file:``/``sqlite:`` URL's (unquoted) path, or None when it is
    relative. ``/var/x`` on POSIX; ``/C:/x`` (what ``Path.as_uri`` writes) is ``C:\\x`` on
    Windows, where a path without a drive is not absolute."""
    if WINDOWS:
        path = url_path[1:] if _DRIVE.match(url_path) else url_path
        return Path(path) if PureWindowsPath(path).is_absolute() else None
    return Path(url_path) if url_path.startswith("/") else None
