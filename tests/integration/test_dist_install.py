"""scripts/install.sh in a throw-away HOME, against a local wheel directory (no index, no
internet): the venv method and the pipx method, idempotence, --version up and down, a failed
install that leaves the working one alone, uninstall."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from safehold import __version__
from tests.integration.dist_helpers import ROOT, build_wheel, offline_env, sh, smoke, wheelhouse

INSTALL = ROOT / "scripts" / "install.sh"
NEXT = "99.0.1"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with safehold's wheel at this version and at a later one."""
    out = tmp_path_factory.mktemp("wheels")
    build_wheel(out)
    build_wheel(out, NEXT)
    return out


def env_for(tmp_path: Path, wheels: Path, *, pipx: bool) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = offline_env(home, wheelhouse())
    tools = tmp_path / "tools"  # python3 (and pipx, when wanted) and nothing else of the venv
    tools.mkdir(exist_ok=True)
    (tools / "python3").unlink(missing_ok=True)
    (tools / "python3").symlink_to(sys.base_prefix + "/bin/python3")
    if pipx:
        (tools / "pipx").write_text(f"#!/bin/sh\nexec {sys.executable} -m pipx \"$@\"\n")
        (tools / "pipx").chmod(0o755)
        env.update(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(home / ".local/bin"),
                   PIPX_MAN_DIR=str(tmp_path / "man"), USE_EMOJI="0")
    env["PATH"] = f"{tools}:/usr/bin:/bin"
    return env


def install(env: dict[str, str], wheels: Path, *args: str, ok: bool = True):
    # Both wheel directories on the command line: uv (pipx's installer when uv is present)
    # takes --find-links instead of UV_FIND_LINKS, where pip adds them together.
    return sh("bash", INSTALL, "--find-links", wheels, "--find-links", wheelhouse(), *args,
              env=env, ok=ok)


def test_venv_method_install_rerun_change_and_uninstall(tmp_path: Path, wheels: Path) -> None:
    env = env_for(tmp_path, wheels, pipx=False)
    home = Path(env["HOME"])
    link = home / ".local/bin/safehold"
    data = home / ".local/share/safehold"

    out = install(env, wheels, "--version", __version__)  # auto: no pipx on PATH -> venv
    assert f"installed safehold {__version__}" in out.stderr, out.stderr
    assert "add " in out.stderr and "to PATH" in out.stderr  # ~/.local/bin is not on PATH
    assert link.is_symlink() and os.readlink(link).startswith(str(data))
    print(f"install.sh venv: {smoke(link, tmp_path / 'work', env)}")
    first = os.path.realpath(data / "current")

    again = install(env, wheels)  # idempotent: nothing changes
    assert "nothing to do" in again.stderr and os.path.realpath(data / "current") == first

    up = install(env, wheels, "--version", NEXT)
    assert f"installed safehold {NEXT}" in up.stderr
    assert sh(link, "--version", env=env).stdout.strip() == f"safehold, version {NEXT}"
    assert not Path(first).exists()  # the old environment is gone, not left to pile up
    assert [p.name for p in data.iterdir() if p.name.startswith("venv-")] == \
        [Path(os.path.realpath(data / "current")).name]

    missing = install(env, wheels, "--version", "98.0.0", ok=False)  # not in the wheel dir
    assert missing.returncode == 2 and "pip could not install safehold[runner]==98.0.0" \
        in missing.stderr and "unchanged" in missing.stderr
    assert sh(link, "--version", env=env).stdout.strip() == f"safehold, version {NEXT}"
    assert [p.name for p in data.iterdir() if p.name.startswith("venv-")] == \
        [Path(os.path.realpath(data / "current")).name]  # the failed attempt left nothing

    down = install(env, wheels, "--version", __version__)
    assert f"installed safehold {__version__}" in down.stderr

    gone = sh("bash", INSTALL, "--uninstall", env=env)
    assert "uninstalled" in gone.stderr and not link.exists() and not data.exists()
    assert "not installed" in sh("bash", INSTALL, "--uninstall", env=env).stderr


def test_pipx_method_when_pipx_is_on_path(tmp_path: Path, wheels: Path) -> None:
    env = env_for(tmp_path, wheels, pipx=True)
    link = Path(env["HOME"]) / ".local/bin/safehold"
    out = install(env, wheels, "--version", __version__)
    assert "with pipx" in out.stderr, out.stderr
    assert sh(link, "--version", env=env).stdout.strip() == f"safehold, version {__version__}"
    assert "nothing to do" in install(env, wheels).stderr
    install(env, wheels, "--version", NEXT)
    assert sh(link, "--version", env=env).stdout.strip() == f"safehold, version {NEXT}"
    sh("bash", INSTALL, "--uninstall", env=env)
    assert not link.exists()
    assert not (Path(env["HOME"]) / ".local/share/safehold").exists()


@pytest.mark.parametrize(("args", "says"), [
    (["--version"], "--version needs a value"),
    (["--version", "latest; rm -rf /"], "is not a release version"),
    (["--method", "conda"], "--method must be auto, pipx or venv"),
    (["--method", "pipx"], "pipx is not on PATH"),
    (["--python", "/nonexistent/python"], "needs Python 3.11 or newer"),
    (["--frobnicate"], "unknown argument '--frobnicate'"),
])
def test_bad_arguments_are_named(tmp_path: Path, wheels: Path, args: list[str],
                                 says: str) -> None:
    env = env_for(tmp_path, wheels, pipx=False)
    proc = sh("bash", INSTALL, *args, env=env, ok=False)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert not (Path(env["HOME"]) / ".local").exists()


def test_a_foreign_safehold_on_the_link_path_is_left_alone(tmp_path: Path,
                                                           wheels: Path) -> None:
    env = env_for(tmp_path, wheels, pipx=False)
    foreign = Path(env["HOME"]) / ".local/bin/safehold"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\necho mine\n")
    proc = install(env, wheels, ok=False)
    assert proc.returncode == 2 and "is not this installer's" in proc.stderr
    assert foreign.read_text() == "#!/bin/sh\necho mine\n"
