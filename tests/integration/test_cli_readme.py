"""The README's quick start works as written after `make install` (only the paths are moved)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.cli_helpers import make_db

ROOT = Path(__file__).resolve().parents[2]


def quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Quick start (CLI)"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the quick start has no ```sh block"
    return block.group(1)


def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    script = quick_start()
    assert ". .venv/bin/activate" in script  # says how safehold gets on PATH
    db, repo = tmp_path / "app.db", tmp_path / "backups"
    make_db(db, rows=50)
    script = script.replace("/var/lib/app.db", str(db)).replace("/var/backups/safehold",
                                                                   str(repo))
    venv = Path(sys.executable).parent.parent  # the venv the tests run in
    script = script.replace(". .venv/bin/activate", f". {venv}/bin/activate")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    env.update(HOME=str(tmp_path), PATH="/usr/bin:/bin", SAFEHOLD_CONFIG=str(tmp_path / "c.yaml"))
    (tmp_path / "c.yaml").write_text("{}\n")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "would delete" in proc.stdout or "keep" in proc.stdout  # the prune --dry-run ran
    assert (tmp_path / ".safehold.key").exists()
