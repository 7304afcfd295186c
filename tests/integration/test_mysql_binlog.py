"""MariaDB binlog incrementals, differentials and point-in-time restore against a real
MariaDB 10.11 of this module's own (its binary log is purged and rotated here)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safehold.cli.errors import Exit
from tests.infra import mariadb
from tests.infra.procs import serve, unavailable
from tests.integration.cli_helpers import run, run_json


@pytest.fixture(scope="module")
def server() -> Iterator[mariadb.MariaDB]:
    if mariadb.server_binary() is None:
        unavailable("MariaDB", "mariadbd not installed")
    yield from serve(mariadb.MariaDB(), "MariaDB")


@pytest.fixture
def env(tmp_path: Path, server: mariadb.MariaDB) -> dict[str, str]:
    cfg = tmp_path / "safehold.yaml"
    cfg.write_text("{}\n")
    key = tmp_path / "key"
    key.write_text("a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=\n")
    return {"SAFEHOLD_CONFIG": str(cfg), "SAFEHOLD_KEY_FILE": str(key), "SAFEHOLD_KEY": "",
            "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_PASSWORD": server.password, "MYSQL_PWD": ""}


@pytest.fixture
def db(server: mariadb.MariaDB) -> Iterator[str]:
    name = f"s_{uuid.uuid4().hex[:8]}"
    server.sql(f"CREATE DATABASE {name}; CREATE TABLE {name}.t (id INT PRIMARY KEY,"
               " batch VARCHAR(20), v INT)")
    yield name
    server.sql(f"DROP DATABASE IF EXISTS {name}")


def url(server: mariadb.MariaDB, db: str) -> str:
    return f"mariadb://{server.user}@{server.host}:{server.port}/{db}"


def rows(server: mariadb.MariaDB, db: str) -> list[str]:
    out = server.sql(f"SELECT CONCAT(id, ':', batch, ':', v) FROM {db}.t ORDER BY id")
    return out.splitlines() if out else []


def write(server: mariadb.MariaDB, db: str, batch: str, ids: range) -> None:
    values = ", ".join(f"({i}, '{batch}', {i})" for i in ids)
    server.sql(f"INSERT INTO {db}.t (id, batch, v) VALUES {values}")


def backup(server: mariadb.MariaDB, db: str, repo: str, env: dict[str, str], kind: str
           ) -> dict[str, Any]:
    out: dict[str, Any] = run_json("backup", "-t", url(server, db), "-r", repo, "--type", kind,
                                   env=env)
    return out


def restore(server: mariadb.MariaDB, repo: str, db: str, into: str, env: dict[str, str],
            *args: str, ok: bool = True) -> Any:
    return run("restore", "-r", repo, "--from", db, "-t", url(server, into), "-y", *args,
               env=env, ok=ok)


def test_incremental_chain_restores_and_scales_with_changes(
        server: mariadb.MariaDB, db: str, tmp_path: Path, env: dict[str, str]) -> None:
    repo = (tmp_path / "repo").as_uri()
    write(server, db, "full", range(1, 2001))
    full = backup(server, db, repo, env, "full")
    write(server, db, "inc1", range(3001, 3006))
    server.sql(f"UPDATE {db}.t SET v = -1 WHERE id = 1")
    server.sql("FLUSH BINARY LOGS")  # the next incremental spans two files
    server.sql("CREATE DATABASE IF NOT EXISTS other; CREATE TABLE IF NOT EXISTS other.x (a INT);"
               " INSERT INTO other.x VALUES (1)")
    inc1 = backup(server, db, repo, env, "incremental")
    write(server, db, "inc2", range(4001, 4004))
    server.sql(f"DELETE FROM {db}.t WHERE id = 2")
    inc2 = backup(server, db, repo, env, "incremental")
    write(server, db, "diff", range(5001, 5003))
    diff = backup(server, db, repo, env, "differential")
    expected = rows(server, db)
    assert inc1["type"] == "incremental" and inc1["parent_id"] == full["backup_id"]
    assert inc2["parent_id"] == inc1["backup_id"] and diff["parent_id"] == full["backup_id"]
    assert inc1["chain_id"] == full["backup_id"] == diff["chain_id"]
    # the incrementals hold the binlog since their parent: a few KiB, not the table
    assert inc2["stored_bytes"] * 5 < full["stored_bytes"], (inc2, full)
    for bid, cut in ((diff["backup_id"], None), (inc2["backup_id"], "inc2"),
                     (inc1["backup_id"], "inc1")):
        into = f"r_{uuid.uuid4().hex[:8]}"
        restore(server, repo, db, into, env, "-b", bid)
        got = rows(server, into)
        if cut is None:
            assert got == expected
        elif cut == "inc2":
            assert "5001:diff:5001" not in got and "4001:inc2:4001" in got
            assert "2:full:2" not in got
        else:
            assert "3001:inc1:3001" in got and "1:full:-1" in got and "4001:inc2:4001" not in got
            assert "2:full:2" in got
        assert server.sql(f"SELECT COUNT(*) FROM {into}.t") == str(len(got))
        server.sql(f"DROP DATABASE {into}")
    assert server.sql("SELECT COUNT(*) FROM other.x") == "1"  # never replayed twice elsewhere


def now(server: mariadb.MariaDB) -> str:
    return server.sql("SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%fZ')")


def mark(server: mariadb.MariaDB, db: str, marks: list[tuple[str, list[str]]]) -> None:
    """A target time with >= 1 s to the commits either side (binlog times are whole seconds)."""
    time.sleep(1.2)
    marks.append((now(server), rows(server, db)))
    time.sleep(1.2)


def test_point_in_time_restore_to_five_times(
        server: mariadb.MariaDB, db: str, tmp_path: Path, env: dict[str, str]) -> None:
    repo = (tmp_path / "repo").as_uri()
    sql = server.sql
    marks: list[tuple[str, list[str]]] = []
    write(server, db, "w0", range(1, 101))
    backup(server, db, repo, env, "full")
    mark(server, db, marks)  # 0: the full alone
    write(server, db, "w1", range(101, 111))
    gtid_w1 = sql("SELECT @@gtid_binlog_pos")
    file_w1, pos_w1 = sql("SHOW MASTER STATUS").split()[:2]
    mark(server, db, marks)  # 1: inside the first incremental
    sql("UPDATE t SET v = v + 1000 WHERE id <= 5; DELETE FROM t WHERE id = 50", db)
    inc1 = backup(server, db, repo, env, "incremental")
    sql("ALTER TABLE t ADD COLUMN note VARCHAR(10) DEFAULT 'x'", db)  # DDL is replayed too
    write(server, db, "w2", range(201, 206))
    mark(server, db, marks)  # 2: inside the second incremental
    sql("FLUSH BINARY LOGS")
    write(server, db, "w3", range(301, 306))
    inc2 = backup(server, db, repo, env, "incremental")
    mark(server, db, marks)  # 3: between the second incremental and the differential
    sql("DELETE FROM t WHERE batch = 'w1'", db)
    mark(server, db, marks)  # 4: inside the differential, after a delete
    write(server, db, "w4", range(401, 406))
    diff = backup(server, db, repo, env, "differential")
    assert inc2["parent_id"] == inc1["backup_id"] and diff["parent_id"] == inc1["chain_id"]

    plan = run_json("restore", "-r", repo, "--from", db, "-t", url(server, "nowhere"),
                    "--to-time", marks[3][0], "--dry-run", env=env)
    assert [c["type"] for c in plan["chain"]] == ["full", "incremental", "incremental"]
    assert plan["logs"] and all(p["source"].startswith("backup ") for p in plan["logs"])
    for i, (when, expected) in enumerate(marks):
        into = f"p{i}_{uuid.uuid4().hex[:6]}"
        restore(server, repo, db, into, env, "--to-time", when)
        assert rows(server, into) == expected, f"restore to mark {i} ({when})"
        sql(f"DROP DATABASE {into}")
    for flag, value in (("--to-gtid", gtid_w1), ("--to-position", f"{file_w1}:{pos_w1}")):
        into = f"g_{uuid.uuid4().hex[:6]}"
        restore(server, repo, db, into, env, flag, value)
        assert rows(server, into) == marks[1][1], f"restore {flag} {value}"
        sql(f"DROP DATABASE {into}")
    # a time outside the window names the window
    early = run("restore", "-r", repo, "--from", db, "-t", url(server, "nowhere"), "-y",
                "--to-time", "2020-01-01T00:00:00Z", env=env, ok=False)
    assert early.exit_code == 2 and "recoverable window" in early.output
    late = run("restore", "-r", repo, "--from", db, "-t", url(server, "nowhere"), "-y",
               "--to-time", "2099-01-01T00:00:00Z", env=env, ok=False)
    assert late.exit_code == 2 and "recoverable window" in late.output, late.output
    listed = run("list", "-r", repo, "-t", db, env=env).output
    assert f"{db}: recoverable window (point-in-time) " in listed, listed


def segments(repo_dir: Path, target: str) -> list[str]:
    base = repo_dir / target / "_logs" / "binlog"
    return sorted(p.parent.name for p in base.glob("*/*/segment.json")) if base.exists() else []


def wait_for(what: str, check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def streamer(repo: str, server: mariadb.MariaDB, db: str, env: dict[str, str], spool: Path
             ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "safehold.cli", "binlog", "stream", "-t", url(server, db),
         "-r", repo, "--name", db, "--poll", "0.1", "--spool", str(spool)],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_streamer_survives_kills_and_a_lost_spool_without_gaps(
        server: mariadb.MariaDB, db: str, tmp_path: Path, env: dict[str, str]) -> None:
    repo_dir = tmp_path / "repo"
    repo, spool = repo_dir.as_uri(), tmp_path / "spool"
    write(server, db, "w0", range(1, 51))
    backup(server, db, repo, env, "full")
    first = server.sql("SHOW MASTER STATUS").split()[0]
    proc = streamer(repo, server, db, env, spool)
    try:
        write(server, db, "a", range(101, 111))
        server.sql("FLUSH BINARY LOGS")
        wait_for("the first file archived", lambda: first in segments(repo_dir, db))
        write(server, db, "b", range(201, 211))  # mid-file: in the spool, not yet archived
        current = server.sql("SHOW MASTER STATUS").split()[0]
        wait_for("the spool to hold the current file",
                 lambda: (spool / current).exists() and (spool / current).stat().st_size > 300)
    finally:
        proc.kill()  # SIGKILL mid-file
        proc.wait()
    assert current not in segments(repo_dir, db)
    write(server, db, "c", range(301, 311))  # written while no streamer runs
    server.sql("FLUSH BINARY LOGS")
    proc = streamer(repo, server, db, env, spool)
    try:
        wait_for("the killed run's file archived", lambda: current in segments(repo_dir, db))
    finally:
        proc.kill()
        proc.wait()
    shutil.rmtree(spool)  # the spool is lost as well
    mark_rows: list[tuple[str, list[str]]] = []
    mark(server, db, mark_rows)
    write(server, db, "d", range(401, 411))
    server.sql("FLUSH BINARY LOGS")
    last = server.sql("SHOW MASTER STATUS").split()[0]
    proc = streamer(repo, server, db, env, spool)
    try:
        server.sql("FLUSH BINARY LOGS")
        wait_for("every closed file archived",
                 lambda: binlog_seq(last) - 1 <= max(map(binlog_seq, segments(repo_dir, db))))
        mark(server, db, mark_rows)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        proc.kill()
    assert proc.returncode == int(Exit.TERMINATED), out
    names = segments(repo_dir, db)
    seqs = [binlog_seq(n) for n in names]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap in the archive: {names}"
    # the archive alone carries a restore past the last backup
    into = f"a_{uuid.uuid4().hex[:6]}"
    restore(server, repo, db, into, env, "--to-time", mark_rows[0][0])
    assert rows(server, into) == mark_rows[0][1]
    server.sql(f"DROP DATABASE {into}")


def binlog_seq(name: str) -> int:
    return int(name.rsplit(".", 1)[1])


def test_unsafe_logs_broken_chains_and_purged_binlogs_are_refused_before_any_change(
        server: mariadb.MariaDB, db: str, tmp_path: Path, env: dict[str, str]) -> None:
    repo_dir = tmp_path / "repo"
    repo = repo_dir.as_uri()
    write(server, db, "w0", range(1, 11))
    full = backup(server, db, repo, env, "full")
    other = f"o_{uuid.uuid4().hex[:6]}"
    server.sql(f"CREATE DATABASE {other}")
    server.sql(f"CREATE TABLE {other}.y (a INT)", db)  # run in db, touching another database
    inc1 = backup(server, db, repo, env, "incremental")
    into = f"u_{uuid.uuid4().hex[:6]}"
    refused = restore(server, repo, db, into, env, "-b", inc1["backup_id"], ok=False)
    assert refused.exit_code == 6 and f"touches database {other}" in refused.output, \
        refused.output
    assert "scratch server" in refused.output
    assert not server.sql(f"SHOW DATABASES LIKE '{into}'")  # nothing was created
    server.sql(f"DROP DATABASE {other}")
    # a missing link is named before anything is restored
    write(server, db, "w1", range(11, 21))
    inc2 = backup(server, db, repo, env, "incremental")
    shutil.rmtree(repo_dir / db / inc1["backup_id"])
    broken = restore(server, repo, db, into, env, "-b", inc2["backup_id"], ok=False)
    assert broken.exit_code == 4 and inc1["backup_id"] in broken.output, broken.output
    assert not server.sql(f"SHOW DATABASES LIKE '{into}'")
    # the server purged the binlog the chain continues from: take a full
    gone = full["end_position"]["binlog_file"]

    def purge() -> bool:  # the server keeps a file until its binlog checkpoint has passed it
        server.sql("FLUSH BINARY LOGS")
        server.sql(f"PURGE BINARY LOGS TO '{server.sql('SHOW MASTER STATUS').split()[0]}'")
        return gone not in server.sql("SHOW BINARY LOGS")

    wait_for(f"{gone} purged", purge)
    purged = run("backup", "-t", url(server, db), "-r", repo, "--type", "differential",
                 env=env, ok=False)
    assert purged.exit_code == 6 and "no longer has binlog" in purged.output, purged.output
    assert "take a full backup" in purged.output
    assert full["end_position"]["server_id"] == "1"


def test_binlog_privileges_are_noted_by_check_and_required_before_a_replay(
        server: mariadb.MariaDB, db: str, tmp_path: Path, env: dict[str, str]) -> None:
    repo = (tmp_path / "repo").as_uri()
    write(server, db, "w0", range(1, 11))
    backup(server, db, repo, env, "full")
    write(server, db, "w1", range(11, 21))
    inc = backup(server, db, repo, env, "incremental")
    user, into = f"u{uuid.uuid4().hex[:6]}", f"q_{uuid.uuid4().hex[:6]}"
    server.sql(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw';"
               f" GRANT ALL ON `{db}`.* TO '{user}'@'127.0.0.1';"
               f" GRANT ALL ON `{into}`.* TO '{user}'@'127.0.0.1';"
               f" GRANT ALL ON `{into}_safehold_stage`.* TO '{user}'@'127.0.0.1'")
    scratch = f"{into}_safehold_pitr"
    limited = {**env, "SAFEHOLD_PASSWORD": "pw"}
    try:
        as_user = f"mariadb://{user}@{server.host}:{server.port}"
        notes = run_json("check", "-t", f"{as_user}/{db}", env=limited)["notes"]
        assert any("REPLICATION SLAVE, BINLOG MONITOR not granted" in n for n in notes), notes
        notes = run_json("check", "-t", f"{as_user}/{into}", "--purpose", "restore",
                         env=limited)["notes"]
        assert any("BINLOG REPLAY, BINLOG ADMIN not granted" in n for n in notes), notes
        assert any(f"`{scratch}`" in n and "scratch database" in n for n in notes), notes
        refused = run("restore", "-r", repo, "--from", db, "-t", f"{as_user}/{into}", "-y",
                      "-b", inc["backup_id"], env=limited, ok=False)
        assert refused.exit_code == 6 and "BINLOG REPLAY" in refused.output, refused.output
        assert not server.sql(f"SHOW DATABASES LIKE '{into}'")  # refused before any change
        server.sql(f"GRANT BINLOG REPLAY, BINLOG ADMIN ON *.* TO '{user}'@'127.0.0.1'")
        refused = run("restore", "-r", repo, "--from", db, "-t", f"{as_user}/{into}", "-y",
                      "-b", inc["backup_id"], env=limited, ok=False)
        assert refused.exit_code == 6 and "scratch database" in refused.output, refused.output
        assert not server.sql(f"SHOW DATABASES LIKE '{into}'")
        server.sql(f"GRANT ALL ON `{into}\\_safehold\\_%`.* TO '{user}'@'127.0.0.1'")
        run("restore", "-r", repo, "--from", db, "-t", f"{as_user}/{into}", "-y",
            "-b", inc["backup_id"], env=limited)
        assert rows(server, into) == rows(server, db)
    finally:
        server.sql(f"DROP USER '{user}'@'127.0.0.1'; DROP DATABASE IF EXISTS {into}")


def test_a_replay_that_fails_leaves_the_destination_as_it_was(
        server: mariadb.MariaDB, db: str, tmp_path: Path, env: dict[str, str]) -> None:
    repo = (tmp_path / "repo").as_uri()
    write(server, db, "w0", range(1, 11))
    backup(server, db, repo, env, "full")
    write(server, db, "w1", range(11, 21))
    inc = backup(server, db, repo, env, "incremental")
    into = f"k_{uuid.uuid4().hex[:6]}"
    server.sql(f"CREATE DATABASE {into}; CREATE TABLE {into}.t (id INT PRIMARY KEY,"
               f" batch VARCHAR(20), v INT); INSERT INTO {into}.t VALUES (7, 'mine', 7)")
    fake = tmp_path / "bin"
    fake.mkdir()  # fault injection: a `mariadb` client that fails midway through the log
    (fake / "mariadb").write_text("#!/bin/sh\nhead -c 100 >/dev/null\n"
                                  "echo 'ERROR 1062 (23000) at line 40: injected' >&2\nexit 1\n")
    (fake / "mariadb").chmod(0o755)
    failed = restore(server, repo, db, into, {**env, "PATH": f"{fake}:{os.environ['PATH']}"},
                     "-b", inc["backup_id"], ok=False)
    assert failed.exit_code == 6 and "injected" in failed.output, failed.output
    assert "before the destination was changed" in failed.output
    assert rows(server, into) == ["7:mine:7"]
    assert not server.sql(f"SHOW DATABASES LIKE '{into}\\_safehold%'")  # scratch dropped
    restore(server, repo, db, into, env, "-b", inc["backup_id"])
    assert rows(server, into) == rows(server, db)
    server.sql(f"DROP DATABASE {into}")


def test_statement_format_logs_replay_under_another_name(
        server: mariadb.MariaDB, db: str, tmp_path: Path, env: dict[str, str]) -> None:
    repo = (tmp_path / "repo").as_uri()
    write(server, db, "w0", range(1, 11))
    backup(server, db, repo, env, "full")
    server.sql("SET SESSION binlog_format = 'STATEMENT'; INSERT INTO t VALUES (50, 's', 50);"
               " UPDATE t SET v = v * 10 WHERE id <= 3; DELETE FROM t WHERE id = 4;"
               " CREATE TABLE u (a INT); INSERT INTO u VALUES (1), (2)", db)
    inc = backup(server, db, repo, env, "incremental")
    into = f"m_{uuid.uuid4().hex[:6]}"
    restore(server, repo, db, into, env, "-b", inc["backup_id"])
    assert rows(server, into) == rows(server, db)
    assert server.sql(f"SELECT SUM(a) FROM {into}.u") == "3"
    server.sql(f"DROP DATABASE {into}")
