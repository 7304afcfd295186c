"""helm (installed by scripts/infra/40-kube.sh into .cache/bin) and the chart under test."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.infra.procs import CACHE, REPO, unavailable

CHART = REPO / "charts" / "safehold"


def helm_binary() -> str:
    helm = CACHE / "bin" / "helm"
    if not helm.exists():
        unavailable("helm", f"{helm} is missing (scripts/infra/40-kube.sh installs it)")
    return str(helm)


def helm(*argv: str, env: dict[str, str] | None = None, input: str | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run helm; the caller checks the return code (the tests assert on failures too)."""
    return subprocess.run([helm_binary(), *argv], capture_output=True, text=True, input=input,
                          timeout=timeout, check=False, env=env)


def render(*args: str, chart: Path = CHART, namespace: str = "safehold",
           kube_version: str | None = None) -> list[dict[str, Any]]:
    """``helm template`` of the chart with extra ``args`` (e.g. ``--set k=v``): the documents."""
    extra = ["--kube-version", kube_version] if kube_version else []
    res = helm("template", "safehold", str(chart), "--namespace", namespace, *extra, *args)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]
