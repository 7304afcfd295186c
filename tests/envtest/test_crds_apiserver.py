"""The generated CRDs on a real kube-apiserver, driven through the real kubectl.

Good manifests are accepted and come back with their defaults filled; bad ones are refused and
the error names the problem (schema, enum or CEL rule). ``kubectl explain`` and ``kubectl get``
show what users will see.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.api.backup import BackupSpec
from safehold.api.restore import RestoreSpec
from safehold.api.schedule import BackupScheduleSpec
from safehold.api.target import BackupTargetSpec
from tests.infra.kube import ControlPlane
from tests.infra.procs import CACHE, REPO, unavailable, wait_until

CRDS = REPO / "crds"
API = "safehold.dev/v1alpha1"


class Kubectl:
    def __init__(self, kube: ControlPlane, namespace: str) -> None:
        binary = CACHE / "bin" / "kubectl"
        if not binary.exists():
            unavailable("kubectl", f"{binary} is missing (scripts/infra/40-kube.sh installs it)")
        self.binary = str(binary)
        self.env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig)}
        self.namespace = namespace

    def __call__(self, *args: str, input: str | None = None,
                 ok: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([self.binary, "-n", self.namespace, *args], input=input,
                             capture_output=True, text=True, env=self.env, timeout=60,
                             check=False)
        if ok:
            assert res.returncode == 0, f"kubectl {' '.join(args)}:\n{res.stdout}{res.stderr}"
        return res

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create ``manifest``; the object as stored (defaults filled)."""
        self("create", "-f", "-", input=json.dumps(manifest))
        return self.get(manifest)

    def get(self, manifest: dict[str, Any]) -> dict[str, Any]:
        kind = f"{manifest['kind'].lower()}.safehold.dev"
        out = self("get", kind, manifest["metadata"]["name"], "-o", "json").stdout
        stored: dict[str, Any] = json.loads(out)
        return stored

    def refuse(self, manifest: dict[str, Any], *verb: str) -> str:
        """Try to create (or ``verb``) ``manifest``; the error text (it must be refused)."""
        res = self(*(verb or ("create",)), "-f", "-", input=json.dumps(manifest), ok=False)
        assert res.returncode != 0, f"accepted but should be refused:\n{manifest}"
        return res.stderr


@pytest.fixture(scope="module")
def crds(kube: ControlPlane) -> list[str]:
    """The generated CRDs, installed (with kubectl) and Established.

    They stay installed: the control plane lives for the session only, and other suites (the
    controller's) may have installed the same CRDs and rely on them.
    """
    ctl = Kubectl(kube, "default")
    files = sorted(CRDS.glob("safehold.dev_*.yaml"))
    assert len(files) == 4, f"expected 4 CRDs in {CRDS}, found {files}: run `make crds`"
    names = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]
    for f in files:
        ctl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    for name in names:
        wait_until(lambda n=name: "True" in ctl(  # type: ignore[misc]
            "get", "crd", n, "-o", 'jsonpath={.status.conditions[?(@.type=="Established")]'
            '.status}').stdout, what=f"CRD {name} Established", timeout=60)
    # discovery (short names, categories) refreshes asynchronously in kubectl's cache
    wait_until(lambda: ctl("get", "bk", ok=False).returncode == 0, what="short name bk",
               timeout=60)
    return names


@pytest.fixture
def kubectl(kube: ControlPlane, kube_namespace: str, crds: list[str]) -> Kubectl:
    return Kubectl(kube, kube_namespace)


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


def target(name: str = "orders", **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "engine": "postgresql",
        "connection": {"host": "orders-db.shop.svc", "port": 5432, "database": "orders",
                       "username": "backup",
                       "passwordSecretRef": {"name": "orders-db", "key": "password"},
                       "tls": {"mode": "verify-full",
                               "caSecretRef": {"name": "orders-ca", "key": "ca.crt"}}},
        "storage": {"url": "s3://backups/prod", "credentialsSecretRef": {"name": "s3-creds"}},
        "encryption": {"keySecretRef": {"name": "orders-key"}},
    }
    spec.update(changes)
    return obj("BackupTarget", name, {k: v for k, v in spec.items() if v is not None})


SQLITE = {"claimName": "app-data", "path": "/data/app.db"}


# --------------------------------------------------------------------------- accepted


