"""Physical PostgreSQL backups against real servers (15 and 18): base backups streamed through
the pipeline, restored into new data directories that the same major's server starts, with
every table's rows matching; block-level incremental/differential chains on 18; refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safehold.cli.errors import Exit
from tests.infra.postgres import PASSWORD, SUPERUSER, Postgres
from tests.infra.procs import Server, as_test_user, chown_test_user, free_port
from tests.integration.cli_helpers import run, run_json

TABLES = ("orders", "items")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An encrypted repository (a fresh key), no developer config."""
    (tmp_path / "safehold.yaml").write_text("{}\n")
    base = {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY": "",
            "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_KEY_FILE": "", "PGPASSWORD": "",
            "SAFEHOLD_PASSWORD": PASSWORD, "SAFEHOLD_NO_ENCRYPTION": ""}
    run("keys", "generate", "--out", str(tmp_path / "kek"), env=base)
    return {**base, "SAFEHOLD_KEY_FILE": str(tmp_path / "kek")}


@pytest.fixture
def scratch() -> Iterator[Path]:
    """Where restored data directories go: reachable by the test user their server runs as."""
    path = Path(tempfile.mkdtemp(prefix="safehold-physical-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def database(pg_server: Postgres) -> Iterator[str]:
    name = f"p_{uuid.uuid4().hex[:10]}"
    pg_server.psql(f'CREATE DATABASE "{name}"')
    for t in TABLES:
        pg_server.psql(f"CREATE TABLE {t} (id int PRIMARY KEY, note text)", db=name)
    yield name
    pg_server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def url(pg: Postgres, db: str) -> str:
    return f"postgresql://{SUPERUSER}@{pg.host}:{pg.port}/{db}"


def write(pg: Postgres, db: str, start: int, n: int, tag: str) -> None:
    for t in TABLES:
        pg.psql(f"INSERT INTO {t} SELECT g, '{tag}-' || g FROM generate_series({start},"
                f" {start + n - 1}) g", db=db)
    pg.psql(f"UPDATE items SET note = note || '+{tag}' WHERE id % 7 = 0", db=db)


FINGERPRINT = ("SELECT count(*) || ':' || coalesce(md5(string_agg(id || '=' || note, ','"
               " ORDER BY id)), '-') FROM {}")


def fingerprint(psql: Any, db: str) -> dict[str, str]:
    """Per table: row count and a checksum of every row."""
    return {t: psql(FINGERPRINT.format(t), db) for t in TABLES}


class Restored:
    """A restored data directory started with the same major's server (as the test user)."""

    def __init__(self, pg: Postgres, data_dir: Path) -> None:
        self.pg, self.port = pg, free_port()
        chown_test_user(data_dir)
        self.server = Server(
            f"restored postgres {pg.major}",
            as_test_user([pg.tool("postgres"), "-D", str(data_dir), "-p", str(self.port),
                          "-c", "listen_addresses=127.0.0.1",
                          "-c", f"unix_socket_directories={data_dir}"]),
            log=data_dir.parent / f"{data_dir.name}.log")
        self.server.wait_ready(self._ready, timeout=120)

    def _ready(self) -> bool:
        try:
            self.psql("SELECT 1", "postgres")
        except Exception:
            return False
        return True

    def psql(self, sql: str, db: str) -> str:
        out = subprocess.run(
            [self.pg.tool("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", SUPERUSER, "-d", db, "-c", sql],
            capture_output=True, text=True, env={"PGPASSWORD": PASSWORD}, check=True)
        return out.stdout.strip()

    def stop(self) -> None:
        self.server.stop()


def restore_and_read(pg: Postgres, repo: Path, backup_id: str, where: Path, db: str,
                     env: dict[str, str]) -> dict[str, str]:
    out = run_json("restore", "-r", f"file://{repo}", "-b", backup_id, "--data-dir", str(where),
                   env=env)
    assert out["data_dir"] == str(where)
    restored = Restored(pg, where)
    try:
        return fingerprint(restored.psql, db)
    finally:
        restored.stop()
        shutil.rmtree(where, ignore_errors=True)


def backup(pg: Postgres, db: str, repo: Path, env: dict[str, str], *extra: str) -> Any:
    return run_json("backup", "-t", url(pg, db), "-r", f"file://{repo}", "--name", "main",
                    "--method", "physical", *extra, env=env)


def stored_manifest(repo: Path, backup_id: str) -> dict[str, Any]:
    path = next(repo.rglob(f"{backup_id}/manifest.json"))
    return json.loads(path.read_text())


def test_physical_full_restores_into_a_new_data_dir(pg_server: Postgres, database: str,
                                                    tmp_path: Path, scratch: Path,
                                                    env: dict[str, str]) -> None:
    pg, repo = pg_server, tmp_path / "repo"
    write(pg, database, 1, 500, "a")
    expected = fingerprint(lambda sql, db: pg.psql(sql, db=db), database)
    full = backup(pg, database, repo, env)
    write(pg, database, 1000, 50, "late")  # after the backup: must not come back

    assert full["method"] == "physical" and full["encryption"] == "aes-256-gcm"
    m = stored_manifest(repo, full["backup_id"])
    sysid = pg.psql("SELECT system_identifier FROM pg_control_system()")
    assert m["engine_meta"]["system_identifier"] == sysid
    assert m["engine_meta"]["pg_major"] == pg.major
    assert m["start_position"]["timeline"] == m["end_position"]["timeline"] == "1"
    assert m["start_position"]["lsn"] <= m["end_position"]["lsn"]
    assert {o["name"] for o in m["objects"]} == {"base.tar", "backup_manifest"}

    got = restore_and_read(pg, repo, full["backup_id"], scratch / "restored", database, env)
    assert got == expected
    assert got["orders"].startswith("500:")


def test_refusals_say_what_to_run(pg_server: Postgres, database: str, tmp_path: Path,
                                  env: dict[str, str]) -> None:
    pg, repo = pg_server, tmp_path / "repo"
    write(pg, database, 1, 20, "a")
    run("backup", "-t", url(pg, database), "-r", f"file://{repo}", "--name", "main", env=env)
    logical_incr = run("backup", "-t", url(pg, database), "-r", f"file://{repo}", "--name", "main",
                       "--type", "incremental", env=env, ok=False)
    assert logical_incr.exit_code == Exit.UNSUPPORTED
    assert "--method physical" in logical_incr.output

    full = backup(pg, database, repo, env)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "PG_VERSION").write_text("mine\n")
    refused = run("restore", "-r", f"file://{repo}", "-b", full["backup_id"], "--data-dir",
                  str(busy), env=env, ok=False)
    assert refused.exit_code == Exit.CONFLICT and "not an empty directory" in refused.output
    assert [p.name for p in busy.iterdir()] == ["PG_VERSION"]
    assert not list(tmp_path.glob(".busy.safehold-*"))

    into_db = run("restore", "-r", f"file://{repo}", "-b", full["backup_id"], "-t",
                  url(pg, database), "--yes", env=env, ok=False)
    assert into_db.exit_code == Exit.UNSUPPORTED and "--data-dir" in into_db.output

    if pg.major < 17:
        res = run("backup", "-t", url(pg, database), "-r", f"file://{repo}", "--name", "main",
                  "--method", "physical", "--type", "differential", env=env, ok=False)
        assert res.exit_code == Exit.UNSUPPORTED and "PostgreSQL 17" in res.output


def test_block_level_chain_on_18(pg18: Postgres, tmp_path: Path, scratch: Path,
                                 env: dict[str, str]) -> None:
    pg, repo, db = pg18, tmp_path / "repo", f"c_{uuid.uuid4().hex[:10]}"
    pg.psql("ALTER SYSTEM SET summarize_wal = off")
    pg.psql("SELECT pg_reload_conf()")
    pg.psql(f'CREATE DATABASE "{db}"')
    for t in TABLES:
        pg.psql(f"CREATE TABLE {t} (id int PRIMARY KEY, note text)", db=db)
    try:
        backup(pg, db, repo, env)  # a full while summarize_wal is off
        checked = run("check", "-t", url(pg, db), "--method", "physical", env=env, ok=False)
        assert checked.exit_code == Exit.DATABASE and "summarize_wal is off" in checked.output
        pg.psql("CREATE ROLE plain LOGIN PASSWORD 'postgres'")
        try:
            plain = run("check", "-t", url(pg, db).replace(f"{SUPERUSER}@", "plain@"),
                        "--method", "physical", env=env, ok=False)
            assert "lacks REPLICATION" in plain.output
        finally:
            pg.psql("DROP ROLE plain")
        off = run("backup", "-t", url(pg, db), "-r", f"file://{repo}", "--name", "main",
                  "--method", "physical", "--type", "incremental", env=env, ok=False)
        assert off.exit_code == Exit.UNSUPPORTED and "summarize_wal" in off.output
        pg.psql("ALTER SYSTEM SET summarize_wal = on")
        pg.psql("ALTER SYSTEM SET max_slot_wal_keep_size = '4GB'")
        pg.psql("SELECT pg_reload_conf()")
        run("check", "-t", url(pg, db), "--method", "physical", env=env)
        early = run("backup", "-t", url(pg, db), "-r", f"file://{repo}", "--name", "main",
                    "--method", "physical", "--type", "incremental", env=env, ok=False)
        assert early.exit_code == Exit.UNSUPPORTED
        assert "taken while summarize_wal was off" in early.output

        expected: dict[str, dict[str, str]] = {}
        ids: dict[str, str] = {}
        for step, kind in enumerate(["full", "incremental", "incremental", "differential"]):
            write(pg, db, step * 1000 + 1, 200 + step, f"s{step}")
            out = backup(pg, db, repo, env, "--type", kind)
            assert out["type"] == kind
            ids[f"{step}-{kind}"] = out["backup_id"]
            expected[f"{step}-{kind}"] = fingerprint(lambda sql, d: pg.psql(sql, db=d), db)
        m_incr2 = stored_manifest(repo, ids["2-incremental"])
        m_diff = stored_manifest(repo, ids["3-differential"])
        assert m_incr2["parent_id"] == ids["1-incremental"]
        assert m_incr2["chain_id"] == m_diff["parent_id"] == ids["0-full"]
        # block-level: an incremental stores far less than the full it builds on
        sizes = {k: stored_manifest(repo, v)["objects"] for k, v in ids.items()}
        assert sum(o["raw_size"] for o in sizes["1-incremental"]) < \
            sum(o["raw_size"] for o in sizes["0-full"]) / 2

        for key, backup_id in ids.items():
            got = restore_and_read(pg, repo, backup_id, scratch / f"r{key}", db, env)
            assert got == expected[key], key

        # a missing parent is found before anything is written
        parent_dir = next(repo.rglob(f"{ids['1-incremental']}/manifest.json")).parent
        (parent_dir / "manifest.json").unlink()
        broken = run("restore", "-r", f"file://{repo}", "-b", ids["2-incremental"], "--data-dir",
                     str(tmp_path / "broken"), env=env, ok=False)
        assert broken.exit_code == Exit.CORRUPT
        assert ids["1-incremental"] in broken.output and "missing" in broken.output
        assert not (tmp_path / "broken").exists()
    finally:
        pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_a_damaged_base_backup_leaves_nothing_behind(pg18: Postgres, tmp_path: Path,
                                                     scratch: Path, env: dict[str, str]) -> None:
    pg, repo, db = pg18, tmp_path / "repo", f"d_{uuid.uuid4().hex[:10]}"
    pg.psql(f'CREATE DATABASE "{db}"')
    try:
        full = backup(pg, db, repo, env, "--chunk-size", "64KiB")
        base = repo / "main" / full["backup_id"] / "data" / "base.tar"
        stored = sorted((p for p in base.parent.rglob("*") if p.is_file()),
                        key=lambda p: p.stat().st_size)[-1]  # a chunk of base.tar
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0x01
        stored.write_bytes(bytes(data))
        where = scratch / "damaged"
        res = run("restore", "-r", f"file://{repo}", "-b", full["backup_id"], "--data-dir",
                  str(where), env=env, ok=False)
        assert res.exit_code == Exit.CORRUPT, res.output
        assert not where.exists()
        assert list(scratch.iterdir()) == [], "the staging directory was left behind"
    finally:
        pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
