"""The SQLite engine: page-level full, incremental and differential backups of one file.

A backup is an online snapshot (see :mod:`.snapshot`) streamed page by page; incrementals and
differentials keep only the pages whose digest differs from the parent's page map (formats in
:mod:`.pages`). A restore rebuilds the file beside the target, proves it equals the snapshot,
then either swaps it in (:mod:`.replace`) or copies chosen tables out of it (:mod:`.selective`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import unquote, urlsplit

from safehold import fsutil
from safehold.api.manifest import Manifest
from safehold.engines.base import (
    BackupOutcome,
    BackupRequest,
    BackupSink,
    Capabilities,
    ChainReader,
    CheckReport,
    ConflictError,
    DatabaseMissing,
    EngineError,
    PermissionDenied,
    RestoreRequest,
    UnsupportedError,
)
from safehold.engines.sqlite import filemode
from safehold.engines.sqlite.layout import Layout, check_chain
from safehold.engines.sqlite.pages import (
    DIGEST_NAME,
    PageMap,
    encode_runs,
    page_digest,
)
from safehold.engines.sqlite.rebuild import rebuild
from safehold.engines.sqlite.replace import replace_database
from safehold.engines.sqlite.selective import restore_tables
from safehold.engines.sqlite.snapshot import Snapshot, connect_readonly, take_snapshot

MAGIC = b"SQLite format 3\0"


class SQLiteEngine:
    """One SQLite database file, named by ``sqlite:///absolute/path.db``.

    ``scratch_dir`` holds the temporary snapshot during a backup (it needs room for a copy of
    the database); ``step_pages`` is how many pages the backup API copies per step;
    ``timeout`` is how long to wait for another connection's lock.
    """

    name: ClassVar[str] = "sqlite"
    capabilities: ClassVar[Capabilities] = Capabilities(
        backup_types=("full", "incremental", "differential"),
        selective_restore=True,
        point_in_time=False,
    )

    def __init__(self, path: Path, *, scratch_dir: Path | None = None, step_pages: int = 1024,
                 timeout: float = 60.0) -> None:
        if not path.is_absolute():
            raise ValueError(f"SQLite database path must be absolute, got {str(path)!r}")
        self.path = path
        self.scratch_dir = scratch_dir
        self.step_pages = step_pages
        self.timeout = timeout

    @classmethod
    def from_url(cls, url: str, *, scratch_dir: Path | None = None) -> SQLiteEngine:
        parts = urlsplit(url)
        if parts.scheme != "sqlite":
            raise ValueError(f"not a SQLite target URL: {url!r}; expected sqlite:///path.db")
        if parts.netloc:
            raise ValueError(
                f"SQLite target {url!r} names host {parts.netloc!r}, but SQLite databases are"
                " local files: write sqlite:///absolute/path.db (three slashes)"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"SQLite target {url!r} takes no query or fragment")
        local = fsutil.path_from_url(unquote(parts.path))
        if local is None:
            raise ValueError(
                f"SQLite target {url!r} has a relative path; write sqlite:///absolute/path.db"
                " (on Windows sqlite:///C:/path/app.db)"
            )
        return cls(local, scratch_dir=scratch_dir)

    # -- checks -------------------------------------------------------------------------------

    def check(self, purpose: Literal["backup", "restore"]) -> CheckReport:
        problems = self._backup_problems() if purpose == "backup" else self._restore_problems()
        return CheckReport(ok=not problems, server_version=sqlite3.sqlite_version,
                           problems=tuple(problems))

    def _backup_problems(self) -> list[str]:
        path = self.path
        if not path.exists():
            return [f"database file {path} does not exist"]
        if not path.is_file():
            return [f"{path} is not a regular file"]
        if not os.access(path, os.R_OK):
            return [f"{path} is not readable by {fsutil.whoami()}; grant read access"]
        with path.open("rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                return [f"{path} is not a SQLite 3 database (no 'SQLite format 3' header)"]
        problems = []
        try:
            conn = connect_readonly(path, timeout=self.timeout)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            problems.append(f"cannot read {path}: {exc}")
        problems += self._scratch_problems()
        return problems

    def _scratch_problems(self) -> list[str]:
        scratch = self.scratch_dir or Path(tempfile.gettempdir())
        if not scratch.is_dir() or not os.access(scratch, os.W_OK | os.X_OK):
            return [f"scratch directory {scratch} is missing or not writable; the backup"
                    " keeps a temporary snapshot there"]
        need, free = self.estimate_size() or 0, shutil.disk_usage(scratch).free
        if need > free:
            return [f"scratch directory {scratch} has {free} bytes free, but the snapshot needs"
                    f" about {need}; choose a scratch directory with more room"]
        return []

    def _restore_problems(self) -> list[str]:
        directory = self.path.parent
        if not directory.is_dir():
            return [f"directory {directory} does not exist; create it or fix the target path"]
        if not os.access(directory, os.W_OK | os.X_OK):
            return [f"directory {directory} is not writable by {fsutil.whoami()}; the restore"
                    " writes a temporary file next to the database"]
        if self.path.exists() and not self.path.is_file():
            return [f"{self.path} exists and is not a regular file"]
        return []

    def require_database(self) -> None:
        if not self.path.is_file():
            raise DatabaseMissing(f"SQLite database file {self.path} does not exist")

    def estimate_size(self) -> int | None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return None
        wal = Path(f"{self.path}-wal")
        return size + (wal.stat().st_size if wal.exists() else 0)

    # -- backup -------------------------------------------------------------------------------

    def backup(self, request: BackupRequest, sink: BackupSink, chain: ChainReader
               ) -> BackupOutcome:
        """Snapshot the database and store ``pages`` and ``pagemap``.

        The end position identifies the snapshot: ``page_size``, ``page_count``,
        ``schema_version`` (SQLite's schema cookie) and ``content`` (a digest of the page map,
        equal for two backups exactly when their database files are). A snapshot is a single
        instant, so the start position is the same.
        """
        if request.include:
            raise UnsupportedError(
                "SQLite backups always hold the whole database file; choose tables at restore"
                " time instead (restore include)"
            )
        self.require_database()
        if not os.access(self.path, os.R_OK):
            raise PermissionDenied(f"{self.path} is not readable by {fsutil.whoami()};"
                                   " grant read access")
        parent = _parent(request)
        with take_snapshot(self.path, self.scratch_dir, step_pages=self.step_pages,
                           timeout=self.timeout) as snap:
            pagemap = PageMap()
            if parent is None:
                changed = snap.page_count
                sink.put("pages", _full_pages(snap, pagemap),
                         meta={"format": "raw", "page_size": snap.page_size})
            else:
                base = self._parent_map(parent, snap, chain)
                sink.put("pages", encode_runs(_changed_pages(snap, base, pagemap),
                                              snap.page_size),
                         meta={"format": "runs", "page_size": snap.page_size})
                changed = pagemap.count_changed(base)
            if len(pagemap) != snap.page_count:
                raise EngineError("the backup sink stopped reading 'pages' before its end")
            sink.put("pagemap", [bytes(pagemap)], meta={"digest": DIGEST_NAME})
        position = {
            "page_size": str(snap.page_size),
            "page_count": str(snap.page_count),
            "schema_version": str(snap.schema_version),
            "content": page_digest(bytes(pagemap)).hex(),
        }
        return BackupOutcome(
            server_version=sqlite3.sqlite_version,
            start_position=position,
            end_position=dict(position),
            engine_meta={**Layout(snap.page_size, snap.page_count, changed).as_meta(),
                         "file_mode": filemode.source_mode(self.path)},
            tools={"sqlite": sqlite3.sqlite_version},
        )

    def _parent_map(self, parent: Manifest, snap: Snapshot, chain: ChainReader) -> PageMap:
        layout = Layout.of(parent)
        if layout.page_size != snap.page_size:
            raise UnsupportedError(
                f"the page size of {self.path} changed from {layout.page_size} to"
                f" {snap.page_size} bytes since backup {parent.backup_id} (VACUUM with a new"
                " page_size?); pages no longer line up: take a full backup"
            )
        base = PageMap.read(chain.open(parent, "pagemap"))
        if len(base) != layout.page_count:
            raise EngineError(
                f"backup {parent.backup_id}'s page map covers {len(base)} pages, not"
                f" {layout.page_count}: it is damaged; take a full backup"
            )
        return base

    # -- restore ------------------------------------------------------------------------------

    def restore(self, request: RestoreRequest, chain: ChainReader) -> None:
        """Rebuild ``request.chain[-1]``'s snapshot beside the target, then install it whole or
        copy ``request.include``'s tables out of it. The temporary file never outlives the call
        unless the process dies, and until the final rename the target is untouched."""
        check_chain(request.chain)
        target = self.path
        if not request.include and request.conflict == "fail" and target.exists():
            raise ConflictError(
                f"{target} already exists and the conflict policy is 'fail'; use 'replace' to"
                " overwrite it, or restore to another path"
            )
        if not target.parent.is_dir():
            raise EngineError(f"cannot restore to {target}: directory {target.parent} does not"
                              " exist; create it first")
        tmp = target.with_name(f".{target.name}.safehold-restore-{secrets.token_hex(6)}")
        filemode.create_private(tmp)
        mode = filemode.restored_mode(request.chain[-1], target)
        try:
            rebuild(request.chain, chain, tmp, timeout=self.timeout)
            if request.include:
                self._restore_tables(tmp, request.include, request.conflict, mode)
            else:
                tmp.chmod(mode)
                replace_database(tmp, target, timeout=self.timeout)
        finally:
            tmp.unlink(missing_ok=True)

    def _restore_tables(self, snapshot: Path, include: Sequence[str],
                        conflict: Literal["fail", "replace"], mode: int) -> None:
        """Copy the chosen tables into the target, whose mode is first narrowed to ``mode``
        (or which is created with it); a failed copy leaves no new file and the old mode."""
        target = self.path
        created = not target.exists()
        if created:
            filemode.create_private(target)
        old_mode = target.stat().st_mode & 0o7777
        os.chmod(target, mode)
        try:
            restore_tables(snapshot, target, include, conflict, timeout=self.timeout)
        except BaseException:
            if created:
                target.unlink(missing_ok=True)
            else:
                os.chmod(target, old_mode)
            raise


def _parent(request: BackupRequest) -> Manifest | None:
    if request.type == "full":
        return None
    if not request.chain:
        raise EngineError(f"an {request.type} backup needs a parent chain; take a full backup"
                          " first")
    return request.chain[-1] if request.type == "incremental" else request.chain[0]


def _full_pages(snap: Snapshot, pagemap: PageMap) -> Iterator[bytes]:
    for _, page in snap.pages():
        pagemap.append(page_digest(page))
        yield page


def _changed_pages(snap: Snapshot, base: PageMap, pagemap: PageMap
                   ) -> Iterator[tuple[int, bytes]]:
    """Pages whose digest differs from the parent's (or that it did not have)."""
    for pgno, page in snap.pages():
        digest = page_digest(page)
        pagemap.append(digest)
        if base.get(pgno) != digest:
            yield pgno, page
