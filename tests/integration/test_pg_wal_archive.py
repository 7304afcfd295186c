"""`safehold wal stream` into the repository's log archive and `safehold wal fetch` as
PostgreSQL's restore_command (real servers, 15 and 18): the streamer is killed mid-segment and
restarted without a gap, stopped by SIGTERM with exit 143, and point-in-time restores that
fetch their WAL from the encrypted archive (the default restore_command) match exactly; with a
tampered segment the server refuses to open short of the target."""

from __future__ import annotations

import contextlib
import shutil
import signal
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from safehold.cli.errors import Exit
from safehold.engines.postgres.walstream import parse_lsn
from tests.infra.postgres import Postgres
from tests.infra.procs import ServerError, wait_until
from tests.integration.cli_helpers import run, run_json
from tests.integration.pg_wal_helpers import (
    Streamer,
    archived,
    close_segments_until,
    covered_until,
    let_restored_servers_fetch,
)
from tests.integration.test_pg_physical import Restored, env, scratch, url
from tests.integration.test_pg_pitr import commit_batch, rows

__all__ = ["env", "scratch"]  # fixtures shared with test_pg_physical


@pytest.fixture
def name(pg_server: Postgres) -> Iterator[str]:
    """A target name; its slot (safehold_<name>) is dropped afterwards."""
    pg_server.psql("ALTER SYSTEM SET max_slot_wal_keep_size = '4GB'")
    pg_server.psql("SELECT pg_reload_conf()")
    target = f"w{uuid.uuid4().hex[:8]}"
    yield target
    pg_server.psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                   f" WHERE slot_name = 'safehold_{target}' AND NOT active")


def segno(name: str) -> int:
    return int(name[8:16], 16) * 0x100 + int(name[16:], 16)  # 16 MiB segments


def test_streamed_killed_restarted_and_restored_to_times_from_the_archive(
        pg_server: Postgres, name: str, scratch: Path, env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    pg, repo_dir = pg_server, scratch / "repo"
    repo = f"file://{repo_dir}"
    key = scratch / "kek"  # where the restored server's OS user can read it
    shutil.copyfile(env["SAFEHOLD_KEY_FILE"], key)
    env = {**env, "SAFEHOLD_KEY_FILE": str(key)}
    db = f"a_{uuid.uuid4().hex[:10]}"
    pg.psql(f'CREATE DATABASE "{db}"')
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, batch int)", db=db)
    status = scratch / "status.json"
    marks: list[tuple[datetime, str]] = []
    streamer = Streamer(pg, db, repo, name, status, env)
    try:
        wait_until(lambda: streamer.running() and bool(streamer.read().get("timeline")),
                   what="the streamer", timeout=120)
        run_json("backup", "-t", url(pg, db), "-r", repo, "--name", name, "--method",
                 "physical", env=env)
        marks += [commit_batch(pg, db, b) for b in range(1, 4)]
        pg.psql("SELECT pg_switch_wal()")
        marks.append(commit_batch(pg, db, 4))  # in a segment that is not complete
        mid = parse_lsn(marks[-1][1])
        wait_until(lambda: parse_lsn(str(streamer.read().get("received_lsn") or "0/0")) >= mid,
                   what="the streamer receiving batch 4", timeout=120)
        assert parse_lsn(str(streamer.read()["confirmed_lsn"])) < mid  # caught mid-segment
    finally:
        killed = streamer.stop(signal.SIGKILL)
    assert killed == -signal.SIGKILL
    before_restart = archived(repo_dir, name)
    assert before_restart, "nothing archived before the kill"

    marks += [commit_batch(pg, db, b) for b in range(5, 8)]
    commit_batch(pg, db, 8)  # after the last target: recovery stops on its commit
    streamer = Streamer(pg, db, repo, name, status, env)
    try:
        close_segments_until(pg, db, marks[-1][0], lambda: covered_until(repo_dir, name),
                             lambda s: streamer.running() and s in archived(repo_dir, name))
    finally:
        code = streamer.stop(signal.SIGTERM)
    assert code == Exit.TERMINATED, streamer.log.read_text()
    names = archived(repo_dir, name)
    numbers = [segno(n) for n in names]
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), names
    assert names[0] == before_restart[0] and "GAP" not in streamer.log.read_text()

    # the segments carry the server's clock: `list` shows the window, a target past it fails
    # now (exit 2, naming the window) instead of when the restored server starts
    listed = run_json("list", "-r", repo, env=env)["backups"]
    window = next(r["recoverable_window"] for r in listed if r["target"] == name)
    assert window["from"] is not None and window["to"] is not None, window
    assert datetime.fromisoformat(window["to"]) >= marks[5][0], (window, marks[5])
    later = datetime.fromisoformat(window["to"]) + timedelta(minutes=5)
    past = run("restore", "-r", repo, "--from", name, "--data-dir", str(scratch / "past"),
               "--to-time", later.isoformat(), env=env, ok=False)
    assert past.exit_code == Exit.USAGE and "after the end of the recoverable window" in \
        past.output and window["to"] in past.output, past.output
    beyond = run("restore", "-r", repo, "--from", name, "--data-dir", str(scratch / "beyond"),
                 "--to-lsn", "FF/0", env=env, ok=False)
    assert beyond.exit_code == Exit.USAGE and "past the end of the WAL archive" in \
        beyond.output, beyond.output
    assert not (scratch / "past").exists() and not (scratch / "beyond").exists()

    fetched = scratch / "fetched"
    run("wal", "fetch", "-r", repo, "--name", name, names[-1], str(fetched), env=env)
    assert fetched.stat().st_size == 16 * 2**20
    missing = run("wal", "fetch", "-r", repo, "--name", name, "00000001000000FF000000FF",
                  str(scratch / "no"), env=env, ok=False)
    assert missing.exit_code == Exit.NOT_FOUND and not (scratch / "no").exists()

    let_restored_servers_fetch(scratch, monkeypatch)  # they fetch as the test user
    for batch_no in (2, 6):  # before the kill; after it (across the restart)
        when = marks[batch_no - 1][0]
        where = scratch / f"pitr{batch_no}"
        out = run_json("restore", "-r", repo, "--from", name, "--data-dir", str(where),
                       "--to-time", when.isoformat(), env=env)
        assert " wal fetch " in out["recovery"]["restore_command"]
        restored = Restored(pg, where)
        try:
            wait_until(lambda r=restored: r.psql("SELECT pg_is_in_recovery()", "postgres")
                       == "f", what="promotion", timeout=180,
                       log=where.parent / f"{where.name}.log")
            assert rows(restored, db) == list(range(1, batch_no + 1))
        finally:
            restored.stop()

    # a tampered segment is refused by the fetch (exit 4): recovery ends short of the target,
    # and PostgreSQL refuses to open rather than promote at an earlier point
    holding = pg.psql(f"SELECT pg_walfile_name('{marks[5][1]}')")
    data = next(repo_dir.rglob(f"{holding}/data"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 1
    data.write_bytes(bytes(raw))
    where = scratch / "tampered"
    run_json("restore", "-r", repo, "--from", name, "--data-dir", str(where), "--to-time",
             marks[5][0].isoformat(), env=env)
    log = where.parent / f"{where.name}.log"
    with contextlib.suppress(ServerError):  # stopped before it took a connection: as good
        Restored(pg, where).server.proc.wait(timeout=180)
    text = log.read_text()
    assert "recovery ended before configured recovery target was reached" in text, text
    assert f"log segment {name}/wal/00000001/{holding}" in text, text
    assert (where / "recovery.signal").exists()  # never promoted
    pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
