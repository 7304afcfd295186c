"""SQLite engine: ``sqlite:///absolute/path.db`` (see :mod:`.engine`)."""

from safehold.engines.base import register
from safehold.engines.sqlite.engine import SQLiteEngine

register("sqlite", SQLiteEngine.from_url)

__all__ = ["SQLiteEngine"]
