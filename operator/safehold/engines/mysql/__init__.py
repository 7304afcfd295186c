"""MySQL / MariaDB engine: ``mysql://user@host:port/db`` or ``mariadb://...``."""

from safehold.engines.base import register
from safehold.engines.mysql.engine import MySQLEngine

for _scheme in ("mysql", "mariadb"):
    register(_scheme, MySQLEngine.from_url)

__all__ = ["MySQLEngine"]
