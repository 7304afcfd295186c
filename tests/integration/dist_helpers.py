"""What the distribution tests share: the offline wheelhouse, safehold's wheel, and a smoke test
(version, SQLite backup and restore) run with an installed `safehold` command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from safehold import __version__
from tests.integration.cli_helpers import dump, make_db

ROOT = Path(__file__).resolve().parents[2]


def wheelhouse() -> Path:
    """.cache/wheelhouse (made by `make wheelhouse`, which `make test` runs first)."""
    out = subprocess.run(["bash", str(ROOT / "scripts/wheelhouse.sh"), sys.executable],
                         capture_output=True, text=True)
    assert out.returncode == 0, f"scripts/wheelhouse.sh failed:\n{out.stderr}"
    return Path(out.stdout.strip())


def offline_env(home: Path, *find_links: Path) -> dict[str, str]:
    """An environment whose installer reaches no index, only the given wheel directories:
    pip's settings, and uv's for a pipx that installs with uv (recent pipx does when uv is
    installed, as it is beside pipx in our venv)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PIPX_", "UV_", "SAFEHOLD_", "XDG_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PIP_NO_INDEX="1",
               PIP_FIND_LINKS=" ".join(str(p) for p in find_links),
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1",
               UV_NO_INDEX="1", UV_OFFLINE="1", UV_NO_CACHE="1")
    if find_links:  # uv splits on commas, pip on spaces
        env["UV_FIND_LINKS"] = ",".join(str(p) for p in find_links)
    return env


def build_wheel(out: Path, version: str = __version__) -> Path:
    """safehold's wheel, built offline (setuptools from the wheelhouse) into ``out``; with
    another ``version``, from a copy of the sources that says so."""
    out.mkdir(parents=True, exist_ok=True)
    source = ROOT
    if version != __version__:
        source = out / f"src-{version}"
        shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
            ".venv", ".cache", ".git", "tests", "e2e", "bench", "charts", "*.egg-info",
            "build", "dist", "__pycache__", ".*_cache"))
        for rel, pattern in (("pyproject.toml", r'^version = ".*"$'),
                             ("operator/safehold/__init__.py", r'^__version__ = ".*"$')):
            path = source / rel
            text, n = re.subn(pattern, pattern.split(" = ")[0].lstrip("^")
                              + f' = "{version}"', path.read_text(), count=1, flags=re.M)
            assert n == 1, rel
            path.write_text(text)
    env = offline_env(out, wheelhouse())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(source)], env=env, check=True, cwd=out)
    wheels = list(out.glob(f"safehold-{version}-*.whl"))
    assert len(wheels) == 1, wheels
    if source != ROOT:
        shutil.rmtree(source)
    return wheels[0]


def sh(*args: str | Path, env: dict[str, str], ok: bool = True,
       timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if ok:
        assert proc.returncode == 0, f"{args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def smoke(safehold: Path | str, work: Path, env: dict[str, str],
          version: str = __version__) -> str:
    """`safehold --version`, then an encrypted SQLite backup and a restore with it; the
    restored database must hold what the original did. Returns a summary line."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "safehold.yaml"
    config.write_text("{}\n")
    env = {**env, "SAFEHOLD_CONFIG": str(config), "SAFEHOLD_LOG__LEVEL": "warning"}
    out = sh(safehold, "--version", env=env).stdout.strip()
    assert out == f"safehold, version {version}", out
    db, restored = work / "app.db", work / "restored.db"
    make_db(db, rows=500)
    key = work / "key"
    sh(safehold, "keys", "generate", "--out", key, env=env)
    repo = (work / "repo").as_uri()
    backup = json.loads(sh(safehold, "backup", "-t", "sqlite" + db.as_uri()[4:], "-r", repo,
                           "--key-file", key, "-c", "zstd", "-o", "json", env=env).stdout)
    assert backup["engine"] == "sqlite" and backup["encryption"] == "aes-256-gcm", backup
    sh(safehold, "restore", "-r", repo, "-b", "latest", "--from", "app", "-t",
       "sqlite" + restored.as_uri()[4:], "--key-file", key, env=env)
    assert dump(restored) == dump(db), "the restored database differs from the original"
    return (f"{out}; backup {backup['backup_id']} {backup['raw_bytes']} B raw ->"
            f" {backup['stored_bytes']} B stored; restore equal ({len(dump(db))} SQL lines)")
