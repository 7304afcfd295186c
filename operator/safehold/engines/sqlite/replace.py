"""Put a rebuilt database file in place of the target, so that a crash never mixes the two.

SQLite keeps part of a database beside the main file: committed transactions not yet
checkpointed live in ``-wal``, and an interrupted transaction leaves a hot ``-journal``. Left
next to a *new* main file, either would be replayed into it and corrupt it. So, in order:

1. Settle the old database: opening it rolls back a hot journal, and a TRUNCATE checkpoint folds
   its WAL into the main file. From now on the old main file alone is the whole old database.
2. Remove ``-journal`` and ``-wal`` (now empty or redundant), then ``-shm`` (only an index over
   the WAL, rebuilt on demand).
3. ``os.replace`` the rebuilt file over the target and fsync the directory.

A crash before step 3 leaves the old database intact; after it, the new one. If the old file
cannot be opened at all (it is damaged, which may be why it is being restored), its side files
belong to a database nobody can read and are removed without settling.

The application must not have the database open: a restore replaces it underneath.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from safehold import fsutil
from safehold.fsutil import fsync_dir

log = logging.getLogger(__name__)

SIDE_FILES = ("-journal", "-wal", "-shm")  # removal order matters: see the module docstring


def replace_database(rebuilt: Path, target: Path, *, timeout: float) -> None:
    """Move ``rebuilt`` (in the target's directory) over ``target``, keeping its owner and
    never widening ``rebuilt``'s mode (see :mod:`.filemode`)."""
    if target.exists():
        _settle(target, timeout=timeout)
        _copy_ownership(target, rebuilt)
    for suffix in SIDE_FILES:
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    fsutil.replace(rebuilt, target)
    fsync_dir(target.parent)


def _settle(target: Path, *, timeout: float) -> None:
    try:
        conn = sqlite3.connect(target, timeout=timeout, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        log.warning("cannot open the database being replaced (%s): %s; discarding its"
                    " journal and WAL unread", target, exc)


def _copy_ownership(source: Path, dest: Path) -> None:
    st = source.stat()
    dest.chmod(st.st_mode & dest.stat().st_mode & 0o7777)
    if not hasattr(os, "chown"):  # Windows: files have no POSIX owner; ACLs stay as inherited
        return
    try:
        os.chown(dest, st.st_uid, st.st_gid)
    except PermissionError:
        log.warning("cannot give %s the owner of %s (uid %d, gid %d): not permitted",
                    dest, source, st.st_uid, st.st_gid)
