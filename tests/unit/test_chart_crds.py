"""The Helm chart carries a copy of crds/ (charts/safehold/files/crds, written by `make crds`):
a stale copy would install or upgrade clusters to an old API, so it fails here."""

from __future__ import annotations

from pathlib import Path

from safehold.api import crdgen

REPO = Path(__file__).resolve().parents[2]
CHART_CRDS = REPO / "charts" / "safehold" / "files" / "crds"


def test_chart_crds_are_up_to_date() -> None:
    stale = crdgen.stale(CHART_CRDS)
    assert not stale, f"the chart's copy of {stale} is stale: run `make crds` and commit"


def test_chart_crds_are_the_generated_files() -> None:
    chart = sorted(p.name for p in CHART_CRDS.glob("*.yaml"))
    assert chart == sorted(crdgen.generate()), "files/crds must hold exactly the generated CRDs"
    for name in chart:
        assert (CHART_CRDS / name).read_text() == (REPO / "crds" / name).read_text(), name
