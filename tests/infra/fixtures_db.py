"""pytest fixtures for the relational servers: PostgreSQL 15 and 18, MariaDB 10.11."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra import mariadb, postgres
from tests.infra.procs import serve, unavailable

PG_KINDS = {
    "pg15": lambda: postgres.debian_bindir(15),
    "pg18": postgres.wheel_bindir,
}


def _start_pg(kind: str) -> Iterator[postgres.Postgres]:
    bindir = PG_KINDS[kind]()
    if bindir is None:
        unavailable(f"PostgreSQL ({kind})", "server binaries not installed")
    assert bindir is not None
    server = postgres.Postgres(bindir)
    yield from serve(server, f"PostgreSQL {server.version}")


@pytest.fixture(scope="session")
def pg15() -> Iterator[postgres.Postgres]:
    yield from _start_pg("pg15")


@pytest.fixture(scope="session")
def pg18() -> Iterator[postgres.Postgres]:
    yield from _start_pg("pg18")


@pytest.fixture(scope="session", params=sorted(PG_KINDS))
def pg_server(request: pytest.FixtureRequest) -> postgres.Postgres:
    """Each supported PostgreSQL major in turn (tests using it run once per server)."""
    server: postgres.Postgres = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def pg_database(pg_server: postgres.Postgres) -> Iterator[str]:
    """A fresh, uniquely named database on ``pg_server``; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_server.psql(f'CREATE DATABASE "{name}"')
    yield name
    pg_server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[mariadb.MariaDB]:
    if mariadb.server_binary() is None:
        unavailable("MariaDB", "mariadbd not installed")
    yield from serve(mariadb.MariaDB(), "MariaDB")


@pytest.fixture
def mariadb_database(mariadb_server: mariadb.MariaDB) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    mariadb_server.sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    mariadb_server.sql(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """Path for a new SQLite database file (SQLite is embedded: nothing to start)."""
    return tmp_path / "app.db"
