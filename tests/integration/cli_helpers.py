"""Drive the real `safehold` CLI (in-process, or as a child process to kill) and make SQLite
databases."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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


def kill_cli_when(args: Sequence[str], env: Mapping[str, str], ready: Callable[[], bool], *,
                  timeout: float, poll: float = 0.02) -> str:
    """Run ``safehold *args`` in a child process and SIGKILL it as soon as ``ready()`` holds
    (the test's "caught in the act" condition); its output.

    Fails, after killing the child all the same, when the command ends first or ``ready()``
    does not hold within ``timeout`` seconds: a kill test must not pass because nothing ran.
    """
    proc = subprocess.Popen([sys.executable, "-m", "safehold.cli", *args],
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    reached = False
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                reached = True
                break
            time.sleep(poll)
    finally:
        proc.send_signal(signal.SIGKILL)  # a no-op when it has ended already
        out = proc.communicate(timeout=30)[0].decode()
    assert reached, f"safehold {' '.join(args)} was not caught in the act" \
        f" (exit {proc.returncode}):\n{out}"
    assert proc.returncode == -signal.SIGKILL, f"the command finished before the kill:\n{out}"
    return out
