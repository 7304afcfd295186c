"""The MySQL engine against a real MariaDB 10.11 (binlog ROW), mostly through the real CLI.

Only MariaDB can be tested here (no MySQL 8 server installs on these machines): the MySQL-only
paths (global-read-lock binlog position) are untested.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from safehold.cli.errors import Exit
from safehold.engines.base import (
    AuthenticationFailed,
    ConnectionOptions,
    HostUnreachable,
    open_engine,
)
from safehold.engines.mysql.conn import parse_target
from tests.infra.mariadb import MariaDB
from tests.infra.procs import free_port
from tests.integration import mysql_data as data
from tests.integration.cli_helpers import kill_cli_when, run, run_json


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, mariadb_server: MariaDB) -> dict[str, str]:
    return data.cli_env(tmp_path_factory.mktemp("cfg"), mariadb_server)


def url(server: MariaDB, db: str, user: str | None = None) -> str:
    return f"mariadb://{user or server.user}@{server.host}:{server.port}/{db}"


def new_db_name() -> str:
    return f"r_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def source(mariadb_server: MariaDB) -> Iterator[str]:
    with data.database(mariadb_server, "src") as db:
        yield db


@pytest.fixture(scope="module")
def backup(mariadb_server: MariaDB, source: str, env: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A backup taken through the CLI while a writer moves money between accounts."""
    repo = tmp_path_factory.mktemp("repo").as_uri()
    writer = data.Writer(mariadb_server, source)
    writer.start()
    while writer.commits < 20:
        assert writer.is_alive(), f"writer failed: {writer.error!r}"
        time.sleep(0.01)
    before = writer.commits
    result = run_json("backup", "-t", url(mariadb_server, source), "-r", repo, env=env)
    during = writer.commits - before
    writer.stop()
    return {"repo": repo, "id": result["backup_id"], "result": result, "before": before,
            "during": during, "after": before + during}


def restore_cli(server: MariaDB, backup: dict[str, Any], source: str, db: str,
                env: dict[str, str], *extra: str, ok: bool = True) -> Any:
    return run("restore", "-r", backup["repo"], "-b", backup["id"], "--from", source,
               "-t", url(server, db), "--yes", *extra, env=env, ok=ok)


def test_backup_during_writes_restores_the_snapshot(mariadb_server: MariaDB, source: str,
                                                    backup: dict[str, Any],
                                                    env: dict[str, str]) -> None:
    assert backup["during"] > 0, "the writer committed nothing while the backup ran"
    position = backup["result"]["end_position"]
    events = mariadb_server.sql(
        f"SHOW BINLOG EVENTS IN '{position['binlog_file']}' FROM {position['binlog_pos']}"
        " LIMIT 1")
    assert events.split("\t")[1] == position["binlog_pos"]  # a real event boundary
    assert re.fullmatch(r"\d+-\d+-\d+(,\d+-\d+-\d+)*", position["gtid"])

    target = new_db_name()
    restore_cli(mariadb_server, backup, source, target, env)
    for table in data.STATIC:
        assert data.rows(mariadb_server, target, table) == data.rows(mariadb_server, source,
                                                                     table), table
        assert data.checksum(mariadb_server, target, table) == \
            data.checksum(mariadb_server, source, table), table
    # The live tables: exactly one consistent state between the backup's start and end.
    ledger = data.scalar(mariadb_server, "SELECT COUNT(*) FROM ledger", target)
    assert backup["before"] <= ledger <= backup["after"]
    total = data.scalar(mariadb_server, "SELECT total_money()", target)
    assert total == Decimal(data.ACCOUNTS * data.START_BALANCE)
    mismatched = data.scalar(mariadb_server, """
        SELECT COUNT(*) FROM accounts a WHERE a.balance <> 1000
          + (SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE dst = a.id)
          - (SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE src = a.id)""", target)
    assert mismatched == 0, "accounts and ledger come from different instants"
    # The rest of the schema came back and works.
    assert data.scalar(mariadb_server, "SELECT doubled FROM a_on_top", target) == 2 * total
    assert "child_parent" in mariadb_server.sql(f"SHOW CREATE TABLE `{target}`.child")
    data.connect(mariadb_server, target).cursor().execute("CALL transfer(1, 2, 5)")
    assert data.scalar(mariadb_server, "SELECT note FROM ledger ORDER BY id DESC LIMIT 1",
                       target) == "moved 5.00"
    assert mariadb_server.sql(f"SHOW EVENTS FROM `{target}`").split("\t")[1] == "nightly"
    assert data.scalar(mariadb_server, "SELECT secret FROM hidden_cols WHERE id = 1",
                       target) == 42
    assert mariadb_server.sql("SHOW DATABASES LIKE '%safehold_stage'") == ""
    manifest = json.loads((Path(backup["repo"].removeprefix("file://")) / source
                           / backup["id"] / "manifest.json").read_text())
    names = {o["name"] for o in manifest["objects"]}
    assert {"schema.sql", "toc.json", "rows.types.sql", "rows.big_blobs.sql"} <= names
    assert manifest["engine"] == "mysql" and "MariaDB" in manifest["server_version"]


