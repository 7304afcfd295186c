"""`pipx install 'safehold[runner]'` of the built wheel, offline (the wheelhouse stands in for
the package index), in a throw-away PIPX_HOME; then the installed command backs up and restores
SQLite."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.integration.dist_helpers import build_wheel, offline_env, sh, smoke, wheelhouse

PIPX = [sys.executable, "-m", "pipx"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheels"))


def pipx_env(tmp_path: Path, wheel: Path) -> dict[str, str]:
    env = offline_env(tmp_path / "home", wheelhouse(), wheel.parent)
    env.update(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"),
               PIPX_MAN_DIR=str(tmp_path / "man"), USE_EMOJI="0")
    return env


def test_pipx_installs_the_wheel_with_the_runner_extra(tmp_path: Path, wheel: Path) -> None:
    env = pipx_env(tmp_path, wheel)
    sh(*PIPX, "install", f"{wheel}[runner]", env=env)
    safehold = tmp_path / "bin" / "safehold"
    assert safehold.exists(), list((tmp_path / "bin").iterdir())
    # the command runs from its own venv: nothing of the test's environment on PATH
    summary = smoke(safehold, tmp_path / "work", {**env, "PATH": "/usr/bin:/bin"})
    print(f"pipx: {summary}")
    listed = sh(*PIPX, "list", "--short", env=env).stdout
    assert listed.split()[:2] == ["safehold", wheel.name.split("-")[1]], listed
    sh(*PIPX, "uninstall", "safehold", env=env)
    assert not safehold.exists()


def test_without_the_runner_extra_the_command_says_which_extra(tmp_path: Path,
                                                               wheel: Path) -> None:
    """The bare package is the operator's and the contract's; the CLI needs [runner]."""
    env = pipx_env(tmp_path, wheel)
    sh(*PIPX, "install", str(wheel), env=env)
    proc = sh(tmp_path / "bin" / "safehold", "--version", env=env, ok=False)
    assert proc.returncode != 0
    assert "safehold[runner]" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    shutil.rmtree(tmp_path / "pipx")
