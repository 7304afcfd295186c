"""The images' dependency locks, pinned with hashes (`make lock`), and their staleness check.

One lock per image, compiled by ``uv pip compile --generate-hashes`` for the images' Python
(Debian bookworm's 3.11, x86_64 Linux):

  images/runner/requirements.lock    pyproject.toml's dependencies + extra ``runner``, and
                                     images/runner/requirements.in (the PostgreSQL 18 client tools)
  images/operator/requirements.lock  pyproject.toml's dependencies + extra ``operator``
  images/build-requirements.lock     pyproject.toml's [build-system] requires (setuptools), to
                                     build Safehold's own wheel without fetching anything unpinned

Each lock's first line records a digest of its inputs (the requirement strings, the Python version
and platform); ``python scripts/lock.py --check`` (and tests/unit/test_image_locks.py) fails when
pyproject.toml or a requirements.in changed since the lock was written. The images install a lock
with ``pip install --require-hashes --no-deps``: a changed or substituted file fails the build.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON_VERSION = "3.11"  # Debian bookworm's python3.11, the images' interpreter
PYTHON_PLATFORM = "x86_64-manylinux_2_28"  # bookworm's glibc 2.36 runs manylinux_2_28 wheels
DIGEST_PREFIX = "# inputs-sha256: "


@dataclass(frozen=True)
class Lock:
    path: str  # the lock file, relative to the repository
    extra: str | None = None  # pyproject.toml's optional-dependencies[extra] (+ dependencies)
    requirements_in: str | None = None  # more requirements, one a line
    build_system: bool = False  # [build-system] requires instead of the project's dependencies


LOCKS = (
    Lock("images/runner/requirements.lock", extra="runner",
         requirements_in="images/runner/requirements.in"),
    Lock("images/operator/requirements.lock", extra="operator"),
    Lock("images/build-requirements.lock", build_system=True),
)


def _in_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def requirements(lock: Lock, repo: Path = REPO) -> list[str]:
    """The requirement strings a lock is compiled from, as written in its inputs."""
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    if lock.build_system:
        reqs = list(project["build-system"]["requires"])
    else:
        reqs = list(project["project"]["dependencies"])
        if lock.extra:
            reqs += project["project"]["optional-dependencies"][lock.extra]
    if lock.requirements_in:
        reqs += _in_lines(repo / lock.requirements_in)
    return reqs


def digest(lock: Lock, repo: Path = REPO) -> str:
    h = hashlib.sha256(f"v1\0{PYTHON_VERSION}\0{PYTHON_PLATFORM}\0".encode())
    for req in sorted(requirements(lock, repo)):
        h.update(req.encode() + b"\0")
    return h.hexdigest()


def recorded_digest(lock: Lock, repo: Path = REPO) -> str | None:
    path = repo / lock.path
    if not path.is_file():
        return None
    first = path.read_text().splitlines()[:1]
    return first[0].removeprefix(DIGEST_PREFIX) if first and first[0].startswith(
        DIGEST_PREFIX) else None


def stale(repo: Path = REPO) -> list[str]:
    """The locks whose inputs changed since `make lock` wrote them (or that are missing)."""
    return [lock.path for lock in LOCKS if recorded_digest(lock, repo) != digest(lock, repo)]


def compile_lock(lock: Lock, uv: str) -> None:
    out = REPO / lock.path
    sources: list[str] = []
    stdin = None
    argv = [uv, "pip", "compile", "--generate-hashes", "--no-header",
            "--python-version", PYTHON_VERSION, "--python-platform", PYTHON_PLATFORM]
    if lock.build_system:
        stdin = "\n".join(requirements(lock)) + "\n"  # [build-system] requires, on stdin
        sources.append("-")
    else:
        sources.append("pyproject.toml")
        if lock.extra:
            argv += ["--extra", lock.extra]
        if lock.requirements_in:
            sources.append(lock.requirements_in)
    try:
        body = subprocess.run([*argv, *sources], cwd=REPO, check=True, input=stdin,
                              capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as exc:
        sys.exit(f"uv pip compile for {lock.path} failed:\n{exc.stderr}")
    header = (f"{DIGEST_PREFIX}{digest(lock)}\n"
              f"# Written by `make lock` (scripts/lock.py) for Python {PYTHON_VERSION} on"
              f" {PYTHON_PLATFORM}; do not edit.\n")
    out.write_text(header + body)
    print(f"{lock.path}: {sum(1 for line in body.splitlines() if '==' in line)} pins")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        bad = stale()
        for path in bad:
            print(f"{path} is stale (pyproject.toml or its requirements.in changed):"
                  " run `make lock`", file=sys.stderr)
        return 1 if bad else 0
    uv = argv[0] if argv else "uv"
    for lock in LOCKS:
        compile_lock(lock, uv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