def test_selective_restore_into_another_database(mariadb_server: MariaDB, source: str,
                                                 backup: dict[str, Any],
                                                 env: dict[str, str]) -> None:
    target = new_db_name()
    restore_cli(mariadb_server, backup, source, target, env, "--include",
                "parent,child,types,ledger")
    tables = mariadb_server.sql(f"SHOW TABLES FROM `{target}`").split("\n")
    assert sorted(tables) == ["child", "ledger", "parent", "types"]
    for table in ("parent", "child", "types"):
        assert data.rows(mariadb_server, target, table) == data.rows(mariadb_server, source,
                                                                     table)
    assert mariadb_server.sql(f"SHOW TRIGGERS FROM `{target}`").split("\t")[0] == "ledger_note"
    assert mariadb_server.sql(f"SHOW PROCEDURE STATUS WHERE Db = '{target}'") == ""


def test_selective_replace_keeps_other_tables_foreign_keys(mariadb_server: MariaDB, source: str,
                                                           backup: dict[str, Any],
                                                           env: dict[str, str]) -> None:
    target = new_db_name()
    restore_cli(mariadb_server, backup, source, target, env)
    mariadb_server.sql("DELETE FROM parent WHERE id >= 10; INSERT INTO parent VALUES (99, 'x')",
                       db=target)
    assert data.scalar(mariadb_server, "SELECT COUNT(*) FROM child", target) == 50  # cascade
    conflict = restore_cli(mariadb_server, backup, source, target, env, "--include", "parent",
                           "--conflict", "fail", ok=False)
    assert conflict.exit_code == Exit.CONFLICT, conflict.output
    restore_cli(mariadb_server, backup, source, target, env, "--include", "parent")
    assert data.rows(mariadb_server, target, "parent") == data.rows(mariadb_server, source,
                                                                    "parent")
    child = mariadb_server.sql(f"SHOW CREATE TABLE `{target}`.child")
    assert "REFERENCES `parent` (`id`) ON DELETE CASCADE" in child
    assert "_safehold_old_" not in mariadb_server.sql(f"SHOW TABLES FROM `{target}`")
    with pytest.raises(subprocess.CalledProcessError):  # the FK binds the restored parent
        mariadb_server.sql("INSERT INTO child VALUES (1000, 99)", db=target)
    whole = restore_cli(mariadb_server, backup, source, target, env, "--conflict", "fail",
                        ok=False)
    assert whole.exit_code == Exit.CONFLICT and "not empty" in whole.output


def test_wrong_password_and_unreachable_host(mariadb_server: MariaDB, source: str,
                                             env: dict[str, str], tmp_path: Path) -> None:
    secret = "not-the-password-7731"
    result = run("backup", "-t", url(mariadb_server, source), "-r", tmp_path.as_uri(),
                 env={**env, "SAFEHOLD_PASSWORD": secret}, ok=False)
    assert result.exit_code == Exit.DATABASE, result.output
    assert "authentication failed" in result.output and secret not in result.output
    engine = open_engine(url(mariadb_server, source), ConnectionOptions(password=secret))
    with pytest.raises(AuthenticationFailed) as auth:
        engine.estimate_size()
    assert secret not in str(auth.value)
    closed = f"mariadb://u:{secret}@127.0.0.1:{free_port()}/db"
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as unreachable:
        open_engine(closed).estimate_size()
    assert secret not in str(unreachable.value) and time.monotonic() - started < 10
    with pytest.raises(HostUnreachable, match="cannot connect"):  # check raises it, classified
        open_engine(closed).check("backup")
    with pytest.raises(AuthenticationFailed, match="TLS failed"):  # the fixture has no TLS
        open_engine(url(mariadb_server, source), ConnectionOptions(
            password=mariadb_server.password, tls="require")).check("backup")
    with pytest.raises(AuthenticationFailed) as auth:
        engine.check("backup")
    assert secret not in str(auth.value)


