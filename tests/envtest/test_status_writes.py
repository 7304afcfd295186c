"""Two writers of one object's conditions never undo each other (safehold.controller.status.write),
against the real API server: a writer working from an older body leaves alone the conditions it
did not change, and a write that lands between another writer's read and patch is merged, not
overwritten."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.api.common import set_condition
from safehold.api.target import BackupTarget
from safehold.controller.kube import Kube
from safehold.controller.status import write
from tests.envtest.conftest import Cluster
from tests.unit.controller import samples

PLURAL = "backuptargets"


def _types(k8s: Cluster) -> dict[str, str]:
    return {c["type"]: c["reason"] for c in k8s.status(PLURAL, "orders").get("conditions", [])}


def _with(target: BackupTarget, type: str, reason: str) -> Any:
    return target.status.model_copy(update={"conditions": list(set_condition(
        target.status.conditions, type, "True", reason, reason))})


def _without(target: BackupTarget, type: str) -> Any:
    return target.status.model_copy(update={"conditions": [
        c for c in target.status.conditions if c.type != type]})


@pytest.fixture
def seeded(k8s: Cluster) -> BackupTarget:
    """orders with Ready and PointInTime set, as each writer last saw it."""
    k8s.create(PLURAL, samples.target())
    kube = Kube(k8s.api)
    first = BackupTarget.from_body(k8s.get(PLURAL, "orders") or {})
    write(kube, PLURAL, k8s.ns, "orders", first.status, _with(first, "Ready", "Checking"))
    seen = BackupTarget.from_body(k8s.get(PLURAL, "orders") or {})
    write(kube, PLURAL, k8s.ns, "orders", seen.status, _with(seen, "PointInTime", "StreamerOk"))
    assert _types(k8s) == {"Ready": "Checking", "PointInTime": "StreamerOk"}
    return BackupTarget.from_body(k8s.get(PLURAL, "orders") or {})


def test_a_stale_writer_does_not_bring_back_a_removed_condition(
        k8s: Cluster, seeded: BackupTarget) -> None:
    """The streamer removes PointInTime; the check, from its body of before, sets Ready: a whole
    list from that body would put PointInTime back (the lost update seen in CI)."""
    kube = Kube(k8s.api)
    stale = seeded
    write(kube, PLURAL, k8s.ns, "orders", stale.status, _without(stale, "PointInTime"))
    assert _types(k8s) == {"Ready": "Checking"}
    write(kube, PLURAL, k8s.ns, "orders", stale.status, _with(stale, "Ready", "CheckPassed"))
    assert _types(k8s) == {"Ready": "CheckPassed"}


def test_a_write_between_read_and_patch_is_merged(
        k8s: Cluster, seeded: BackupTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer lands after this writer read the object: the conditional patch is refused
    (409) and merged again over the newer object, so both changes stay."""
    kube = Kube(k8s.api)
    real, raced = Kube.get_custom, []

    def get_custom(self: Kube, plural: str, ns: str, name: str) -> Any:
        body = real(self, plural, ns, name)
        if not raced:  # the streamer writes right after this read
            raced.append(True)
            other = BackupTarget.from_body(body or {})
            write(kube, PLURAL, ns, name, other.status, _with(other, "PointInTime", "Lagging"))
        return body

    monkeypatch.setattr(Kube, "get_custom", get_custom)
    write(kube, PLURAL, k8s.ns, "orders", seeded.status, _with(seeded, "Ready", "CheckPassed"))
    assert raced
    assert _types(k8s) == {"Ready": "CheckPassed", "PointInTime": "Lagging"}
