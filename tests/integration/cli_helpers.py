"""Drive the real `safehold` CLI in-process (click's runner) and make SQLite databases."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from safehold.cli.main import cli


def run(*args: str, env: dict[str, str] | None = None, ok: bool = True,
        input: str | None = None) -> Result:
    result = CliRunner().invoke(cli, ["--log-level", "warning", *args], env=env, input=input,
                                catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, f"safehold {' '.join(args)} -> {result.exit_code}\n" \
            f"{result.output}"
    return result


def run_json(*args: str, env: dict[str, str] | None = None) -> Any:
    result = run(*args, "--output", "json", env=env)
    return json.loads(result.stdout)


def make_db(path: Path, rows: int = 2000, tables: int = 3) -> None:
    with sqlite3.connect(path) as conn:
        for t in range(tables):
            conn.execute(f"CREATE TABLE t{t} (id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
            conn.execute(f"CREATE INDEX t{t}_name ON t{t}(name)")
            conn.executemany(f"INSERT INTO t{t} VALUES (?, ?, ?)",
                             [(i, f"row {i} ✓ {t}", bytes([i % 256]) * 100) for i in range(rows)])


def dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())
