"""Point-in-time restores of physical PostgreSQL backups (15 and 18): rows with known commit
times, physical backups (on 18 full -> incremental -> incremental -> differential) with writes in
between, WAL archived in the repository by `safehold wal stream`; each restore to a time or an
LSN, fetching its WAL with the default restore_command (`safehold wal fetch`), holds exactly the
rows committed up to it."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from safehold.cli.errors import Exit
from tests.infra.postgres import Postgres
from tests.infra.procs import wait_until
from tests.integration.cli_helpers import run, run_json
from tests.integration.pg_wal_helpers import (
    Streamer,
    archived,
    close_segments_until,
    covered_until,
    let_restored_servers_fetch,
)
from tests.integration.test_pg_physical import Restored, env, scratch, url

__all__ = ["env", "scratch"]  # fixtures shared with test_pg_physical


@pytest.fixture
def slot(pg_server: Postgres) -> Iterator[str]:
    pg_server.psql("ALTER SYSTEM SET max_slot_wal_keep_size = '4GB'")
    pg_server.psql("SELECT pg_reload_conf()")
    name = f"safehold_p{uuid.uuid4().hex[:8]}"
    yield name
    pg_server.psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                   f" WHERE slot_name = '{name}' AND NOT active")


def commit_batch(pg: Postgres, db: str, batch: int) -> tuple[datetime, str]:
    """Insert batch ``batch`` (10 rows) in one transaction; a time and an LSN right after its
    commit and before any later one."""
    pg.psql(f"INSERT INTO t SELECT {batch} * 100 + g, {batch} FROM generate_series(1, 10) g",
            db=db)
    # the insert position: with synchronous_commit off the write position may lag the commit
    after = pg.psql("SELECT clock_timestamp()::text || ' ' || pg_current_wal_insert_lsn()")
    stamp, lsn = after.rsplit(" ", 1)
    time.sleep(0.05)
    return datetime.fromisoformat(stamp), lsn


def rows(read: Restored, db: str) -> list[int]:
    out = read.psql("SELECT batch FROM t GROUP BY batch ORDER BY batch", db)
    return [int(x) for x in out.split()]


def test_restore_to_times_and_lsns_matches_exactly(pg_server: Postgres, slot: str,
                                                   tmp_path: Path, scratch: Path,
                                                   env: dict[str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pg, repo_dir = pg_server, scratch / "repo"  # the restored servers fetch from it
    repo = f"file://{repo_dir}"
    shutil.copyfile(env["SAFEHOLD_KEY_FILE"], scratch / "kek")
    env = {**env, "SAFEHOLD_KEY_FILE": str(scratch / "kek")}
    db = f"r_{uuid.uuid4().hex[:10]}"
    pg.psql(f'CREATE DATABASE "{db}"')
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, batch int)", db=db)
    if pg.major >= 17:
        pg.psql("ALTER SYSTEM SET summarize_wal = on")
        pg.psql("SELECT pg_reload_conf()")
    kinds = ["full", "incremental", "incremental", "differential"] if pg.major >= 17 \
        else ["full", "full", "full"]
    streamer = Streamer(pg, db, repo, "main", tmp_path / "status.json", env, slot=slot)
    marks: list[tuple[int, datetime, str]] = []  # (batch, time after it, LSN after it)
    try:
        wait_until(lambda: streamer.running() and bool(streamer.read().get("timeline")),
                   what="the streamer", timeout=120)
        batch = 0
        for kind in kinds:
            for _ in range(2):
                batch += 1
                marks.append((batch, *commit_batch(pg, db, batch)))
            run_json("backup", "-t", url(pg, db), "-r", repo, "--name", "main",
                     "--method", "physical", "--type", kind, env=env)
        batch += 1
        marks.append((batch, *commit_batch(pg, db, batch)))
        commit_batch(pg, db, batch + 1)  # a commit after the last target: recovery stops on it
        close_segments_until(pg, db, marks[-1][1], lambda: covered_until(repo_dir, "main"),
                             lambda s: streamer.running() and s in archived(repo_dir, "main"))
    finally:
        streamer.stop()

    # each segment names its cluster: a restore refuses another cluster's WAL up front
    system = pg.psql("SELECT system_identifier FROM pg_control_system()")
    metas = [json.loads(p.read_text())["meta"] for p in
             (repo_dir / "main" / "_logs" / "wal" / "00000001").glob("*/segment.json")]
    assert metas and {m.get("system_identifier") for m in metas} == {system}, metas[:2]
    let_restored_servers_fetch(scratch, monkeypatch)
    # times: before the first backup's end (refused, naming the window), inside each interval
    early = run("restore", "-r", repo, "--data-dir", str(scratch / "early"), "--to-time",
                marks[1][1].isoformat(), env=env, ok=False)
    assert early.exit_code == Exit.USAGE and "window starts" in early.output
    chosen = [m for m in marks if m[0] >= 3]  # after the first backup finished
    picks = [chosen[round(k * (len(chosen) - 1) / 4)] for k in range(5)]
    assert len({p[0] for p in picks}) == 5, picks
    chains: list[int] = []
    for i, (batch_no, when, lsn) in enumerate(picks):
        by_lsn = i % 2 == 1
        bundled = i in (2, 3)  # the WAL in the data directory: no repository when it starts
        where = scratch / f"pitr{i}"
        target = ["--to-lsn", lsn] if by_lsn else ["--to-time", when.isoformat()]
        out = run_json("restore", "-r", repo, "--data-dir", str(where), *target,
                       *(["--bundle-wal"] if bundled else []), env=env)
        chains.append(len(out["chain"]))
        if bundled:
            assert out["bundled_wal"]["segments"] >= 1, out
            assert sorted(os.listdir(where / "safehold_wal")) == sorted(
                n for n in archived(repo_dir, "main") if n in os.listdir(where / "safehold_wal"))
            repo_dir.rename(scratch / "repo-away")
        restored = Restored(pg, where)
        try:
            wait_until(lambda r=restored: r.psql("SELECT pg_is_in_recovery()", "postgres")
                       == "f", what="promotion", timeout=120)
            assert rows(restored, db) == list(range(1, batch_no + 1)), (target, out["chain"])
            assert not (where / "safehold_wal").exists()  # removed when recovery ended
        finally:
            restored.stop()
            if bundled:
                (scratch / "repo-away").rename(repo_dir)
    if pg.major >= 17:  # the later targets start from combined incrementals / differential
        assert max(chains) >= 3 and chains[-1] == 2, chains
    pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