def test_good_manifests_are_accepted_with_defaults(kubectl: Kubectl) -> None:
    stored = kubectl.apply(target())
    assert stored["spec"]["compression"] == "zstd:3"  # defaulted by the API server
    BackupTargetSpec.model_validate(stored["spec"])  # and the operator's model agrees

    tls_default = target("tls", connection={"host": "db", "database": "d", "tls": {}})
    assert kubectl.apply(tls_default)["spec"]["connection"]["tls"]["mode"] == "verify-full"

    lite = kubectl.apply(target("app", engine="sqlite", connection=None, sqlite=SQLITE,
                                storage={"url": "file:///backups",
                                         "volume": {"claimName": "backups"}},
                                encryption={"generateKey": True}))
    assert lite["spec"]["sqlite"]["mountPath"] == "/data"
    BackupTargetSpec.model_validate(lite["spec"])

    uri = kubectl.apply(target("uri", connection=None,
                               uriSecretRef={"name": "orders-uri", "key": "url"},
                               encryption={"none": True}, compression="lz4"))
    assert uri["spec"]["uriSecretRef"]["key"] == "url"

    pit = kubectl.apply(target("pit", engine="mysql", pointInTime={"enabled": True}))
    assert pit["spec"]["pointInTime"] == {"enabled": True, "segmentSeconds": 0}
    assert BackupTargetSpec.model_validate(pit["spec"]).streams
    off = kubectl.apply(target("pit-off", pointInTime={"enabled": False}))  # any engine may
    assert not BackupTargetSpec.model_validate(off["spec"]).streams

    backup = kubectl.apply(obj("Backup", "orders-1", {"targetRef": {"name": "orders"}}))
    assert backup["spec"] == {"targetRef": {"name": "orders"}, "type": "full",
                              "pinned": False, "deletionPolicy": "Retain"}
    BackupSpec.model_validate(backup["spec"])

    restore = kubectl.apply(obj("Restore", "r1", {
        "source": {"backupRef": {"name": "orders-1"}},
        "destination": {"targetRef": {"name": "orders-copy"}},
        "include": ["public.customers"]}))
    assert (restore["spec"]["conflictPolicy"], restore["spec"]["dryRun"]) == ("fail", False)
    RestoreSpec.model_validate(restore["spec"])
    kubectl.apply(obj("Restore", "r2", {"source": {"targetRef": {"name": "orders"},
                                                   "backupId": "latest"},
                                        "destination": {"database": "orders_copy"},
                                        "dryRun": True}))

    schedule = kubectl.apply(obj("BackupSchedule", "orders", {
        "targetRef": {"name": "orders"}, "full": "0 2 * * 0", "differential": "0 2 * * 1-6",
        "incremental": "0 */4 * * *", "timeZone": "Europe/Berlin",
        "startingDeadlineSeconds": 600, "verify": "0 5 * * *",
        "retention": {"keepLast": 3, "keepDaily": 7, "keepWeekly": 4, "keepMonthly": 12,
                      "keepYearly": 2, "maxAge": "400d", "minRecoveryWindow": "7d"},
        "notifications": {"slack": {"webhookSecretRef": {"name": "slack", "key": "url"}}}}))
    spec = schedule["spec"]
    assert (spec["concurrencyPolicy"], spec["suspend"]) == ("Forbid", False)
    assert spec["notifications"]["slack"]["on"] == ["failure"]
    BackupScheduleSpec.model_validate(spec)


# --------------------------------------------------------------------------- refused

BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
    "pointInTime for an engine without a streamer": (
        target(engine="sqlite", connection=None, sqlite={"claimName": "app-data",
                                                         "path": "/data/app.db"},
               pointInTime={"enabled": True}),
        ["spec.pointInTime", "pointInTime needs a log streamer; engines with one: mongodb,"
         " mysql, postgresql", "set pointInTime.enabled to false"]),
    "pointInTime for postgresql with the logical method": (
        target(pointInTime={"enabled": True}),
        ["spec.pointInTime", "archives WAL, which replays onto physical backups only",
         "set method: physical"]),
    "restore to a point with a backupRef": (
        obj("Restore", "r", {"source": {"backupRef": {"name": "a"},
                                        "pointInTime": {"time": "2026-12-02T18:30:05Z"}},
                             "destination": {"database": "x"}}),
        ["pointInTime restores a target to a point"]),
    "restore to two points": (
        obj("Restore", "r", {"source": {"targetRef": {"name": "t"},
                                        "pointInTime": {"time": "2026-12-02T18:30:05Z",
                                                        "gtid": "0-1-42"}},
                             "destination": {"database": "x"}}),
        ["set exactly one of time, gtid or position"]),
    "restore to a point with include": (
        obj("Restore", "r", {"source": {"targetRef": {"name": "t"},
                                        "pointInTime": {"gtid": "0-1-42"}},
                             "destination": {"database": "x"}, "include": ["t1"]}),
        ["a point-in-time restore restores the whole database"]),
    "pointInTime with several databases": (
        target(engine="mysql", pointInTime={"enabled": True}, databases={"all": True}),
        ["pointInTime archives one database's log"]),
    "two connections": (target(uriSecretRef={"name": "u", "key": "url"}),
                        ["set exactly one of connection, uriSecretRef or sqlite"]),
    "no connection": (target(connection=None),
                      ["set exactly one of connection, uriSecretRef or sqlite"]),
    "sqlite source on postgresql": (target(connection=None, sqlite=SQLITE),
                                    ["engine sqlite takes sqlite"]),
    "sqlite engine with a connection": (target(engine="sqlite"), ["engine sqlite takes sqlite"]),
    "sqlite path outside the mount": (
        target(engine="sqlite", connection=None,
               sqlite={"claimName": "app-data", "path": "/etc/passwd"}),
        ["path must lie under mountPath"]),
    "file repository without volume": (target(storage={"url": "file:///backups"}),
                                       ["file:// repository needs volume"]),
    "volume for s3": (target(storage={"url": "s3://b/p", "volume": {"claimName": "v"}}),
                      ["volume is only for file://"]),
    "unknown storage scheme": (target(storage={"url": "ftp://b/p"}), ["spec.storage.url"]),
    "no encryption choice": (target(encryption={}),
                             ["set exactly one of keySecretRef, generateKey: true or none: true"]),
    "none: false is no choice": (target(encryption={"none": False}),
                                 ["set exactly one of keySecretRef"]),
    "two encryption choices": (target(encryption={"generateKey": True, "none": True}),
                               ["set exactly one of keySecretRef"]),
    "encryption left out": (target(encryption=None), ["spec.encryption", "Required value"]),
    "unknown engine": (target(engine="oracle"), ["spec.engine", "Unsupported value", "oracle"]),
    "bad compression": (target(compression="brotli"), ["spec.compression"]),
    "password secret without key": (
        target(connection={"host": "db", "database": "d", "passwordSecretRef": {"name": "s"}}),
        ["spec.connection.passwordSecretRef.key", "Required value"]),
    "connection without database": (target(connection={"host": "db"}),
                                    ["spec.connection.database", "Required value"]),
    "typo in a field name": (target(conection={"host": "db"}), ['unknown field "spec.conection"']),
    "incremental with include": (
        obj("Backup", "b", {"targetRef": {"name": "o"}, "type": "incremental",
                            "include": ["public.t"]}),
        ["include is only valid for type full"]),
    "unknown deletion policy": (obj("Backup", "b", {"targetRef": {"name": "o"},
                                                    "deletionPolicy": "Destroy"}),
                                ["spec.deletionPolicy", "Unsupported value"]),
    "backup without target": (obj("Backup", "b", {"type": "full"}),
                              ["spec.targetRef", "Required value"]),
    "restore with two sources": (
        obj("Restore", "r", {"source": {"backupRef": {"name": "a"}, "targetRef": {"name": "t"}},
                             "destination": {"database": "x"}}), ["set exactly one source"]),
    "restore with no source": (obj("Restore", "r", {"source": {},
                                                    "destination": {"database": "x"}}),
                               ["set exactly one source"]),
    "backupId beside backupRef": (
        obj("Restore", "r", {"source": {"backupRef": {"name": "a"}, "backupId": "latest"},
                             "destination": {"database": "x"}}),
        ["backupId goes with targetRef"]),
    "restore without destination": (obj("Restore", "r", {"source": {"backupRef":
                                                                     {"name": "a"}}}),
                                    ["spec.destination", "Required value"]),
    "restore with two destinations": (
        obj("Restore", "r", {"source": {"backupRef": {"name": "a"}},
                             "destination": {"database": "x", "targetRef": {"name": "t"}}}),
        ["set exactly one destination"]),
    "restore into a volume and a database": (
        obj("Restore", "r", {"source": {"backupRef": {"name": "a"}}, "destination": {
            "database": "x", "volume": {"claimName": "c"}}}), ["set exactly one destination"]),
    "volume with a claim and a template": (
        obj("Restore", "r", {"source": {"backupRef": {"name": "a"}}, "destination": {
            "volume": {"claimName": "c", "claimTemplate": {"storage": "1Gi"}}}}),
        ["set exactly one of claimName (an existing claim) or claimTemplate"]),
    "volume as root": (
        obj("Restore", "r", {"source": {"backupRef": {"name": "a"}}, "destination": {
            "volume": {"claimName": "c", "runAsUser": 0}}}), ["runAsUser"]),
    "volume with subPath ..": (
        obj("Restore", "r", {"source": {"backupRef": {"name": "a"}}, "destination": {
            "volume": {"claimName": "c", "subPath": ".."}}}), ["not . or .."]),
    "volume with include": (
        obj("Restore", "r", {"source": {"backupRef": {"name": "a"}}, "include": ["t"],
                             "destination": {"volume": {"claimName": "c"}}}),
        ["a volume destination takes a whole physical PostgreSQL backup"]),
    "schedule without any cron": (obj("BackupSchedule", "s", {"targetRef": {"name": "o"}}),
                                  ["set at least one of full, differential, incremental"]),
    "schedule retention keeping nothing": (
        obj("BackupSchedule", "s", {"targetRef": {"name": "o"}, "full": "@daily",
                                    "retention": {"keepLast": 0}}),
        ["a retention policy needs at least one of keepLast"]),
    "schedule with a bad cron": (obj("BackupSchedule", "s", {"targetRef": {"name": "o"},
                                                             "full": "daily"}),
                                 ["spec.full", "a cron needs 5 fields"]),
    "schedule with a 6-field cron": (
        obj("BackupSchedule", "s", {"targetRef": {"name": "o"}, "full": "0 0 2 * * *"}),
        ["spec.full", "a cron needs 5 fields (minute hour day month weekday) or a macro like"
         " @daily"]),
    "schedule with a 4-field cron": (
        obj("BackupSchedule", "s", {"targetRef": {"name": "o"}, "incremental": "0 */4 * *"}),
        ["spec.incremental", "a cron needs 5 fields"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_manifests_are_refused_naming_the_problem(kubectl: Kubectl, case: str) -> None:
    manifest, words = BAD[case]
    error = kubectl.refuse(manifest)
    for word in words:
        assert word in error, f"{case}: {word!r} not in:\n{error}"


def test_immutable_fields_cannot_change(kubectl: Kubectl) -> None:
    kubectl.apply(target("immutable"))
    changed = target("immutable", engine="mysql")
    assert "engine is immutable" in kubectl.refuse(changed, "replace")

    kubectl.apply(obj("Backup", "b1", {"targetRef": {"name": "orders"}}))
    bumped = obj("Backup", "b1", {"targetRef": {"name": "orders"}, "type": "differential"})
    assert "targetRef, type and include are immutable" in kubectl.refuse(bumped, "replace")
    # pinned and deletionPolicy may change: retention sets Delete on what it prunes
    kubectl("patch", "backup.safehold.dev", "b1", "--type=merge",
            "-p", '{"spec": {"pinned": true, "deletionPolicy": "Delete"}}')

    kubectl.apply(obj("Restore", "r1", {"source": {"backupRef": {"name": "b1"}},
                                        "destination": {"database": "copy"}}))
    res = kubectl("patch", "restore.safehold.dev", "r1", "--type=merge",
                  "-p", '{"spec": {"dryRun": true}}', ok=False)
    assert res.returncode != 0 and "a Restore cannot be changed" in res.stderr


# --------------------------------------------------------------------------- kubectl UX


def test_kubectl_explain_reads_well(kubectl: Kubectl, tmp_path: Path) -> None:
    out = kubectl("explain", "backuptarget.spec.connection").stdout
    print(out)  # the report quotes it: pytest -s shows it
    for text in ("How to reach a database server and log in",
                 "passwordSecretRef", "Secret key holding the password",
                 "host\t<string> -required-", "TLS settings"):
        assert text in out, out
    recursive = kubectl("explain", "backuptargets.spec", "--recursive").stdout
    assert "generateKey" in recursive and "claimName" in recursive
    for kind in ("backup", "restore", "backupschedule"):
        assert "DESCRIPTION" in kubectl("explain", f"{kind}.spec").stdout


def test_printer_columns_short_names_and_category(kubectl: Kubectl) -> None:
    kubectl.apply(target())
    kubectl.apply(obj("Backup", "orders-1", {"targetRef": {"name": "orders"},
                                             "type": "incremental"}))
    status = {"status": {"phase": "Completed", "size": "1.5 GiB",
                         "backupId": "20261202T120000Z"}}
    kubectl("patch", "backup.safehold.dev", "orders-1", "--subresource=status",
            "--type=merge", "-p", json.dumps(status))
    table = kubectl("get", "bk").stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "TARGET", "TYPE", "PHASE", "SIZE", "AGE"]
    assert row.split()[:6] == ["orders-1", "orders", "incremental", "Completed", "1.5", "GiB"]
    assert "20261202T120000Z" in kubectl("get", "backups.safehold.dev", "-o", "wide").stdout
    assert kubectl("get", "bt").stdout.split()[:4] == ["NAME", "ENGINE", "READY", "AGE"]
    kubectl.apply(obj("Restore", "r1", {"source": {"backupRef": {"name": "orders-1"}},
                                        "destination": {"database": "copy"}}))
    assert kubectl("get", "rst").stdout.split()[:5] == ["NAME", "SOURCE", "SOURCE-TARGET",
                                                        "PHASE", "AGE"]
    everything = kubectl("get", "safehold").stdout
    for name in ("backuptarget.safehold.dev/orders", "backup.safehold.dev/orders-1",
                 "restore.safehold.dev/r1"):
        assert name in everything, everything
