"""The Argo CD health checks (deploy/argocd/health/<Kind>.lua) run by a real Lua interpreter
(Debian's lua5.4, scripts/infra/70-lua.sh) against sample objects of every kind in every phase
(deploy/argocd/health/testdata/<Kind>.yaml), the way Argo CD runs them: a global ``obj``, the
script's returned ``{status, message}``. The argocd-cm snippet must carry the same scripts."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.infra.procs import REPO, unavailable

HEALTH = REPO / "deploy" / "argocd" / "health"
KINDS = ("Backup", "Restore", "BackupTarget", "BackupSchedule")
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def lua_literal(value: Any) -> str:
    """A Lua table constructor for a JSON-like value (what Argo CD hands its scripts)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(str(k))}] = {lua_literal(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # Lua reads JSON's string escapes here


def lua() -> str:
    found = shutil.which("lua5.4") or shutil.which("lua")
    if not found:
        unavailable("lua5.4", "no Lua interpreter (scripts/infra/70-lua.sh installs lua5.4)")
    return str(found)


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    script = (HEALTH / f"{kind}.lua").read_text()
    program = (f"obj = {lua_literal(obj)}\nlocal function check()\n{script}\nend\n"
               'local hs = check()\nio.write(hs.status, "\\n", hs.message or "")\n')
    res = subprocess.run([lua(), "-"], input=program, capture_output=True, text=True,
                         timeout=30, check=False)
    assert res.returncode == 0, f"{kind}.lua failed: {res.stderr}"
    status, _, message = res.stdout.partition("\n")
    return status, message


def cases() -> list[Any]:
    out = []
    for kind in KINDS:
        for case in yaml.safe_load((HEALTH / "testdata" / f"{kind}.yaml").read_text()):
            out.append(pytest.param(kind, case, id=f"{kind}-{case['case']}"))
    return out


@pytest.mark.parametrize(("kind", "case"), cases())
def test_health(kind: str, case: dict[str, Any]) -> None:
    status, message = health(kind, case["object"])
    assert status in ARGO_STATUSES
    assert (status, case["message"] in message) == (case["health"], True), (status, message)


def test_every_phase_has_a_sample() -> None:
    from safehold.api.backup import BackupPhase
    from safehold.api.restore import RestorePhase

    for kind, phases in (("Backup", BackupPhase), ("Restore", RestorePhase)):
        samples = yaml.safe_load((HEALTH / "testdata" / f"{kind}.yaml").read_text())
        seen = {(c["object"].get("status") or {}).get("phase") for c in samples}
        missing = set(phases.__args__) - seen
        assert not missing, f"no {kind} sample in phase {sorted(missing)}"
    for kind in KINDS:
        samples = yaml.safe_load((HEALTH / "testdata" / f"{kind}.yaml").read_text())
        assert {"Healthy", "Progressing"} <= {c["health"] for c in samples}, kind


def test_a_broken_script_fails_the_interpreter(tmp_path: Any) -> None:
    """The harness really runs Lua: a syntax error is not read as some status."""
    res = subprocess.run([lua(), "-"], input="obj = {}\nlocal hs = {status = \n",
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode != 0


def test_argocd_cm_carries_the_same_scripts() -> None:
    cm = yaml.safe_load((REPO / "deploy" / "argocd" / "argocd-cm.yaml").read_text())
    for kind in KINDS:
        key = f"resource.customizations.health.safehold.dev_{kind}"
        assert cm["data"].get(key) == (HEALTH / f"{kind}.lua").read_text(), (
            f"{key} in deploy/argocd/argocd-cm.yaml is stale: run `make argocd`")


def test_example_application_renders_with_the_chart() -> None:
    """The example Application points at this chart, with values the chart accepts."""
    from tests.infra.helm import helm

    apps = list(yaml.safe_load_all((REPO / "deploy" / "argocd" / "application.yaml").read_text()))
    (chart_app,) = [a for a in apps if a["spec"]["source"].get("path") == "charts/safehold"]
    assert (REPO / chart_app["spec"]["source"]["path"] / "Chart.yaml").is_file()
    values = yaml.safe_dump(chart_app["spec"]["source"]["helm"]["valuesObject"])
    res = helm("template", "safehold", str(REPO / "charts" / "safehold"), "-f", "-",
               "--namespace", chart_app["spec"]["destination"]["namespace"], input=values)
    assert res.returncode == 0, res.stderr
    labels = chart_app["spec"]["syncPolicy"]["managedNamespaceMetadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
