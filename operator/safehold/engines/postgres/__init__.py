"""PostgreSQL engine: ``postgresql://user@host:5432/db`` (also ``postgres://``); see
:mod:`.engine`."""

from safehold.engines.base import register
from safehold.engines.postgres.engine import PostgresEngine

for _scheme in ("postgresql", "postgres"):
    register(_scheme, PostgresEngine.from_url)

__all__ = ["PostgresEngine"]
