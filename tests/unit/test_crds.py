"""crds/ is generated from safehold.api: stale files, missing descriptions and non-structural
schemas fail here (the API server itself is exercised in tests/envtest/test_crds_apiserver.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.api import crdgen

REPO = Path(__file__).resolve().parents[2]


def test_crds_are_up_to_date() -> None:
    stale = crdgen.stale(REPO / "crds")
    assert not stale, f"regeneration would change {stale}: run `make crds` and commit crds/"


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 0
    victim = tmp_path / "safehold.dev_backups.yaml"
    victim.write_text(victim.read_text().replace("Retain", "Keep"))
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1
    assert crdgen.stale(tmp_path) == ["safehold.dev_backups.yaml"]


def walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}[*]")


CRDS = {kind.kind: crdgen.crd(kind) for kind in crdgen.KINDS}


@pytest.mark.parametrize("kind", list(CRDS))
def test_every_field_is_described_and_structural(kind: str) -> None:
    version = CRDS[kind]["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        for path, node in walk(root["properties"][part], part):
            # every field, and every object in a list or map (scalar items need none)
            if node.get("type") == "object" or not path.endswith(("[]", "[*]")):
                assert node.get("description"), f"{kind}.{path} has no description"
            assert "type" in node or node.get("x-kubernetes-int-or-string"), path
            for banned in ("$ref", "anyOf", "allOf", "oneOf", "title", "const", "nullable"):
                assert banned not in node, f"{kind}.{path} carries {banned}"
            assert node.get("additionalProperties") is not False, path
    assert version["subresources"] == {"status": {}}


def test_names_columns_and_category() -> None:
    names = {k: c["spec"]["names"] for k, c in CRDS.items()}
    assert {k: n["shortNames"] for k, n in names.items()} == {
        "BackupTarget": ["bt"], "Backup": ["bk"], "Restore": ["rst"], "BackupSchedule": ["bs"]}
    assert all(n["categories"] == ["safehold"] for n in names.values())
    backup_columns = [c["name"] for c in CRDS["Backup"]["spec"]["versions"][0]
                      ["additionalPrinterColumns"] if not c.get("priority")]
    assert backup_columns == ["Target", "Type", "Phase", "Size", "Age"]


def test_conditions_are_a_map_keyed_by_type() -> None:
    for kind, crd in CRDS.items():
        status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        conditions = status["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map", kind
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert "type" in conditions["items"]["required"]


def test_generated_files_are_plain_yaml() -> None:
    for path in sorted((REPO / "crds").glob("safehold.dev_*.yaml")):
        text = path.read_text()
        assert text.startswith(crdgen.HEADER)
        assert "&id" not in text and "*id" not in text
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"
