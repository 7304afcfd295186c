"""The one-file executable (scripts/build-exe.sh, `make exe`): built, then smoke-tested with
nothing but itself — version, an encrypted SQLite backup and restore, scheduled backups (the
daemon and `schedule run-now` start the executable itself for each backup and prune), a clear
error for what it leaves out."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cli_helpers import dump, make_db
from tests.integration.dist_helpers import ROOT, offline_env, sh, smoke


@pytest.fixture(scope="module")
def exe() -> Path:
    """The cached executable (built on first use or when the sources changed)."""
    out = subprocess.run(["bash", str(ROOT / "scripts/build-exe.sh"), sys.executable],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-4000:]
    path = Path(out.stdout.strip())
    assert path.is_file() and os.access(path, os.X_OK)
    return path


def test_the_executable_backs_up_and_restores_sqlite(exe: Path, tmp_path: Path) -> None:
    # an environment without the venv: the executable carries its own interpreter
    env = offline_env(tmp_path / "home")
    env["PATH"] = "/usr/bin:/bin"
    summary = smoke(exe, tmp_path / "work", env)
    print(f"executable {exe}: {exe.stat().st_size / 2**20:.1f} MiB; {summary}")


def test_the_executable_runs_scheduled_backups_and_their_retention(exe: Path,
                                                                  tmp_path: Path) -> None:
    # the daemon and run-now start `safehold backup` and `safehold prune` as children: in the
    # executable that is the executable itself (no `-m safehold.cli`, no Python on PATH)
    work = tmp_path / "work"
    work.mkdir()
    (work / "safehold.yaml").write_text("{}\n")
    env = {**offline_env(tmp_path / "home"), "PATH": "/usr/bin:/bin",
           "SAFEHOLD_CONFIG": str(work / "safehold.yaml"), "SAFEHOLD_LOG__LEVEL": "warning",
           "SAFEHOLD_KEY_FILE": str(work / "key"),
           "SAFEHOLD_SCHEDULE_STORE": str(work / "state" / "schedules.db")}
    sh(exe, "keys", "generate", "--out", work / "key", env=env)
    db, restored = work / "app.db", work / "restored.db"
    make_db(db, rows=300)
    repo = (work / "repo").as_uri()
    sh(exe, "schedule", "add", "nightly", "-t", "sqlite" + db.as_uri()[4:], "-r", repo,
       "--full", "0 2 * * *", "--keep-last", "1",
       env={**env, "SAFEHOLD_NOW": "2026-12-01T12:00:00+00:00"})
    sh(exe, "daemon", "--once", env={**env, "SAFEHOLD_NOW": "2026-12-02T02:00:10+00:00"})

    def runs() -> list[dict[str, object]]:
        shown = json.loads(sh(exe, "schedule", "show", "nightly", "-o", "json", env=env).stdout)
        return list(shown["runs"])

    def backups() -> list[dict[str, object]]:
        return list(json.loads(sh(exe, "list", "-r", repo, "-o", "json", env=env).stdout)
                    ["backups"])

    first = runs()
    assert [(r["type"], r["outcome"], r["exit_code"]) for r in first] == [
        ("full", "success", 0)], first
    assert first[0]["note"] == "retention on app: 0 deleted", first
    assert len(backups()) == 1
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM t0 WHERE id % 3 = 0")
    sh(exe, "schedule", "run-now", "nightly", env=env)
    latest = runs()[0]
    assert (latest["outcome"], latest["note"]) == ("success", "retention on app: 1 deleted")
    assert len(backups()) == 1  # keep-last 1 pruned the daemon's backup
    sh(exe, "restore", "-r", repo, "-b", "latest", "--from", "app", "-t",
       "sqlite" + restored.as_uri()[4:], env=env)
    assert dump(restored) == dump(db), "the restored database differs from the original"


def test_the_executable_names_what_it_leaves_out(exe: Path, tmp_path: Path) -> None:
    env = {**offline_env(tmp_path), "SAFEHOLD_CONFIG": str(tmp_path / "none.yaml"),
           "SAFEHOLD_KEY_FILE": "", "SAFEHOLD_PASSPHRASE": ""}
    (tmp_path / "none.yaml").write_text("{}\n")
    proc = sh(exe, "backup", "-t", "postgresql://u@127.0.0.1:1/db", "-r",
              (tmp_path / "repo").as_uri(), "--no-encryption", env=env, ok=False)
    assert proc.returncode == 2, proc.stderr
    assert "cannot open postgresql:// URLs" in proc.stderr
    assert "pipx install 'safehold[runner]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_rebuild_with_unchanged_sources_is_skipped(exe: Path) -> None:
    before = exe.stat().st_mtime_ns
    out = subprocess.run(["bash", str(ROOT / "scripts/build-exe.sh"), sys.executable],
                         capture_output=True, text=True, timeout=600, check=True)
    assert "up to date" in out.stderr and exe.stat().st_mtime_ns == before
