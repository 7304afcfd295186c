"""A consistent copy of a live SQLite database, taken with the online backup API.

The copy is made in steps (so a large database never holds SQLite's mutex for long) while the
source connection keeps one read transaction open from the first step to the last. That pins a
single database state: without it SQLite restarts a stepped backup whenever another connection
commits, and a busy writer can starve the backup forever. In WAL mode writers keep committing
meanwhile; in rollback-journal mode they wait (up to their busy timeout) until the copy is done.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from safehold.engines.base import EngineError
from safehold.engines.sqlite.pages import read_pages


@dataclass(frozen=True)
class Snapshot:
    path: Path
    page_size: int
    page_count: int
    schema_version: int

    def pages(self) -> Iterator[tuple[int, bytes]]:
        """``(page number, page)`` for every page; fails if the file is not the snapshot."""
        pgno = 0
        for pgno, page in read_pages(self.path, self.page_size):
            yield pgno, page
        if pgno != self.page_count:
            raise EngineError(
                f"snapshot {self.path} has {pgno} pages, expected {self.page_count}; is"
                " something else writing to the scratch directory?"
            )


def connect_readonly(path: Path, *, timeout: float, immutable: bool = False
                     ) -> sqlite3.Connection:
    """A read-only connection; ``immutable`` also skips locking and never creates -wal/-shm."""
    flags = "mode=ro&immutable=1" if immutable else "mode=ro"
    return sqlite3.connect(f"file:{quote(str(path))}?{flags}", uri=True, timeout=timeout,
                           isolation_level=None)


@contextlib.contextmanager
def take_snapshot(source: Path, scratch_dir: Path | None, *, step_pages: int,
                  timeout: float) -> Iterator[Snapshot]:
    """Copy ``source`` into a temporary file in ``scratch_dir``; the file is removed on exit."""
    fd, name = tempfile.mkstemp(prefix=".safehold-snapshot-", suffix=".db", dir=scratch_dir)
    os.close(fd)
    path = Path(name)
    try:
        src = connect_readonly(source, timeout=timeout)
        dst = sqlite3.connect(path, isolation_level=None)
        try:
            dst.execute("PRAGMA synchronous=OFF")  # scratch copy: durability is irrelevant
            src.execute("BEGIN")
            # Reading starts the read transaction; the copy below sees exactly this state.
            page_size, = src.execute("PRAGMA page_size").fetchone()
            page_count, = src.execute("PRAGMA page_count").fetchone()
            schema_version, = src.execute("PRAGMA schema_version").fetchone()
            src.backup(dst, pages=step_pages)
            src.execute("COMMIT")
        except sqlite3.Error as exc:
            raise EngineError(f"cannot snapshot SQLite database {source}: {exc}") from exc
        finally:
            dst.close()
            src.close()
        yield Snapshot(path, page_size, page_count, schema_version)
    finally:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
