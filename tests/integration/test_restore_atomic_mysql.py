"""MariaDB: verify before apply (see atomic_helpers), and a selective restore of a child table
keeps its foreign key pointing at the real database, never at the staging one."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from safehold.engines.mysql import quote
from tests.infra.mariadb import MariaDB
from tests.integration import atomic_helpers
from tests.integration.atomic_helpers import (
    Repo,
    backup,
    cli_env,
    damage,
    dumps,
    largest,
    restore_fails,
)
from tests.integration.cli_helpers import run

fault = atomic_helpers.fault  # fixtures
repo = atomic_helpers.repo

SCHEMA = """
CREATE TABLE kind (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL UNIQUE);
INSERT INTO kind VALUES (1, 'a'), (2, 'b');
CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, kind INT NOT NULL,
                  v VARCHAR(80) NOT NULL, KEY big_v (v),
                  CONSTRAINT big_kind FOREIGN KEY (kind) REFERENCES kind (id));
INSERT INTO big (kind, v) SELECT 1 + seq % 2, CONCAT(MD5(seq), MD5(seq * 7))
  FROM seq_1_to_40000;
CREATE TABLE other (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT);
INSERT INTO other (note) SELECT CONCAT('n', seq) FROM seq_1_to_300;
"""
CHANGE = """
UPDATE big SET v = CONCAT('changed ', id) WHERE id % 10 = 0;
DELETE FROM big WHERE id > 39000;
INSERT INTO other (note) VALUES ('after the backup');
CREATE INDEX other_note ON other (note(20));
"""


@pytest.fixture
def database(mariadb_server: MariaDB) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    mariadb_server.sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield name
    mariadb_server.sql(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def env(tmp_path: Path, mariadb_server: MariaDB) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "",
            "SAFEHOLD_NO_ENCRYPTION": "1",
            "SAFEHOLD_PASSWORD": mariadb_server.password, "MYSQL_PWD": ""}


def url(server: MariaDB, db: str) -> str:
    return f"mariadb://{server.user}@{server.host}:{server.port}/{db}"


def snapshot(server: MariaDB, db: str) -> str:
    """Tables (definitions with indexes, constraints and AUTO_INCREMENT), their rows, the
    triggers, and the databases beside it (no staging leftovers)."""
    conn = pymysql.connect(host=server.host, port=server.port, user=server.user,
                           password=server.password, charset="utf8mb4")
    try:
        with conn.cursor() as cur:
            def rows(query: str, *args: str) -> list[list[Any]]:
                cur.execute(query, args or None)
                return [list(r) for r in cur.fetchall()]

            tables = rows("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE"
                          " TABLE_SCHEMA = %s ORDER BY TABLE_NAME", db)
            state: dict[str, Any] = {"tables": tables}
            for name, _ in tables:
                q = f"{quote.name(db)}.{quote.name(name)}"
                state[name] = {"ddl": rows(f"SHOW CREATE TABLE {q}")[0][1],
                               "rows": rows(f"CHECKSUM TABLE {q} EXTENDED")[0][1],
                               "count": rows(f"SELECT COUNT(*) FROM {q}")}
            state["databases"] = rows("SHOW DATABASES LIKE '%%safehold%%'")
            state["triggers"] = rows("SELECT TRIGGER_NAME, ACTION_STATEMENT FROM"
                                     " information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
                                     db)
    finally:
        conn.close()
    return dumps(state)


@pytest.mark.parametrize("include", [["big"], None], ids=["selective", "whole"])
def test_a_failing_stream_changes_nothing(mariadb_server: MariaDB, database: str, repo: Repo,
                                          fault: str, include: list[str] | None,
                                          env: dict[str, str], tmp_path: Path) -> None:
    server, db = mariadb_server, database
    server.sql(SCHEMA, db=db)
    env = cli_env(env, repo, fault, tmp_path)
    manifest = backup(url(server, db), repo, env, fault)
    server.sql(CHANGE, db=db)
    before = snapshot(server, db)
    damage(repo, manifest, largest(manifest, lambda n: n.startswith("rows.")), fault)
    restore_fails(url(server, db), repo, env, fault, include)
    assert snapshot(server, db) == before


def test_selective_restore_keeps_a_foreign_key_on_the_real_database(
        mariadb_server: MariaDB, database: str, env: dict[str, str], tmp_path: Path) -> None:
    server, db = mariadb_server, database
    server.sql(SCHEMA.replace("seq_1_to_40000", "seq_1_to_100"), db=db)
    repo_url = (tmp_path / "repo").as_uri()
    run("backup", "-t", url(server, db), "-r", repo_url, env=env)
    server.sql("DELETE FROM big WHERE id > 50", db=db)
    run("restore", "-t", url(server, db), "-r", repo_url, "-b", "latest", "--include", "big",
        "--yes", env=env)
    ddl = server.sql(f"SHOW CREATE TABLE `{db}`.big")
    assert "safehold" not in ddl, ddl
    assert "CONSTRAINT `big_kind` FOREIGN KEY (`kind`) REFERENCES `kind` (`id`)" in ddl, ddl
    assert server.sql("SELECT COUNT(*) FROM big", db=db) == "100"
    server.sql("INSERT INTO big (kind, v) VALUES (2, 'new')", db=db)  # the parent is found
    with pytest.raises(subprocess.CalledProcessError):  # and the key is enforced against it
        server.sql("INSERT INTO big (kind, v) VALUES (99, 'orphan')", db=db)
    # A whole restore over it: the replaced tables' keys of the same names do not collide.
    run("restore", "-t", url(server, db), "-r", repo_url, "-b", "latest", "--yes", env=env)
    assert server.sql("SELECT COUNT(*) FROM big", db=db) == "100"
    ddl = server.sql(f"SHOW CREATE TABLE `{db}`.big")
    assert "CONSTRAINT `big_kind` FOREIGN KEY (`kind`) REFERENCES `kind` (`id`)" in ddl, ddl
    assert "_safehold" not in server.sql(f"SHOW TABLES FROM `{db}`")
