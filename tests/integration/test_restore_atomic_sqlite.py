"""SQLite: verify before apply (see atomic_helpers). The file is rebuilt beside the target
and proven equal to the snapshot before it is swapped in or tables are copied out of it."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

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

fault = atomic_helpers.fault  # fixtures
repo = atomic_helpers.repo


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_NO_ENCRYPTION": "1"}


def fill(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE kind (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
            INSERT INTO kind VALUES (1, 'a'), (2, 'b');
            CREATE TABLE big (id INTEGER PRIMARY KEY AUTOINCREMENT,
                              kind INTEGER NOT NULL REFERENCES kind (id),
                              v TEXT NOT NULL CHECK (length(v) > 0));
            CREATE INDEX big_v ON big (v);
            CREATE TABLE other (id INTEGER PRIMARY KEY, note TEXT);
        """)
        conn.executemany("INSERT INTO big (kind, v) VALUES (?, ?)",
                         [(1 + i % 2, hashlib.md5(str(i).encode()).hexdigest() * 2)
                          for i in range(40000)])
        conn.executemany("INSERT INTO other (note) VALUES (?)", [(f"n{i}",) for i in range(300)])


def change(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            UPDATE big SET v = 'changed ' || id WHERE id % 10 = 0;
            DELETE FROM big WHERE id > 39000;
            INSERT INTO big (kind, v) VALUES (1, 'moves the AUTOINCREMENT counter');
            INSERT INTO other (note) VALUES ('after the backup');
            CREATE INDEX other_note ON other (note);
        """)


def snapshot(path: Path) -> str:
    """The whole database as SQL (schema, rows, sqlite_sequence), plus the directory (no
    leftover temporary files)."""
    with sqlite3.connect(path) as conn:
        dump = list(conn.iterdump())
    return dumps({"sha": hashlib.sha256("\n".join(dump).encode()).hexdigest(),
                  "lines": len(dump), "files": sorted(p.name for p in path.parent.iterdir())})


@pytest.mark.parametrize("include", [["big"], None], ids=["selective", "whole"])
def test_a_failing_stream_changes_nothing(repo: Repo, fault: str, include: list[str] | None,
                                          env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "db" / "app.db"
    path.parent.mkdir()
    fill(path)
    target = path.as_uri().replace("file://", "sqlite://")
    env = cli_env(env, repo, fault, tmp_path)
    manifest = backup(target, repo, env, fault)
    change(path)
    before = snapshot(path)
    damage(repo, manifest, largest(manifest, lambda n: n == "pages"), fault)
    restore_fails(target, repo, env, fault, include)
    assert snapshot(path) == before
