"""Local-filesystem storage: a repository is a directory tree, one file per object.

Used for laptops, VMs and Kubernetes volumes (``file:///var/backups``). Writes are crash-safe:
an object is streamed into a ``.tmp-*`` file beside its final path, fsynced, renamed into place
and the directory fsynced, so a reader (or a restarted runner) sees either the old object, the
new one, or none, never a torn one. A killed writer can leave a ``.tmp-*`` file behind; listings
skip those and :meth:`LocalStorage.cleanup_incomplete` (called by prune) removes stale ones.

Files are created 0600 and directories 0700 (as restic does): backups hold database contents.
list() does not descend into symbolically linked directories (no loops); the root may be one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from safehold import fsutil
from safehold.fsutil import fsync_dir
from safehold.storage.base import (
    ConditionFailed,
    NoSpaceError,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    register,
)

TEMP_PREFIX = ".tmp-"
LISTING_TTL = 60.0  # seconds a directory's listing of abandoned put temp files is reused
_PUT_TEMP = f"{TEMP_PREFIX}p"  # what every put()'s temp file name starts with
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
# A concurrent delete() may remove a freshly created, still empty parent directory before the
# temp file lands in it; recreating it a few times resolves that race.
_CREATE_ATTEMPTS = 5


class LocalStorage:
    """Objects as files under ``root``; the key ``a/b/c`` is the file ``root/a/b/c``."""

    url: str

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.url = self.root.as_uri()
        self._prepare_root()
        # per directory: when it was last listed, and the put temp files found then
        self._leftovers: dict[Path, tuple[float, set[str]]] = {}
        self._leftovers_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> LocalStorage:
        """Open ``file:///absolute/dir``, creating the directory when it is missing."""
        parts = urlsplit(url)
        if parts.scheme != "file":
            raise ValueError(f"{url!r} is not a file:// URL; use file:///absolute/dir")
        if parts.netloc:
            meant = parts.path if parts.netloc == "localhost" else f"/{parts.netloc}{parts.path}"
            raise ValueError(
                f"file URL {url!r} names the host {parts.netloc!r}; local repositories take an"
                f" absolute path after three slashes, e.g. file://{meant}"
            )
        if parts.query or parts.fragment:
            raise ValueError(
                f"file URL {url!r} has a query or fragment; use file:///absolute/dir alone"
            )
        path = unquote(parts.path)
        local = fsutil.path_from_url(path)
        if local is None:
            raise ValueError(
                f"file URL {url!r} has the relative path {path!r}; use an absolute one,"
                f" e.g. {Path(os.path.abspath(path or '.')).as_uri()}"
            )
        return cls(local)

    # -- writing -----------------------------------------------------------------------------

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        path = self._path(key)
        started = time.time()
        fd, tmp = self._create_temp(key, path, _put_prefix(path))
        written = 0
        try:
            # Unbuffered: a failed write (a full disk) is reported once, as the NoSpaceError
            # below, not again by a flush when the file is closed. At most WRITE_SIZE a call
            # (why: fsutil).
            # The kernel writes the object out while it is written (fsutil.Writeback): the
            # fsync below waits for little.
            with os.fdopen(fd, "wb", buffering=0) as f:
                writeback = fsutil.Writeback(f.fileno())
                for chunk in chunks:  # errors raised by the producer propagate unchanged
                    view = memoryview(chunk)
                    while view:
                        with self._os_errors("write", key):
                            n = f.write(view[:fsutil.WRITE_SIZE]) or 0
                        written += n
                        writeback.written(written)
                        view = view[n:]
                with self._os_errors("write", key):
                    os.fsync(f.fileno())
            with self._os_errors("write", key):
                fsutil.replace(tmp, path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        with self._os_errors("write", key):
            fsync_dir(path.parent)
        self._discard_abandoned(path, started)
        return written

    def _discard_abandoned(self, path: Path, started: float) -> None:
        """Remove temp files of earlier puts of this same key that were abandoned (a killed
        writer's, which a resumed backup just replaced): not modified since this put began.
        A live writer of the key keeps modifying its temp file and is left alone.

        A directory is listed at most once a ``LISTING_TTL`` (listing it at every put cost a
        backup of n tables n² directory entries); a temp file that appeared since belongs to a
        writer that was alive then, and is found by a later listing if that writer died."""
        prefix = _put_prefix(path)
        with self._leftovers_lock:
            listed, names = self._leftovers.get(path.parent, (-LISTING_TTL, set()))
            if time.monotonic() - listed >= LISTING_TTL:
                names = _put_temps(path.parent)
                self._leftovers[path.parent] = (time.monotonic(), names)
            mine = {name for name in names if name.startswith(prefix)}
            names -= mine
        for name in mine:
            with suppress(OSError):
                if os.stat(path.parent / name, follow_symlinks=False).st_mtime < started:
                    os.unlink(path.parent / name)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put(key, (data,))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return  # no such object (a directory is not an object)
        except OSError as e:
            raise self._error("delete", key, e) from e
        with self._os_errors("delete", key):
            fsync_dir(path.parent)
        self._remove_empty_dirs(path.parent)

    def cleanup_incomplete(self, older_than: float = 3600) -> int:
        """Remove ``.tmp-*`` files not modified for ``older_than`` seconds; return how many.

        A live writer modifies its temp file as chunks arrive, so old ones were abandoned by a
        crashed or killed writer. A writer whose producer stalls for longer than
        ``older_than`` loses its temp file and its put() fails, hence the generous default.
        """
        cutoff = time.time() - older_than
        removed = 0
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if not name.startswith(TEMP_PREFIX):
                    continue
                path = Path(dirpath, name)
                try:
                    if path.lstat().st_mtime > cutoff:
                        continue
                    path.unlink()
                except FileNotFoundError:
                    continue  # its writer finished or gave up meanwhile
                except OSError as e:
                    raise self._error("remove temp file", str(path), e) from e
                removed += 1
                self._remove_empty_dirs(path.parent)
        return removed

    # -- reading -----------------------------------------------------------------------------

    def get(self, key: str, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        # Opened now, not on first next(): a missing object fails before anything is yielded,
        # and a concurrent overwrite (a rename) cannot tear the stream being read.
        return self._read_chunks(self._open(key), chunk_size, key)

    def get_bytes(self, key: str) -> bytes:
        with self._open(key) as f, self._os_errors("read", key):
            return f.read()

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as e:
            raise self._error("stat", key, e) from e
        if not S_ISREG(st.st_mode):
            raise ObjectNotFound(key)  # a directory is not an object
        return _info(key, st)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order.

        Only the directory the prefix's last '/' points at is opened, and of its entries only
        those starting with the rest of the prefix are descended into.
        """
        directory, _, name_start = prefix.rpartition("/")
        if directory:
            _check_segments(prefix, directory.split("/"))
        base = f"{directory}/" if directory else ""
        return self._walk(self.root / directory, base, name_start)

    def free_space(self) -> int | None:
        with self._os_errors("measure free space of", str(self.root)):
            return shutil.disk_usage(self.root).free

    # -- conditional writes (leases) ---------------------------------------------------------
    # Creation is a hard link of a complete temp file (link() fails atomically when the name
    # exists, and readers never see a partial record, unlike O_CREAT|O_EXCL then write);
    # compare-and-replace runs under a lock (fsutil.lock: flock, msvcrt on Windows) on a
    # '.tmp-lock-<name>' file beside the object, which the OS releases when its holder dies.
    # Versions are SHA-256 digests of the contents. delete() does not take the lock: leases
    # are released by replacing, never deleted.

    def put_if_absent(self, key: str, data: bytes) -> str:
        path = self._path(key)
        with self._cas_lock(key, path):
            tmp = self._write_temp(key, path, data)
            try:
                with self._os_errors("create", key):
                    try:
                        os.link(tmp, path)
                    except FileExistsError:
                        raise ConditionFailed(key, "it already exists") from None
            finally:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)
            with self._os_errors("create", key):
                fsync_dir(path.parent)
        return _version(data)

    def replace_if(self, key: str, data: bytes, expected: str) -> str:
        path = self._path(key)
        with self._cas_lock(key, path):
            try:
                current = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise ConditionFailed(key, "it does not exist") from None
            except OSError as e:
                raise self._error("read", key, e) from e
            if _version(current) != expected:
                raise ConditionFailed(key, "it was replaced since version " + expected[:12])
            tmp = self._write_temp(key, path, data)
            try:
                with self._os_errors("write", key):
                    fsutil.replace(tmp, path)
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            with self._os_errors("write", key):
                fsync_dir(path.parent)
        return _version(data)

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)  # one open file: a concurrent rename cannot tear it
        return data, _version(data)

    def _write_temp(self, key: str, path: Path, data: bytes) -> str:
        fd, tmp = self._create_temp(key, path)
        try:
            # Unbuffered, as in put(): a full disk is reported once, as NoSpaceError.
            with os.fdopen(fd, "wb", buffering=0) as f, self._os_errors("write", key):
                view = memoryview(data)
                while view:
                    view = view[f.write(view) or 0:]
                os.fsync(f.fileno())
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp

    @contextmanager
    def _cas_lock(self, key: str, path: Path) -> Iterator[None]:
        """Hold an exclusive lock on the object's lock file (blocking until it is free).

        The lock file is never removed by us; cleanup_incomplete() may remove an old one, so
        after locking we check that the name still points at the file we locked.
        """
        lock = path.parent / f"{TEMP_PREFIX}lock-{path.name}"
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            with self._os_errors("lock", key):
                self._make_dirs(path.parent)
                try:
                    fd = os.open(lock, os.O_RDWR | os.O_CREAT | fsutil.O_CLOEXEC, 0o600)
                except FileNotFoundError:  # a concurrent delete removed the new directory
                    if attempt == _CREATE_ATTEMPTS:
                        raise
                    continue
            locked = False
            try:
                with self._os_errors("lock", key):
                    fsutil.lock(fd)
                    locked = True
                    try:
                        same = os.stat(lock).st_ino == os.fstat(fd).st_ino
                    except FileNotFoundError:
                        same = False
                if same:
                    yield
                    return
            finally:
                if locked:  # Windows frees a closed file's locks only eventually: unlock first
                    with suppress(OSError):
                        fsutil.unlock(fd)
                os.close(fd)
        raise StorageError(f"cannot lock {key!r} in {self.root}: its lock file keeps vanishing")

    # -- internals ---------------------------------------------------------------------------

    def _prepare_root(self) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(
                f"cannot create the repository directory {self.root}: {e.strerror}; create it"
                " (and its parents) or choose a path the runner can write"
            ) from e
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(
                f"the repository directory {self.root} is not writable by this user"
                f" ({fsutil.whoami()}); fix its ownership/permissions or mount it read-write"
            )

    def _path(self, key: str) -> Path:
        _check_key(key)
        return self.root.joinpath(*key.split("/"))

    def _open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")  # closed by the caller or by _read_chunks
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as e:
            raise self._error("open", key, e) from e

    def _read_chunks(self, f: BinaryIO, chunk_size: int, key: str) -> Iterator[bytes]:
        with f:
            while True:
                with self._os_errors("read", key):
                    block = f.read(chunk_size)
                if not block:
                    return
                yield block

    def _create_temp(self, key: str, path: Path, prefix: str = TEMP_PREFIX) -> tuple[int, str]:
        attempt = 1
        while True:
            with self._os_errors("create", key):
                self._make_dirs(path.parent)
                try:
                    return tempfile.mkstemp(prefix=prefix, dir=path.parent)
                except FileNotFoundError:
                    if attempt == _CREATE_ATTEMPTS:
                        raise
            attempt += 1

    def _make_dirs(self, directory: Path) -> None:
        """Create missing directories below the root, fsyncing each parent so they persist."""
        missing = []
        while directory != self.root and not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            with suppress(FileExistsError):
                d.mkdir(mode=0o700)
            fsync_dir(d.parent)

    def _remove_empty_dirs(self, directory: Path) -> None:
        """Remove ``directory`` and its ancestors below the root while they are empty."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or already gone): ancestors are not empty either
            directory = directory.parent

    def _walk(self, directory: Path, base: str, name_start: str) -> Iterator[ObjectInfo]:
        # Sorting a directory's entries by name, with '/' appended to subdirectory names, and
        # descending in that order yields keys in exact string order without collecting them.
        try:
            with os.scandir(directory) as it:
                entries = sorted(
                    ((e.name + "/" if is_dir else e.name), e)
                    for e in it
                    if e.name.startswith(name_start) and not e.name.startswith(TEMP_PREFIX)
                    for is_dir in (e.is_dir(follow_symlinks=False),)
                    if is_dir or e.is_file()
                )
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing under this prefix (or it vanished under a concurrent delete)
        except OSError as e:
            raise self._error("list", base, e) from e
        for name, entry in entries:
            if name.endswith("/"):
                yield from self._walk(Path(entry.path), base + name, "")
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue  # deleted since the directory was read
            yield _info(base + name, st)

    @contextmanager
    def _os_errors(self, action: str, key: str) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            raise self._error(action, key, e) from e

    def _error(self, action: str, key: str, e: OSError) -> StorageError:
        where = f"{key!r} in {self.root}"
        if e.errno in _NO_SPACE:
            return NoSpaceError(
                f"cannot {action} {where}: {e.strerror}; free space on that volume or enlarge it"
            )
        return StorageError(f"cannot {action} {where}: {e.strerror or e}")


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _put_temps(directory: Path) -> set[str]:
    """Names of the put() temp files in ``directory`` (none if it cannot be listed)."""
    with suppress(OSError), os.scandir(directory) as entries:
        return {e.name for e in entries if e.name.startswith(_PUT_TEMP)}
    return set()


def _put_prefix(path: Path) -> str:
    """Temp-file prefix of put()s of one object: later puts of it can find abandoned ones."""
    return f"{_PUT_TEMP}{hashlib.sha256(path.name.encode()).hexdigest()[:12]}-"


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid storage key {key!r}: keys are non-empty strings")
    if key.startswith("/"):
        raise ValueError(f"invalid storage key {key!r}: keys are relative, drop the leading '/'")
    _check_segments(key, key.split("/"))


def _check_segments(key: str, segments: Iterable[str]) -> None:
    for segment in segments:
        problem = _segment_problem(segment)
        if problem:
            raise ValueError(
                f"invalid storage key {key!r}: {problem}; keys are relative '/'-separated"
                " paths such as 'target/backup-id/manifest.json'"
            )


def _segment_problem(segment: str) -> str | None:
    if not segment:
        return "it has an empty segment ('//', or a leading or trailing '/')"
    if segment in (".", ".."):
        return f"the segment {segment!r} would escape or alias a directory"
    if segment.startswith(TEMP_PREFIX):
        return f"segments starting with {TEMP_PREFIX!r} are reserved for in-progress writes"
    if "\0" in segment:
        return "it contains a NUL character"
    return None


register("file", LocalStorage.from_url)
