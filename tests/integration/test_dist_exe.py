"""The one-file executable (scripts/build-exe.sh, `make exe`): built, then smoke-tested with
nothing but itself — version, an encrypted SQLite backup and restore, a clear error for what it
leaves out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
