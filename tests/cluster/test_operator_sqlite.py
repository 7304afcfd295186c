"""Whole path on the real node: the operator in-process, runner Jobs as real containers.

BackupTarget (SQLite on a PersistentVolume, a file:// repository on another, a generated key)
-> check Job -> Ready; Backup -> one runner Job -> Completed with the result in status; the
repository the Job wrote restores here, with the key exported from the generated Secret.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.cluster.kit import (
    RUNNER_UID,
    apply_crds,
    condition,
    create,
    eventually,
    finished,
    operator,
    volume,
)
from tests.infra.images import Image
from tests.infra.node import Node
from tests.integration.cli_helpers import dump, make_db, run


def test_backup_of_sqlite_completes(cluster: Node, runner_image: Image, cluster_namespace: str,
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    with cluster.api_client() as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        apply_crds(api)
        core.patch_namespace(ns, {"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})
        with volume(core, ns, "app-data", data), volume(core, ns, "backups", repo), operator(ns):
            create(custom, ns, "BackupTarget", "app", {
                "engine": "sqlite",
                "sqlite": {"claimName": "app-data", "mountPath": "/data", "path": "/data/app.db"},
                "storage": {"url": "file:///backups", "volume": {"claimName": "backups"}},
                "encryption": {"generateKey": True}})
            ready = eventually(lambda: condition(custom, ns, "backuptargets", "app", "Ready"),
                               "Ready")
            assert ready["status"] == "True", ready
            create(custom, ns, "Backup", "app-1", {"targetRef": {"name": "app"}})
            done = finished(custom, ns, "backups", "app-1")
        assert done["phase"] == "Completed", done
        assert done["storedBytes"] > 0 and done["keyId"] and done["backupId"]
        jobs = client.BatchV1Api(api).list_namespaced_job(
            ns, label_selector="safehold.dev/purpose=backup").items
        assert len(jobs) == 1
        # escrow: export the generated key, restore what the Job wrote, here
        secret = core.read_namespaced_secret("app-key", ns)
    active = base64.b64decode(secret.data["active"]).decode()
    key = tmp_path / "key"
    key.write_bytes(base64.b64decode(secret.data[active]))
    restored = tmp_path / "restored.db"
    run("restore", "-r", repo.as_uri(), "-b", done["backupId"], "-t", f"sqlite://{restored}",
        "--from", "app", "--key-file", str(key))
    assert dump(restored) == dump(data / "app.db")