def test_check_names_missing_privileges(mariadb_server: MariaDB, source: str,
                                        env: dict[str, str]) -> None:
    user = f"u{uuid.uuid4().hex[:6]}"
    grants = [f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw'"]
    grants += [f"GRANT SELECT, TRIGGER ON `{source}`.`{t}` TO '{user}'@'127.0.0.1'"
               for t in data.STATIC + data.LIVE if t != "types"]
    grants.append(f"GRANT INSERT ON `{source}`.types TO '{user}'@'127.0.0.1'")
    grants.append(f"GRANT SELECT ON `{source}`.v_total TO '{user}'@'127.0.0.1'")
    mariadb_server.sql(";".join(grants))
    try:
        engine = open_engine(url(mariadb_server, source, user), ConnectionOptions(password="pw"))
        report = engine.check("backup")
        assert not report.ok and report.server_version.startswith("10.11")
        text = "\n".join(report.problems)
        assert f"SELECT is missing on table(s) types of `{source}`" in text
        assert "TRIGGER is missing on table(s) types" in text
        assert "SHOW VIEW is missing on view(s) v_total " in text  # a_on_top: invisible
        assert "only table by table" in text
        assert "EVENT is missing" in text
        restore = engine.check("restore").problems
        assert any("CREATE" in p and "DROP" in p and "target database" in p for p in restore)
        cli = run("check", "-t", url(mariadb_server, source, user), env={**env,
                  "SAFEHOLD_PASSWORD": "pw"}, ok=False)
        assert cli.exit_code == Exit.DATABASE and "SELECT is missing" in cli.output
        admin = open_engine(url(mariadb_server, source),
                            ConnectionOptions(password=mariadb_server.password))
        assert admin.check("backup").ok and admin.check("restore").ok
    finally:
        mariadb_server.sql(f"DROP USER '{user}'@'127.0.0.1'")


def test_restore_killed_midway_leaves_target_unchanged(mariadb_server: MariaDB,
                                                       env: dict[str, str],
                                                       tmp_path: Path) -> None:
    src, target = new_db_name(), new_db_name()
    mariadb_server.sql(f"CREATE DATABASE {src}")
    mariadb_server.sql("CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(300)); INSERT INTO big"
                       " SELECT seq, REPEAT(MD5(seq), 8) FROM seq_1_to_150000", db=src)
    repo = tmp_path.as_uri()
    backup_id = run_json("backup", "-t", url(mariadb_server, src), "-r", repo,
                         env=env)["backup_id"]
    restore = ["restore", "-r", repo, "-b", backup_id, "--from", src,
               "-t", url(mariadb_server, target), "--yes", "--jobs", "1"]
    run(*restore, env=env)
    mariadb_server.sql("UPDATE big SET v = 'changed' WHERE id <= 10", db=target)
    before = data.checksum(mariadb_server, target, "big")
    stage = f"{target}_safehold_stage"
    loaded = 0

    def mid_load() -> bool:
        nonlocal loaded
        try:
            loaded = data.scalar(mariadb_server, f"SELECT COUNT(*) FROM `{stage}`.big")
        except Exception:  # the staging table does not exist yet
            time.sleep(0.02)
        return loaded >= 10000

    kill_cli_when(restore, env, mid_load, timeout=30, poll=0)
    assert 0 < loaded < 150000, f"restore was not caught mid-load ({loaded} rows)"
    assert data.checksum(mariadb_server, target, "big") == before
    assert mariadb_server.sql(f"SHOW DATABASES LIKE '{stage}'") == stage  # left behind
    run(*restore, env=env)  # the next restore cleans up and succeeds
    assert data.checksum(mariadb_server, target, "big") == data.checksum(mariadb_server, src,
                                                                         "big")
    assert mariadb_server.sql(f"SHOW DATABASES LIKE '{stage}'") == ""
    mariadb_server.sql(f"DROP DATABASE {src}; DROP DATABASE {target}")


def test_target_url_validation() -> None:
    opts = ConnectionOptions(password="from-options")
    t = parse_target("mariadb://app:p%40ss@db.example:3307/shop?ssl-mode=REQUIRED",
                     ConnectionOptions())
    assert (t.host, t.port, t.user, t.database, t.password, t.tls) == \
        ("db.example", 3307, "app", "shop", "p@ss", "require")
    assert "p@ss" not in repr(t) and "p@ss" not in str(t)
    assert parse_target("mysql://app@h/shop", opts).password == "from-options"
    # --password-file / SAFEHOLD_PASSWORD win over the URL, as for every engine
    assert parse_target("mysql://app:p%40ss@h/shop", opts).password == "from-options"
    for bad, message in [("mysql://h/db", "names no user"), ("mysql://u@h/", "exactly one"),
                         ("mysql://u@h/db?sslmode=x", "unknown parameter"),
                         ("mysql://u@h/db?ssl-mode=VERIFY_CA", "--tls-ca"),
                         ("mysql://u:secret@h:99999/db", "invalid port")]:
        with pytest.raises(ValueError, match=message) as err:
            parse_target(bad, ConnectionOptions())
        assert "secret" not in str(err.value)
