"""Which server this is (MariaDB or MySQL, and its version), and whether Safehold supports it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from safehold.engines.base import VersionUnsupported
from safehold.engines.mysql.conn import run

# Oldest supported: MariaDB 10.5 (binlog_snapshot_*, BINLOG_GTID_POS, CAST AS DOUBLE) and
# MySQL 8.0 (atomic DDL, so the restore's multi-table RENAME is all-or-nothing). Only
# MariaDB 10.11 is tested on this project's machines.
MINIMUM = {"mariadb": (10, 5), "mysql": (8, 0)}


@dataclass(frozen=True)
class ServerInfo:
    version: str  # as the server reports it, e.g. 10.11.19-MariaDB-0+deb12u1-log
    flavor: str  # mariadb | mysql
    major: int
    minor: int

    def at_least(self, major: int, minor: int) -> bool:
        return (self.major, self.minor) >= (major, minor)

    def require_supported(self) -> None:
        low = MINIMUM[self.flavor]
        if not self.at_least(*low):
            name = "MariaDB" if self.flavor == "mariadb" else "MySQL"
            raise VersionUnsupported(
                f"{name} {self.version} is too old: Safehold supports {name}"
                f" {low[0]}.{low[1]} and newer")


def server_info(conn: Any) -> ServerInfo:
    version = str(run(conn, "SELECT VERSION()")[0][0])
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        raise VersionUnsupported(f"cannot parse the server version {version!r}")
    flavor = "mariadb" if "mariadb" in version.lower() else "mysql"
    return ServerInfo(version, flavor, int(match[1]), int(match[2]))
