"""A whole restore's swap beside autovacuum (engines/postgres/restore.py): autovacuum's workers
are not waited for like the sessions of clients (right after a load they vacuum the tables just
filled, for seconds: a restore used to wait its whole second for them), and a role that may not
terminate them still replaces a database they are vacuuming (the rename ends them).

A server of its own, whose autovacuum visits each database every second, and a table whose
vacuum is throttled to a page per 100 ms, so a worker stays on it for many seconds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.engines.postgres import restore
from tests.infra import postgres
from tests.infra.postgres import PASSWORD, Postgres
from tests.infra.procs import serve, unavailable
from tests.integration import pg_data
from tests.integration.cli_helpers import run, run_json

ROLE = "av_owner"
SLOW_VACUUM = """
    CREATE TABLE slow (id int, pad text) WITH (
        autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1,
        autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0);
    INSERT INTO slow SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;
    DELETE FROM slow;"""


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    bindir = postgres.wheel_bindir()
    if bindir is None:
        unavailable("PostgreSQL (pg18)", "server binaries not installed")
    assert bindir is not None
    server = Postgres(bindir, extra_conf="autovacuum_naptime = 1\n")
    yield from serve(server, f"PostgreSQL {server.version} (autovacuum every second)")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_NO_ENCRYPTION": "1", "SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"),
            "SAFEHOLD_KEY_FILE": "", "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "",
            "PGPASSWORD": "", "SAFEHOLD_PASSWORD": PASSWORD}


def workers(pg: Postgres, db: str) -> int:
    return int(pg.psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type ="
                       f" 'autovacuum worker' AND datname = '{db}'"))


def vacuumed(pg: Postgres, db: str) -> None:
    """Give ``db`` a table autovacuum takes many seconds over; return once a worker is on it."""
    pg.psql(SLOW_VACUUM, db=db)
    deadline = time.monotonic() + 90
    while workers(pg, db) == 0:
        assert time.monotonic() < deadline, "autovacuum never came to the table"
        time.sleep(0.1)


@pytest.fixture
def db(pg: Postgres) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg.psql(f"DROP ROLE IF EXISTS {ROLE}; CREATE ROLE {ROLE} LOGIN CREATEDB"
            f" PASSWORD '{PASSWORD}'")
    pg.psql(f'CREATE DATABASE "{name}" OWNER {ROLE}')
    yield name
    pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg.psql(f"DROP OWNED BY {ROLE}; DROP ROLE {ROLE}")


def test_the_swap_does_not_wait_for_autovacuum(pg: Postgres, db: str) -> None:
    vacuumed(pg, db)
    admin = pg_data.connect(pg, "postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            assert restore.sessions_ended(cur, [db], timeout=60)
            assert workers(pg, db) == 1  # returned at once, beside the worker
            restore.end_autovacuum(cur, [db])  # a superuser may end it
            assert workers(pg, db) == 0
    finally:
        admin.close()


def test_a_role_that_may_not_end_autovacuum_still_replaces_the_database(
        pg: Postgres, db: str, tmp_path: Path, env: dict[str, str]) -> None:
    """Terminating every session on the replaced database used to include autovacuum's, which
    only a superuser may: the restore failed with 'permission denied to terminate process'."""
    source = f"{db}_src"
    pg.psql(f'CREATE DATABASE "{source}" OWNER {ROLE}')
    try:
        pg.psql(f"SET ROLE {ROLE}; CREATE TABLE kept (id int PRIMARY KEY, v text);"
                " INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, 1000) g",
                db=source)
        repo = tmp_path / "repo"
        url = f"postgresql://{ROLE}@{pg.host}:{pg.port}"
        run_json("backup", "-t", f"{url}/{source}", "-r", repo.as_uri(), env=env)
        vacuumed(pg, db)
        run("restore", "-t", f"{url}/{db}", "-r", repo.as_uri(), "-b", "latest", "--from",
            source, "--conflict", "replace", "--yes", env=env)
        assert pg.psql("SELECT count(*), sum(id) FROM kept", db=db) == "1000|500500"
        assert pg.psql("SELECT to_regclass('slow') IS NULL", db=db) == "t"
    finally:
        pg.psql(f'DROP DATABASE IF EXISTS "{source}" WITH (FORCE)')
