"""The CLI's SQLite, local-storage, config and audit paths end to end, written to run on Linux,
macOS and Windows alike (marker `portable`): URLs from ``Path.as_uri()``, no mode bits, no
signals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cli_helpers import dump, make_db, run, run_json

pytestmark = pytest.mark.portable


def sqlite_url(path: Path) -> str:
    return "sqlite" + path.as_uri()[len("file"):]  # sqlite:///C:/... on Windows


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "conf dir" / "safehold.yaml"
    run("config", "init", str(config))  # written as UTF-8, atomically
    return {"SAFEHOLD_CONFIG": str(config), "SAFEHOLD_KEY_FILE": "", "SAFEHOLD_KEY": "",
            "SAFEHOLD_PASSPHRASE": "",
            "SAFEHOLD_AUDIT__FILE": str(tmp_path / "state" / "audit.jsonl")}


def test_backup_chain_restore_and_audit(tmp_path: Path, env: dict[str, str]) -> None:
    db = tmp_path / "data ü" / "app.db"
    db.parent.mkdir()
    make_db(db, rows=300)
    repo = (tmp_path / "repo dir").as_uri()
    key = tmp_path / "key"
    run("keys", "generate", "--out", str(key), env=env)
    full = run_json("backup", "-t", sqlite_url(db), "-r", repo, "--key-file", str(key),
                    "-c", "zstd", env=env)
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO t0 VALUES (100000, 'new', x'00')")
    incr = run_json("backup", "-t", sqlite_url(db), "-r", repo, "--key-file", str(key),
                    "--type", "incremental", env=env)
    assert incr["parent_id"] == full["backup_id"]
    assert run_json("verify", "-r", repo, "--key-file", str(key), env=env)["ok"] is True

    restored = tmp_path / "restored" / "app.db"
    restored.parent.mkdir()
    run("restore", "-r", repo, "-b", "latest", "--from", "app", "-t", sqlite_url(restored),
        "--key-file", str(key), env=env)
    assert dump(restored) == dump(db)
    # restoring over it again replaces it in one rename
    run("restore", "-r", repo, "-b", full["backup_id"], "--from", "app", "-t",
        sqlite_url(restored), "--key-file", str(key), "--yes", "--conflict", "replace", env=env)
    assert len(dump(restored)) == len(dump(db)) - 1

    audit = run_json("audit", "verify", env=env)
    assert audit["ok"] is True and audit["records"] >= 3
    lines = Path(env["SAFEHOLD_AUDIT__FILE"]).read_bytes().split(b"\n")
    assert all(not line.endswith(b"\r") for line in lines)  # binary: no \r\n on Windows
    assert all(json.loads(line) for line in lines if line)


def test_config_validate_and_show_read_utf8(tmp_path: Path, env: dict[str, str]) -> None:
    config = Path(env["SAFEHOLD_CONFIG"])
    db = tmp_path / "bäckup" / "app.db"
    env = {k: v for k, v in env.items() if k != "SAFEHOLD_AUDIT__FILE"}
    config.write_text(f"# Sicherung für app — ünïcödé\ntargets:\n  app:\n"
                      f"    url: {sqlite_url(db)}\naudit:\n"
                      f"  file: {json.dumps(str(db.parent / 'audit.jsonl'))}\n",
                      encoding="utf-8")
    assert run_json("config", "validate", env=env)["ok"] is True
    shown = run_json("config", "show", env=env)
    assert "bäckup" in json.dumps(shown, ensure_ascii=False)
