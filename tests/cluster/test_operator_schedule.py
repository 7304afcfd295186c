"""A BackupSchedule on the real node: real runner Jobs per slot, the operator down across a slot
(taken exactly once after the restart), then retention pruning a chain.

The operator runs in-process, so the test moves the schedule handler's clock (a day of slots
passes in seconds); the Jobs, the SQLite database and the file:// repository are real.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.controller.handlers import schedules
from tests.cluster.kit import (
    RUNNER_UID,
    apply_crds,
    condition,
    create,
    eventually,
    finished,
    jobs,
    operator,
    status,
    volume,
)
from tests.infra.images import Image
from tests.infra.node import Node
from tests.integration.cli_helpers import make_db


def _exists(custom: Any, ns: str, name: str) -> bool:
    return bool(custom.list_namespaced_custom_object(
        "safehold.dev", "v1alpha1", ns, "backups", field_selector=f"metadata.name={name}")["items"])


def _run(custom: Any, ns: str, now: list[datetime], when: datetime, kind: str,
         done: dict[str, dict[str, Any]]) -> None:
    """Move the clock just past ``when``; the slot's Backup appears and completes."""
    if now[0] < when:
        now[0] = when + timedelta(seconds=3)
    name = f"app-{kind}-{when:%Y%m%dt%H%M}"
    eventually(lambda: _exists(custom, ns, name), f"Backup {name} created")
    done[name] = finished(custom, ns, "backups", name)
    assert done[name]["phase"] == "Completed", done[name]
    assert done[name]["type"] == kind


def test_schedule_fires_real_jobs_and_retention_prunes_the_old_chain(
    cluster: Node, runner_image: Image, cluster_namespace: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubernetes import client

    ns = cluster_namespace
    data, repo = tmp_path / "data", tmp_path / "repo"
    data.mkdir()
    repo.mkdir()
    make_db(data / "app.db", rows=200)
    for p in (data, data / "app.db", repo):
        os.chown(p, RUNNER_UID, RUNNER_UID)
    now = [datetime.now(UTC)]
    monkeypatch.setattr(schedules, "CLOCK", lambda: now[0])
    monkeypatch.setenv("SAFEHOLD_SCHEDULE_POLL_SECONDS", "0.5")
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("SAFEHOLD_RUNNER_IMAGE", runner_image.ref)
    monkeypatch.setenv("SAFEHOLD_IMAGE_PULL_POLICY", "Never")
    with cluster.api_client() as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        apply_crds(api)
        core.patch_namespace(ns, {"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})
        with volume(core, ns, "app-data", data), volume(core, ns, "backups", repo):
            with operator(ns):
                create(custom, ns, "BackupTarget", "app", {
                    "engine": "sqlite",
                    "sqlite": {"claimName": "app-data", "mountPath": "/data",
                               "path": "/data/app.db"},
                    "storage": {"url": "file:///backups", "volume": {"claimName": "backups"}},
                    "encryption": {"generateKey": True}})
                ready = eventually(
                    lambda: condition(custom, ns, "backuptargets", "app", "Ready"), "Ready")
                assert ready["status"] == "True", ready
                create(custom, ns, "BackupSchedule", "app", {
                    "targetRef": {"name": "app"}, "full": "0 0 * * *",
                    "incremental": "0 * * * *",
                    "startingDeadlineSeconds": 3600, "retention": {"keepLast": 2}})
                first = eventually(lambda: (status(custom, ns, "backupschedules", "app")
                                            .get("full") or {}).get("nextScheduleTime"),
                                   "the first full slot")
                day1 = datetime.fromisoformat(first.replace("Z", "+00:00"))
                runs = [(day1, "full"), (day1 + timedelta(hours=1), "incremental"),
                        (day1 + timedelta(days=1), "full"),
                        (day1 + timedelta(days=1, hours=1), "incremental")]
                done: dict[str, dict[str, Any]] = {}
                for when, kind in runs[:2]:
                    _run(custom, ns, now, when, kind, done)
            # the operator is down across the next day's full slot: started again after it,
            # it takes that slot exactly once (one Backup, one Job) and skips the hourly
            # slots that went by beyond startingDeadlineSeconds
            now[0] = runs[2][0] + timedelta(seconds=3)
            with operator(ns):
                for when, kind in runs[2:]:
                    _run(custom, ns, now, when, kind, done)
                names = list(done)
                late = [j for j in jobs(api, ns, "backup")
                        if j.metadata.annotations.get("safehold.dev/owner-name") == names[2]]
                assert len(late) == 1, [j.metadata.name for j in late]
                # the first chain (full + its incremental) goes, objects and data
                for name in reversed(names[:2]):
                    eventually(lambda n=name: not _exists(custom, ns, n),  # type: ignore[misc]
                               f"{name} pruned")
                sched = status(custom, ns, "backupschedules", "app")
        left = custom.list_namespaced_custom_object(
            "safehold.dev", "v1alpha1", ns, "backups",
            label_selector="safehold.dev/schedule=app")["items"]
    assert sorted(b["metadata"]["name"] for b in left) == sorted(names[2:])
    assert done[names[1]]["parentId"] == done[names[0]]["backupId"]
    assert done[names[3]]["parentId"] == done[names[2]]["backupId"]
    pruned = {p["name"] for p in sched["retention"]["pruned"]}
    assert pruned == set(names[:2]), sched["retention"]
    on_disk = {p.name for p in repo.rglob("*") if p.is_dir()}
    assert done[names[0]]["backupId"] not in on_disk
    assert done[names[1]]["backupId"] not in on_disk
    assert {done[n]["backupId"] for n in names[2:]} <= on_disk
    assert sched["lastSuccessfulBackup"] == names[3] and sched["active"] == []
