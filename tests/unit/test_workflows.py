"""The GitHub Actions workflows (.github/workflows) pass actionlint, built here from the Go module
proxy (scripts/infra/80-actionlint.sh); `make lint` runs the same check. The workflows themselves
do not run on this machine (docs/testing.md, "CI workflows")."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.infra.procs import CACHE, REPO, unavailable

WORKFLOWS = REPO / ".github" / "workflows"


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    binary = CACHE / "bin" / "actionlint"
    if not binary.exists():
        unavailable("actionlint", f"{binary} is missing (scripts/infra/80-actionlint.sh)")
    return subprocess.run([str(binary), "-shellcheck=", "-pyflakes=", *map(str, paths)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_workflows_pass_actionlint() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.stem for f in files} >= {"lint", "unit", "audit", "e2e-kind"}, files
    res = actionlint(*files)
    assert res.returncode == 0, res.stdout + res.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
                   "      - run: echo ${{ matrix.nope }}\n      - uses: actions/checkout\n")
    res = actionlint(bad)
    assert res.returncode == 1, res
    assert "matrix" in res.stdout and "actions/checkout" in res.stdout, res.stdout
