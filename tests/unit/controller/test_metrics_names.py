"""The operator's metrics follow Prometheus conventions, are all documented, and the chart's
example alerts use only metrics that exist."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY

from safehold.controller import metrics  # registers the metrics
from tests.infra.procs import REPO

UNITS = ("_seconds", "_bytes", "_total", "_length", "_degraded", "_backups")


def _families() -> dict[str, str]:
    assert metrics.BACKUPS is not None
    return {m.name: m.type for m in REGISTRY.collect() if m.name.startswith("safehold_")}


def test_names_carry_units_and_counters_end_in_total() -> None:
    families = _families()
    assert len(families) >= 15
    for name, kind in families.items():
        exposed = name + "_total" if kind == "counter" else name
        assert exposed.endswith(UNITS), f"{exposed}: no unit suffix"
        assert re.fullmatch(r"safehold_[a-z_]+", name)


def test_every_metric_is_documented() -> None:
    docs = (REPO / "docs" / "operator.md").read_text()
    for name, kind in _families().items():
        exposed = name + "_total" if kind == "counter" else name
        assert f"`{exposed}`" in docs, f"{exposed} is not in docs/operator.md"


def test_labels_are_bounded() -> None:
    allowed = {"namespace", "target", "schedule", "type", "result", "channel", "reason"}
    for collector in [getattr(metrics, n) for n in dir(metrics) if n.isupper()]:
        names = getattr(collector, "_labelnames", None)
        if names is not None:
            assert set(names) <= allowed, names


def test_alert_rules_use_existing_metrics() -> None:
    text = (REPO / "charts" / "safehold" / "templates" / "prometheusrule.yaml").read_text()
    exprs = re.findall(r"expr: (\|-\n(?: {12}.*\n)+|.*)", text)  # one line, or a block
    assert len(exprs) == 6
    exposed = set()
    for name, kind in _families().items():
        exposed |= ({name + "_total"} if kind == "counter"
                    else {name, name + "_count", name + "_sum", name + "_bucket"})
    for expr in exprs:
        for used in re.findall(r"safehold_[a-z_]+", expr):
            assert used in exposed, f"{used} in an alert does not exist"
