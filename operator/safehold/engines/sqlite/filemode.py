"""Who may read a restored database file: never more than could read the one backed up.

A backup records its source file's permission bits (``engine_meta["file_mode"]``, e.g.
``"0640"``; the manifest is authenticated, so they cannot be widened unnoticed). A restore
writes its temporary file with mode 0600 from the first byte, and gives the result:

* a new file: the source's bits (0600 when the backup predates this record);
* a file it replaces: the bits both the source and the replaced file grant, so a restore never
  opens a database to more users than either did.

Only read/write bits are kept (no execute, setuid or sticky bits). On Windows a mode is only
the read-only flag; files there are as private as the directory's ACLs make them.
"""

from __future__ import annotations

import os
from pathlib import Path

from safehold import fsutil
from safehold.api.manifest import Manifest

PRIVATE = 0o600
RW_BITS = 0o666


def source_mode(path: Path) -> str:
    """``path``'s read/write bits, as recorded in a backup's ``engine_meta``."""
    return f"{path.stat().st_mode & RW_BITS:04o}"


def recorded_mode(backup: Manifest) -> int:
    """The source file's bits recorded by ``backup`` (0600 if it recorded none)."""
    value = backup.engine_meta.get("file_mode")
    try:
        return int(str(value), 8) & RW_BITS if value is not None else PRIVATE
    except ValueError:
        return PRIVATE


def restored_mode(backup: Manifest, target: Path) -> int:
    """The bits a file restored from ``backup`` gets at ``target``."""
    mode = recorded_mode(backup)
    try:
        return mode & target.stat().st_mode
    except FileNotFoundError:
        return mode


def create_private(path: Path) -> None:
    """Create the empty file ``path`` (which must not exist) readable by its owner only."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE)
    try:
        fsutil.set_private(fd, path, PRIVATE)  # O_CREAT's mode is narrowed by the umask
    finally:
        os.close(fd)
