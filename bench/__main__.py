"""`make bench`: pipeline throughput per codec (± encryption) beside CLI baselines, and peak RSS.

Numbers are printed, never asserted (DESIGN.md section 8). Two corpora: "pgbench-like" (highly
compressible rows) and "realistic" (random-text rows, ~2x compressible). Options:
``--sizes 100,2000`` database sizes in MB for the RSS runs; ``--corpus-mb 64``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from bench.harness import SAFEHOLD
from safehold.codecs import crypto
from safehold.codecs.compression import CODECS, parse_codec
from safehold.pipeline import stream

LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut"
    " labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris"
    " nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate velit esse"
    " cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident sunt culpa qui"
    " officia deserunt mollit anim id est laborum"
)
WORDS = LOREM.split()


def realistic_rows(n: int, seed: int = 1) -> list[tuple[int, str, str]]:
    rnd = random.Random(seed)
    return [
        (
            i,
            " ".join(rnd.choices(WORDS, k=12)),
            "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=60)),
        )
        for i in range(n)
    ]


def corpus(kind: str, size: int) -> bytes:
    if kind == "pgbench":
        row = b"%10d|%10d|%10d|" + b" " * 70 + b"\n"
        out = b"".join(row % (i, i // 100000, 0) for i in range(size // len(row % (0, 0, 0))))
        return out[:size]
    rnd = random.Random(7)
    parts, total = [], 0
    while total < size:
        line = (
            " ".join(rnd.choices(WORDS, k=12))
            + "|"
            + "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=60))
            + "\n"
        )
        parts.append(line.encode())
        total += len(parts[-1])
    return b"".join(parts)[:size]


def pipeline_mb_s(data: bytes, spec: str, encrypted: bool) -> tuple[float, float]:
    codec = parse_codec(spec)
    cipher = crypto.ChunkCipher(os.urandom(32), "bench") if encrypted else None
    stats = stream.StreamStats()
    blocks = (data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20))
    start = time.perf_counter()
    for _ in stream.encode(blocks, codec, cipher, stats):
        pass
    elapsed = time.perf_counter() - start
    return len(data) / 1e6 / elapsed, len(data) / max(stats.stored_size, 1)


def cli_mb_s(data_path: Path, argv: list[str]) -> float:
    start = time.perf_counter()
    with open(data_path, "rb") as src:
        subprocess.run(argv, stdin=src, stdout=subprocess.DEVNULL, check=True)
    return data_path.stat().st_size / 1e6 / (time.perf_counter() - start)


def throughput(corpus_mb: int) -> None:
    print(
        f"\n## Pipeline throughput (MB/s of raw input, {corpus_mb} MB corpus, "
        f"{len(os.sched_getaffinity(0))} cores)"
    )
    print(f"{'corpus':<10} {'codec':<8} {'plain':>8} {'aes-gcm':>8} {'ratio':>6}")
    for kind in ("pgbench", "realistic"):
        data = corpus(kind, corpus_mb * 10**6)
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            path = Path(f.name)
            base = {
                name: cli_mb_s(path, argv)
                for name, argv in {
                    "zstd -3": ["zstd", "-3", "-q", "-c"],
                    "zstd -3 -T2": ["zstd", "-3", "-T2", "-q", "-c"],
                    "gzip -6": ["gzip", "-6", "-c"],
                }.items()
            }
            for spec in CODECS:
                plain, ratio = pipeline_mb_s(data, spec, False)
                enc, _ = pipeline_mb_s(data, spec, True)
                print(f"{kind:<10} {spec:<8} {plain:>8.1f} {enc:>8.1f} {ratio:>6.2f}")
            for name, mb_s in base.items():
                threads = "2 threads" if "-T2" in name else "one core"
                print(f"{kind:<10} {name:<8} {mb_s:>8.1f} (CLI baseline, {threads}, no encryption)")
            z = pipeline_mb_s(data, "zstd", True)[0]
            g = pipeline_mb_s(data, "gzip", True)[0]
            print(
                f"{kind:<10} speed safehold (aes-gcm, {stream.default_workers()} workers)/CLI:"
                f" zstd {z / base['zstd -3 -T2']:.2f}x of zstd -3 -T2,"
                f" {z / base['zstd -3']:.2f}x of zstd -3; gzip {g / base['gzip -6']:.2f}x"
            )


def make_sqlite(path: Path, mb: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, words TEXT, code TEXT)")
        batch = 50_000
        i = 0
        while path.stat().st_size < mb * 10**6:
            conn.executemany(
                "INSERT INTO rows VALUES (?, ?, ?)",
                [(i + k, w, c) for k, (_, w, c) in enumerate(realistic_rows(batch, seed=i))],
            )
            conn.commit()
            i += batch


def peak_rss(sizes: list[int], work: Path) -> None:
    print("\n## Runner peak RSS (safehold backup + restore, zstd:3 + AES-256-GCM, realistic rows)")
    print(f"{'db MB':>7} {'op':<8} {'wall s':>7} {'MB/s':>7} {'peak RSS MiB':>13}")
    safehold = list(SAFEHOLD)
    key = work / "bench.key"
    if not key.exists():
        subprocess.run(
            [*safehold, "keys", "generate", "--out", str(key)], check=True, capture_output=True
        )
    for mb in sizes:
        db = work / f"bench-{mb}.db"
        if not db.exists():
            make_sqlite(db, mb)
        repo = (work / f"repo-{mb}").as_uri()
        out = work / f"restored-{mb}.db"
        runs = {
            "backup": ["backup", "-t", f"sqlite://{db}", "-r", repo, "--key-file", str(key)],
            "restore": [
                "restore",
                "-r",
                repo,
                "-b",
                "latest",
                "-t",
                f"sqlite://{out}",
                "--from",
                db.stem,
                "--yes",
                "--key-file",
                str(key),
            ],
        }
        for op, args in runs.items():
            start = time.perf_counter()
            res = subprocess.run(
                ["/usr/bin/time", "-v", *safehold, *args],
                capture_output=True,
                text=True,
                check=True,
            )
            wall = time.perf_counter() - start
            rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)[1])
            size = db.stat().st_size / 1e6
            print(f"{mb:>7} {op:<8} {wall:>7.1f} {size / wall:>7.1f} {rss / 1024:>13.0f}")
        out.unlink(missing_ok=True)


SECTIONS = ("startup", "pipeline", "rss", "storage", "postgres", "incremental", "mysql",
            "operator")


def compile_bytecode() -> None:
    """Compile Safehold's modules once, as ``pip install`` of the wheel does (the images and
    the executable ship compiled). The source tree's editable install has no bytecode, and
    with PYTHONDONTWRITEBYTECODE set (as on the CI machines) every ``safehold`` the bench
    runs would compile about a hundred modules first: 0.2 s no user pays."""
    import compileall

    import safehold

    compileall.compile_dir(Path(safehold.__file__).parent, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of: {', '.join(SECTIONS)}")
    parser.add_argument("--corpus-mb", type=int, default=64)
    parser.add_argument("--sizes", default="100,2000", help="database sizes (MB) for RSS runs")
    parser.add_argument("--storage-mb", type=int, default=256, help="bytes uploaded per backend")
    parser.add_argument("--db-mb", type=int, default=1000, help="PostgreSQL/MariaDB database size")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating runs per command for PostgreSQL/MariaDB (medians)")
    parser.add_argument("--durable", action="store_true",
                        help="PostgreSQL with fsync, synchronous_commit and full_page_writes on,"
                        " as in production (default: off, as the test servers)")
    parser.add_argument("--work", type=Path, default=Path(".bench"))
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if unknown := only - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    work = args.work.resolve()
    work.mkdir(exist_ok=True)
    compile_bytecode()
    if "startup" in only:
        from bench import startup

        startup.run(work)
    if "pipeline" in only:
        throughput(args.corpus_mb)
    if "rss" in only:
        peak_rss([int(s) for s in args.sizes.split(",") if s], work)
    if "storage" in only:
        from bench import storage

        storage.run(work, args.storage_mb)
    if "postgres" in only:
        from bench import postgres

        postgres.run(work, args.db_mb, args.rounds, durable=args.durable)
    if "incremental" in only:
        from bench import incremental

        incremental.run(work, args.db_mb)
    if "mysql" in only:
        from bench import mysql

        mysql.run(work, args.db_mb, args.rounds)
    if "operator" in only:
        from bench import operator

        operator.run(work)


if __name__ == "__main__":
    main()
