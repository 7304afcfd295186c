"""The sample manifests (docs/examples) and the kind mode's servers (e2e/kind/servers.yaml),
checked without a cluster: every placeholder is one the docs name and every mode fills, every
Safehold object parses with the API models (unknown fields refused, as the CRD schema does), every
other object is valid Kubernetes 1.34 (kubernetes-validate, strict). The e2e suite applies them
for real (e2e/test_examples.py); this catches drift in seconds, and covers the kind-only files
that never run here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from safehold.api.backup import Backup
from safehold.api.restore import Restore
from safehold.api.schedule import BackupSchedule
from safehold.api.target import BackupTarget
from tests.infra.procs import REPO

EXAMPLES = REPO / "docs" / "examples"
KIND_SERVERS = REPO / "e2e" / "kind" / "servers.yaml"
KUBE = "1.34.0"
MODELS = {"BackupTarget": BackupTarget, "Backup": Backup, "Restore": Restore,
          "BackupSchedule": BackupSchedule}
VARIABLES = {"SAFEHOLD_HOST_IP": "10.244.76.1", "POSTGRES_PORT": "30432",
             "MARIADB_PORT": "30306", "MONGODB_PORT": "30017", "S3_PORT": "30500",
             "GCS_PORT": "30443", "AZURE_PORT": "30000",
             "RESTORE_TIME": "2026-12-02T18:30:05+00:00"}
FILES = [*sorted(EXAMPLES.rglob("*.yaml")), KIND_SERVERS]


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))


def test_every_placeholder_is_documented_and_provided() -> None:
    from e2e.kind import PORTS
    from e2e.system import STEP_VARIABLES

    readme = (EXAMPLES / "README.md").read_text()
    used = set().union(*(_placeholders(f.read_text()) for f in FILES))
    assert used == set(VARIABLES), used ^ set(VARIABLES)
    for name in used:
        assert f"`{name}`" in readme or f"{name}`" in readme, f"{name} is not in the README"
    # kind mode fills every one but those the scenarios fill for one step (RESTORE_TIME)
    assert {"SAFEHOLD_HOST_IP", *PORTS, *STEP_VARIABLES} == used


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_manifest_is_valid(path: Path) -> None:
    import string

    import kubernetes_validate

    text = string.Template(path.read_text()).substitute(VARIABLES)
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert docs, path
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in MODELS:
            assert doc["apiVersion"] == "safehold.dev/v1alpha1", doc
            MODELS[kind].from_body(doc)
        else:
            try:
                kubernetes_validate.validate(doc, KUBE, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name}: {kind}/{name} is invalid for Kubernetes {KUBE}: {exc}")


def test_a_typo_in_an_example_is_caught() -> None:
    doc = yaml.safe_load((EXAMPLES / "postgresql" / "backups.yaml").read_text().split("---")[0])
    doc["spec"]["tpye"] = "full"
    with pytest.raises(ValueError, match="tpye"):
        Backup.from_body(doc)
