"""SQLite engine: ``sqlite:///absolute/path.db`` (see :mod:`.engine`)."""

from pathlib import Path

from safehold.engines.base import register
from safehold.engines.sqlite.engine import SQLiteEngine

register(
    "sqlite",
    lambda url, options: SQLiteEngine.from_url(
        url, scratch_dir=Path(options.scratch_dir) if options.scratch_dir else None
    ),
)

__all__ = ["SQLiteEngine"]
