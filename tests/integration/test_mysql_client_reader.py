"""Rows read by the ``mariadb`` client (engines/mysql/clientread.py) against the real MariaDB
10.11: the same data as PyMySQL reads, names no client parser may see, and the ways a client
session fails (a cut output, a missing client, an SQL error, a refused login)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safehold.api.errors import Exit
from safehold.engines.base import AuthenticationFailed, ConnectionOptions, DatabaseMissing
from safehold.engines.mysql.clientread import ClientSession, find_client
from safehold.engines.mysql.conn import parse_target
from tests.infra.mariadb import MariaDB
from tests.integration import mysql_data as data
from tests.integration.cli_helpers import run, run_json

# A table and a column whose names hold what an SQL text parser trips on.
HOSTILE_TABLE = "we;ird 'na\"me\\ `x`\nline"
HOSTILE_COLUMN = "co;l\n'`"
TEXT_KEYED = "text_keyed"  # many_rows again, its rows read by the client (over 200 kB)


def q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, mariadb_server: MariaDB) -> dict[str, str]:
    return data.cli_env(tmp_path_factory.mktemp("cfg"), mariadb_server)


@pytest.fixture(scope="module")
def source(mariadb_server: MariaDB) -> Iterator[str]:
    with data.database(mariadb_server, "rd", many_rows=8000) as db:
        conn = data.connect(mariadb_server, db)
        with conn.cursor() as cur:
            # keyed by text: read row by row, by the client (an integer key is read in chunks
            # on a PyMySQL connection whatever the reader: test_mysql_chunked_read.py)
            cur.execute(f"CREATE TABLE {q(HOSTILE_TABLE)} (id VARCHAR(9) PRIMARY KEY,"
                        f" {q(HOSTILE_COLUMN)} VARCHAR(50))")
            cur.executemany(f"INSERT INTO {q(HOSTILE_TABLE)} VALUES (%s, %s)",
                            [(str(i), f"v;{i}'\n\\") for i in range(50)])
            cur.execute(f"CREATE TABLE {TEXT_KEYED} (code VARCHAR(60) PRIMARY KEY,"
                        " words VARCHAR(200))")
            cur.execute(f"INSERT INTO {TEXT_KEYED} SELECT CONCAT(code, '-', id), words"
                        " FROM many_rows")
        conn.close()
        yield db


def url(server: MariaDB, db: str, query: str = "") -> str:
    return f"mariadb://{server.user}@{server.host}:{server.port}/{db}{query}"


def manifest(repo: Path, target: str, backup_id: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((repo / target / backup_id / "manifest.json").read_text())
    return found


def test_client_and_driver_restore_the_same_data(mariadb_server: MariaDB, source: str,
                                                 env: dict[str, str], tmp_path: Path) -> None:
    assert find_client(), "the mariadb client is part of make infra"
    tables = [*data.STATIC, *data.LIVE, HOSTILE_TABLE, TEXT_KEYED]
    expected = {t: mariadb_server.sql(f"CHECKSUM TABLE {q(source)}.{q(t)}").split("\t")[-1]
                for t in tables}
    for reader in ("client", "driver"):
        repo = tmp_path / reader
        result = run_json("backup", "-t", url(mariadb_server, source, f"?reader={reader}"),
                          "-r", repo.as_uri(), "--jobs", "2", env=env)
        found = manifest(repo, source, result["backup_id"])
        assert found["engine_meta"]["reader"] == reader
        assert found["engine_meta"]["snapshot_connections"] == 2
        assert ("mariadb" in found["tools"]) == (reader == "client")
        copy = f"cp_{uuid.uuid4().hex[:8]}"
        run("restore", "-r", repo.as_uri(), "-b", result["backup_id"], "--from", source,
            "-t", url(mariadb_server, copy), "--yes", env=env)
        try:
            for table in tables:
                got = mariadb_server.sql(f"CHECKSUM TABLE {q(copy)}.{q(table)}").split("\t")[-1]
                assert got == expected[table], (reader, table)
        finally:
            mariadb_server.sql(f"DROP DATABASE {copy}")


def test_auto_reads_with_the_client_on_mariadb(mariadb_server: MariaDB, source: str,
                                               env: dict[str, str], tmp_path: Path) -> None:
    result = run_json("backup", "-t", url(mariadb_server, source), "-r", tmp_path.as_uri(),
                      "--jobs", "1", env=env)
    meta = manifest(tmp_path, source, result["backup_id"])["engine_meta"]
    assert meta["reader"] == "client" and meta["snapshot_connections"] == 1
    assert result["end_position"]["binlog_file"]  # the session's own snapshot position


def test_a_cut_client_output_fails_the_backup(mariadb_server: MariaDB, source: str,
                                              env: dict[str, str], tmp_path: Path) -> None:
    """A client that dies mid-table (its output cut after 200 kB, then killed) fails the run
    at once (no table waits for a reader that will not come back): no backup completes, and
    the error says what stopped."""
    real = shutil.which("mariadb")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "mariadb"
    # then the kill of its process group (each client has its own): a client waiting for its
    # next statement while its last output is cut would never notice the cut
    wrapper.write_text(f'#!/bin/sh\n"{real}" "$@" | {{ stdbuf -o0 head -c 200000; kill -9 0; }}\n')
    wrapper.chmod(0o755)
    repo = tmp_path / "repo"
    result = run("backup", "-t", url(mariadb_server, source, "?reader=client"),
                 "-r", repo.as_uri(), env={**env, "PATH": f"{bin_dir}:/usr/bin:/bin"}, ok=False)
    assert result.exit_code == Exit.DATABASE, result.output
    assert "MariaDB client stopped before the end of a statement" in result.output
    listed = run_json("list", "-r", repo.as_uri(), env=env)
    assert [b["type"] for b in listed["backups"]] == ["incomplete"], listed  # prune's to remove


def test_reader_client_without_a_client_names_the_fix(mariadb_server: MariaDB, source: str,
                                                      env: dict[str, str],
                                                      tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("backup", "-t", url(mariadb_server, source, "?reader=client"),
                 "-r", tmp_path.as_uri(), env={**env, "PATH": str(empty)}, ok=False)
    assert result.exit_code != 0
    assert "no mariadb client is on PATH" in result.output
    assert "mariadb-client" in result.output and "reader=" in result.output


def test_session_errors_are_classified(mariadb_server: MariaDB, source: str) -> None:
    client = find_client()
    assert client
    target = parse_target(url(mariadb_server, source),
                          ConnectionOptions(password=mariadb_server.password))
    session = ClientSession(target, client)
    assert session.query(b"SELECT 6 * 7") == [[b"42"]]
    with pytest.raises(DatabaseMissing, match="no_such_table"):
        session.query(b"SELECT * FROM no_such_table")
    session.abort()
    secret = "wrong-pw-5513"
    wrong = parse_target(url(mariadb_server, source), ConnectionOptions(password=secret))
    with pytest.raises(AuthenticationFailed) as refused:
        ClientSession(wrong, client)
    assert secret not in str(refused.value)


def test_reader_parameter_is_validated() -> None:
    with pytest.raises(ValueError, match=r"reader='fast' is not one of auto, client, driver"):
        parse_target("mariadb://u@h/db?reader=fast", ConnectionOptions())
    assert parse_target("mariadb://u@h/db", ConnectionOptions()).reader == "auto"
