"""GitOps: the operator writes status only, never spec, so Argo CD (or Flux) sees no drift.

The manifests a team keeps in Git are applied with `kubectl apply` (what Argo CD does), the
operator reconciles them through check, backup and dry-run restore to their final phases (the
test plays the kubelet), and afterwards: `kubectl diff` of the same manifests finds nothing,
every spec is byte-for-byte what was applied, metadata.generation never moved, and no field
manager other than the applier owns a single spec field.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from safehold.api.result import TaskResult
from tests.envtest.conftest import Cluster, eventually, finish_pod
from tests.infra.procs import CACHE, unavailable

MANIFESTS = """
apiVersion: safehold.dev/v1alpha1
kind: BackupTarget
metadata: {name: app}
spec:
  engine: sqlite
  sqlite: {claimName: app-data, mountPath: /data, path: /data/app.db}
  storage: {url: "file:///backups", volume: {claimName: backups}}
  encryption: {generateKey: true}
---
apiVersion: safehold.dev/v1alpha1
kind: BackupSchedule
metadata: {name: app-nightly}
spec:
  targetRef: {name: app}
  full: "0 2 * * *"
  retention: {keepDaily: 7}
---
apiVersion: safehold.dev/v1alpha1
kind: Backup
metadata: {name: app-first}
spec:
  targetRef: {name: app}
"""
# added to Git once the backup exists (a restore rehearsal)
LATER = """
apiVersion: safehold.dev/v1alpha1
kind: Restore
metadata: {name: app-rehearsal}
spec:
  source: {backupRef: {name: app-first}}
  destination: {targetRef: {name: app}}
  dryRun: true
"""
PLURALS = {"BackupTarget": "backuptargets", "BackupSchedule": "backupschedules",
           "Backup": "backups", "Restore": "restores"}
APPLIER = "kubectl-client-side-apply"


def kubectl(k8s: Cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = CACHE / "bin" / "kubectl"
    if not binary.exists():
        unavailable("kubectl", f"{binary} is missing (scripts/infra/40-kube.sh installs it)")
    env = {**os.environ, "KUBECONFIG": str(k8s.kube.kubeconfig)}
    return subprocess.run([str(binary), "--namespace", k8s.ns, *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def spec_owners(obj: dict[str, Any]) -> list[str]:
    """Field managers owning any field under spec (the status subresource excluded)."""
    return [m["manager"] for m in obj["metadata"].get("managedFields", [])
            if m.get("subresource") != "status" and "f:spec" in (m.get("fieldsV1") or {})]


def test_operator_writes_status_only_so_argocd_sees_no_drift(
    k8s: Cluster, operator: Any, tmp_path: Path
) -> None:
    repo = tmp_path / "git"
    repo.mkdir()
    (repo / "app.yaml").write_text(MANIFESTS)
    res = kubectl(k8s, "apply", "-f", str(repo))
    assert res.returncode == 0, res.stderr
    docs = [d for d in yaml.safe_load_all(MANIFESTS + "---\n" + LATER) if d]
    applied = {d["metadata"]["name"]: k8s.get(PLURALS[d["kind"]], d["metadata"]["name"])
               for d in docs}

    with operator():
        # the target's check passes (the test plays the kubelet for its Job's pod)
        uid = applied["app"]["metadata"]["uid"]
        check = eventually(lambda: k8s.jobs(uid, "check"), "the check Job")[0]
        finish_pod(k8s, check, exit_code=0, message=TaskResult(
            kind="check", phase="Completed", server_version="SQLite 3.40.1",
        ).to_termination_message())
        eventually(lambda: any(c["type"] == "Ready" and c["status"] == "True"
                               for c in k8s.status("backuptargets", "app").get("conditions", [])),
                   "the target Ready")
        # the Backup's Job reports a result
        buid = applied["app-first"]["metadata"]["uid"]
        job = eventually(lambda: k8s.jobs(buid), "the backup Job")[0]
        bid = eventually(lambda: k8s.status("backups", "app-first").get("backupId"), "backup id")
        finish_pod(k8s, job, exit_code=0, message=TaskResult(
            kind="backup", phase="Completed", backup_id=bid, type="full", chain_id=bid,
            raw_bytes=4096, stored_bytes=1024, objects=1, key_id="k1", seconds=1.0,
            location="file:///backups/app/" + bid).to_termination_message())
        done = eventually(lambda: (s := k8s.status("backups", "app-first")).get("phase")
                          in ("Completed", "Failed") and s, "the Backup finished")
        assert done["phase"] == "Completed", done
        # the dry-run Restore, added later, plans from the Backup object and completes
        (repo / "rehearsal.yaml").write_text(LATER)
        res = kubectl(k8s, "apply", "-f", str(repo))
        assert res.returncode == 0, res.stderr
        applied["app-rehearsal"] = k8s.get("restores", "app-rehearsal")
        done = eventually(lambda: (s := k8s.status("restores", "app-rehearsal")).get("phase")
                          in ("Completed", "Failed") and s, "the dry run finished")
        assert done["phase"] == "Completed", done

    for doc in docs:
        name, plural = doc["metadata"]["name"], PLURALS[doc["kind"]]
        live = k8s.get(plural, name)
        assert live is not None
        assert live["spec"] == applied[name]["spec"], f"{doc['kind']}/{name}: spec rewritten"
        assert live["metadata"]["generation"] == 1, f"{doc['kind']}/{name}: spec written"
        assert spec_owners(live) == [APPLIER], (
            f"{doc['kind']}/{name}: spec fields owned by {spec_owners(live)}:\n"
            + json.dumps(live["metadata"]["managedFields"], indent=1))
    # what Argo CD computes: the desired manifests against the live objects
    diff = kubectl(k8s, "diff", "-f", str(repo))
    assert diff.returncode == 0, f"drift after the reconciles:\n{diff.stdout}{diff.stderr}"
    # and the reconciles really happened (status written by the operator)
    assert k8s.status("backups", "app-first")["storedBytes"] == 1024
    plan = k8s.status("restores", "app-rehearsal")["plan"]["backups"]
    assert [b["backupId"] for b in plan] == [bid]
