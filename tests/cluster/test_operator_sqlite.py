"""Whole path on the real node: the operator in-process, runner Jobs as real containers.

BackupTarget (SQLite on a PersistentVolume, a file:// repository on another, a generated key)
-> check Job -> Ready; Backup -> one runner Job -> Completed with the result in status; the
repository the Job wrote restores here, with the key exported from the generated Secret.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.infra.images import Image
from tests.infra.node import Node
from tests.infra.procs import REPO
from tests.integration.cli_helpers import dump, make_db, run

RUNNER_UID = 65532
GROUP, VERSION = "safehold.dev", "v1alpha1"


def _eventually(probe: Any, what: str, timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _apply_crds(api: Any) -> None:
    import yaml
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted((REPO / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        names.append(body["metadata"]["name"])
        try:
            ext.create_custom_resource_definition(body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    for name in names:
        _eventually(lambda n=name: any(
            c.type == "Established" and c.status == "True"
            for c in ext.read_custom_resource_definition(n).status.conditions or []),
            f"CRD {name} established", timeout=60)


@contextmanager
def _volume(core: Any, ns: str, name: str, path: Path) -> Iterator[None]:
    pv = f"{ns}-{name}"
    core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "", "hostPath": {"path": str(path), "type": "Directory"}}})
    try:
        core.create_namespaced_persistent_volume_claim(ns, {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv,
                     "resources": {"requests": {"storage": "1Gi"}}}})
        yield
    finally:
        core.delete_persistent_volume(pv)


def test_backup_of_sqlite_completes(cluster: Node, runner_image: Image, cluster_namespace: str,
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kopf.testing import KopfRunner
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
        _apply_crds(api)
        core.patch_namespace(ns, {"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})
        with _volume(core, ns, "app-data", data), _volume(core, ns, "backups", repo), \
                KopfRunner(["run", "--standalone", f"--namespace={ns}", "-m",
                            "safehold.controller.handlers"], timeout=60):
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "backuptargets", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "BackupTarget",
                "metadata": {"name": "app"},
                "spec": {"engine": "sqlite",
                         "sqlite": {"claimName": "app-data", "mountPath": "/data",
                                    "path": "/data/app.db"},
                         "storage": {"url": "file:///backups", "volume": {"claimName": "backups"}},
                         "encryption": {"generateKey": True}}})

            def status(plural: str, name: str) -> dict[str, Any]:
                obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
                return dict(obj.get("status") or {})

            ready = _eventually(lambda: next((c for c in status("backuptargets", "app")
                                              .get("conditions", []) if c["type"] == "Ready"
                                              and c["status"] != "Unknown"), None), "Ready")
            assert ready["status"] == "True", ready
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, "backups", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "Backup",
                "metadata": {"name": "app-1"}, "spec": {"targetRef": {"name": "app"}}})
            done = _eventually(lambda: (s := status("backups", "app-1")).get("phase")
                               in ("Completed", "Failed") and s, "the Backup to finish")
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
