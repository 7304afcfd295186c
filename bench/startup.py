"""CLI start-up: what `safehold --version`/`--help`/`list` cost around the work, beside a C floor.

Each command runs ``rounds`` times, alternating (A B C A B C ...); the median and min-max of
wall time and of CPU (user + system of the child, from getrusage) are printed. ``pg_dump
--version`` is the floor a C peer pays. Numbers are printed, never asserted (DESIGN.md §8);
tests/unit/test_cli_imports.py guards which libraries the CLI imports at start.
"""

from __future__ import annotations

import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.infra.postgres import wheel_bindir


def _run(argv: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _fmt(values: list[float]) -> str:
    return (f"{statistics.median(values):>6.3f} ({min(values):.3f}-{max(values):.3f})")


def run(work: Path, rounds: int = 7) -> None:
    safehold = str(Path(sys.executable).with_name("safehold"))
    bindir = wheel_bindir()
    pg_dump = str(bindir / "pg_dump") if bindir else shutil.which("pg_dump")
    # a repository of one small SQLite backup: `list` reads it (config, storage, manifests)
    db, repo = work / "startup.db", work / "startup-repo"
    shutil.rmtree(repo, ignore_errors=True)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY)")
    conn.close()
    subprocess.run([safehold, "--log-level", "error", "backup", "-t", f"sqlite://{db.resolve()}",
                    "-r", repo.resolve().as_uri(), "--no-encryption"], check=True,
                   capture_output=True)
    cases = {"safehold --version": [safehold, "--version"],
             "safehold --help": [safehold, "--help"],
             "safehold list (1 backup)": [safehold, "--log-level", "error", "list", "-r",
                                          repo.resolve().as_uri()]}
    if pg_dump:
        cases["pg_dump --version (C floor)"] = [pg_dump, "--version"]
    walls: dict[str, list[float]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    for argv in cases.values():  # one warm-up each: page cache, .pyc files
        _run(argv)
    for _ in range(rounds):
        for name, argv in cases.items():
            wall, cpu = _run(argv)
            walls[name].append(wall)
            cpus[name].append(cpu)
    print(f"\n## CLI start-up (median (min-max) of {rounds} alternating runs, seconds)")
    print(f"{'command':<28} {'wall':>22} {'cpu (user+sys)':>22}")
    for name in cases:
        print(f"{name:<28} {_fmt(walls[name]):>22} {_fmt(cpus[name]):>22}")
    if not pg_dump:
        print("(pg_dump not found: no C floor)")


if __name__ == "__main__":
    run(Path("."))
