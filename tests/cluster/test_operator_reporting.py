"""Whole path on the real node: real runner Jobs back up SQLite; the operator (in-process)
sends the Slack message to the local stand-in, fills the target's trends, and serves /metrics."""

from __future__ import annotations

import base64
import json
import os
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.kit import (
    RUNNER_UID,
    apply_crds,
    condition,
    create,
    eventually,
    finished,
    operator,
    status,
    volume,
)
from tests.infra.images import Image
from tests.infra.node import Node
from tests.infra.procs import free_port
from tests.infra.slackhook import SlackHook, block_kit_problems
from tests.integration.cli_helpers import make_db


def test_backups_reach_slack_trends_and_metrics(
    cluster: Node, runner_image: Image, cluster_namespace: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, slack_hook: SlackHook,
) -> None:
    from kubernetes import client

    ns = cluster_namespace
    data, repo = tmp_path / "data", tmp_path / "repo"
    data.mkdir()
    repo.mkdir()
    make_db(data / "app.db", rows=500)
    for p in (data, data / "app.db", repo):
        os.chown(p, RUNNER_UID, RUNNER_UID)
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("SAFEHOLD_RUNNER_IMAGE", runner_image.ref)
    monkeypatch.setenv("SAFEHOLD_IMAGE_PULL_POLICY", "Never")
    monkeypatch.setenv("SAFEHOLD_NOTIFY_WINDOW_SECONDS", "1")
    port = free_port()
    with cluster.api_client() as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        apply_crds(api)
        core.patch_namespace(ns, {"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})
        core.create_namespaced_secret(ns, {"metadata": {"name": "slack"}, "data": {
            "url": base64.b64encode(slack_hook.url.encode()).decode()}})
        with volume(core, ns, "app-data", data), volume(core, ns, "backups", repo), \
                operator(ns, metrics_port=port):
            create(custom, ns, "BackupTarget", "app", {
                "engine": "sqlite",
                "sqlite": {"claimName": "app-data", "mountPath": "/data", "path": "/data/app.db"},
                "storage": {"url": "file:///backups", "volume": {"claimName": "backups"}},
                "encryption": {"generateKey": True},
                "notifications": {"slack": {"webhookSecretRef": {"name": "slack", "key": "url"},
                                            "on": ["success", "failure"]}}})
            ready = eventually(lambda: condition(custom, ns, "backuptargets", "app", "Ready"),
                               "Ready")
            assert ready["status"] == "True", ready
            create(custom, ns, "Backup", "app-1", {"targetRef": {"name": "app"}})
            done = finished(custom, ns, "backups", "app-1")
            assert done["phase"] == "Completed", done
            body = eventually(lambda: slack_hook.delivered, "the Slack message")[0]
            trends = eventually(lambda: status(custom, ns, "backuptargets", "app").get(
                "trends"), "the target's trends")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                scraped = r.read().decode()
    assert block_kit_problems(body) == []
    text = json.dumps(body)
    assert "Backup completed" in text and done["backupId"] in text and f"{ns}/app" in text
    assert trends["count"] == 1 and trends["lastBackupId"] == done["backupId"]
    samples = {(x.name, frozenset(x.labels.items())): x.value
               for f in text_string_to_metric_families(scraped) for x in f.samples}
    ours = {k: v for k, v in samples.items() if ("namespace", ns) in k[1]}
    assert ours.get(("safehold_backups_total", frozenset({
        "namespace": ns, "target": "app", "type": "full", "result": "succeeded"}.items()))) \
        == 1, sorted(ours)
    assert ours.get(("safehold_backup_stored_bytes_total", frozenset({
        "namespace": ns, "target": "app", "type": "full"}.items()))) == done["storedBytes"]
    assert ("safehold_backup_last_success_timestamp_seconds",
            frozenset({"namespace": ns, "target": "app"}.items())) in ours
