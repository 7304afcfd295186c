"""Shared pieces of the whole-path tests on the real node (tests/cluster/test_operator_*.py):
waiting, applying the CRDs, hostPath-backed volumes, reading status, running the operator.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.infra.procs import REPO, wait_until

RUNNER_UID = 65532  # the runner image's user: files the Jobs read or write belong to it
GROUP, VERSION = "safehold.dev", "v1alpha1"


def eventually(probe: Any, what: str, timeout: float = 300.0) -> Any:
    """Poll ``probe`` every second until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def apply_crds(api: Any) -> None:
    """Create the generated CRDs (crds/*.yaml) once per cluster and wait until established."""
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
        eventually(lambda n=name: any(
            c.type == "Established" and c.status == "True"
            for c in ext.read_custom_resource_definition(n).status.conditions or []),
            f"CRD {name} established", timeout=60)


@contextmanager
def volume(core: Any, ns: str, name: str, path: Path) -> Iterator[None]:
    """A PersistentVolumeClaim ``name`` in ``ns`` bound to a hostPath volume at ``path``.

    Yields once the claim is Bound: a Pod created before that is unschedulable until the
    scheduler looks again, which under load can be minutes (longer than a Job's deadline)."""
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
        wait_until(lambda: core.read_namespaced_persistent_volume_claim(name, ns).status.phase
                   == "Bound", what=f"PersistentVolumeClaim {ns}/{name} Bound", timeout=60)
        yield
    finally:
        core.delete_persistent_volume(pv)


def status(custom: Any, ns: str, plural: str, name: str) -> dict[str, Any]:
    """The ``status`` of a Safehold object (empty before the operator wrote one)."""
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
    return dict(obj.get("status") or {})


def condition(custom: Any, ns: str, plural: str, name: str, kind: str) -> dict[str, Any] | None:
    """The condition ``kind`` once it is decided (status True or False), else None."""
    return next((c for c in status(custom, ns, plural, name).get("conditions", [])
                 if c["type"] == kind and c["status"] != "Unknown"), None)


def create(custom: Any, ns: str, kind: str, name: str, spec: dict[str, Any]) -> None:
    """Create a Safehold object of ``kind`` (BackupTarget, Backup, Restore, BackupSchedule)."""
    plural = kind.lower() + ("es" if kind.endswith("s") else "s")
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, plural, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
        "metadata": {"name": name}, "spec": spec})


def finished(custom: Any, ns: str, plural: str, name: str,
             timeout: float = 300.0) -> dict[str, Any]:
    """Wait until a Backup or Restore reaches Completed, Failed or (a Backup of several
    databases) PartiallyFailed; return its status."""
    return eventually(lambda: (s := status(custom, ns, plural, name)).get("phase")
                      in ("Completed", "Failed", "PartiallyFailed") and s,
                      f"{plural}/{name} to finish", timeout)


@contextmanager
def operator(ns: str, metrics_port: int = 0) -> Iterator[Any]:
    """The operator in-process (kopf's test runner), watching ``ns`` only; /metrics on
    ``metrics_port`` (0: off, so parallel test runs never fight over a port)."""
    import os

    from kopf.testing import KopfRunner

    before = os.environ.get("SAFEHOLD_METRICS_PORT")
    os.environ["SAFEHOLD_METRICS_PORT"] = str(metrics_port)
    try:
        with KopfRunner(["run", "--standalone", f"--namespace={ns}", "-m",
                         "safehold.controller.handlers"], timeout=60) as runner:
            yield runner
    finally:
        if before is None:
            os.environ.pop("SAFEHOLD_METRICS_PORT", None)
        else:
            os.environ["SAFEHOLD_METRICS_PORT"] = before


# runner overrides of a target whose Jobs must run long enough to be interrupted: with a
# big_db() a backup takes some 20 s instead of 2 (no fault hook in the product)
SLOW = {"runner": {"resources": {"limits": {"cpu": "100m"}}}}


def big_db(path: Path, mib: int = 40) -> None:
    """A SQLite database of ``mib`` MiB of incompressible rows, owned by the runner's user."""
    import os
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB)")
        conn.executemany("INSERT INTO t VALUES (?, ?)",
                         ((i, os.urandom(4000)) for i in range(mib * 256)))
    os.chown(path, RUNNER_UID, RUNNER_UID)


def owned_dirs(*paths: Path) -> None:
    """Create ``paths`` (directories) owned by the runner's user, so its Jobs can write them."""
    import os

    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, RUNNER_UID, RUNNER_UID)


def sqlite_target(custom: Any, ns: str, name: str, **extra: Any) -> dict[str, Any]:
    """A BackupTarget ``name`` for /data/app.db on claim ``app-data``, its repository
    file:///backups on claim ``backups``, a generated key; waits until checked, returns Ready."""
    create(custom, ns, "BackupTarget", name, {
        "engine": "sqlite",
        "sqlite": {"claimName": "app-data", "mountPath": "/data", "path": "/data/app.db"},
        "storage": {"url": "file:///backups", "volume": {"claimName": "backups"}},
        "encryption": {"generateKey": True}, **extra})
    ready: dict[str, Any] = eventually(
        lambda: condition(custom, ns, "backuptargets", name, "Ready"), f"{name} Ready")
    return ready


def secret(core: Any, ns: str, name: str, data: dict[str, str]) -> None:
    """An Opaque Secret ``name`` in ``ns`` holding ``data`` (plain strings, as stringData)."""
    core.create_namespaced_secret(ns, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                       "metadata": {"name": name}, "stringData": data})


def key_secret(core: Any, ns: str, name: str) -> bytes:
    """A user-provided key Secret (one random key, marked active); returns the raw key."""
    import base64
    import secrets

    key = secrets.token_bytes(32)
    secret(core, ns, name, {"key-1": base64.b64encode(key).decode(), "active": "key-1"})
    return key


def s3_credentials(core: Any, ns: str, name: str, cluster: Any, s3: Any) -> None:
    """A Secret of AWS_* variables (the target's credentialsSecretRef, envFrom) pointing the
    runner at the S3 emulator ``s3`` (tests.infra.objectstores.MotoS3) as Pods reach it."""
    secret(core, ns, name, {**s3.env(),
                            "AWS_ENDPOINT_URL": f"http://{cluster.pod_address(s3.port)}"})


def operator_env(monkeypatch: Any, kubeconfig: Path, image_ref: str) -> None:
    """The operator's settings for a test: this node, the runner image imported into it."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("SAFEHOLD_RUNNER_IMAGE", image_ref)
    monkeypatch.setenv("SAFEHOLD_IMAGE_PULL_POLICY", "Never")


def restricted(core: Any, ns: str) -> None:
    """Enforce the restricted Pod Security Standard in ``ns`` (runner Jobs must pass it)."""
    core.patch_namespace(ns, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})


def jobs(api: Any, ns: str, purpose: str) -> list[Any]:
    """The runner Jobs of ``purpose`` (check, backup, restore, plan, delete, recover, ...)
    in ``ns``."""
    from kubernetes import client

    return list(client.BatchV1Api(api).list_namespaced_job(
        ns, label_selector=f"safehold.dev/purpose={purpose}").items)


@contextmanager
def operator_process(ns: str, log: Path) -> Iterator[Any]:
    """The operator as a child process (``kopf run``), for tests that SIGKILL it; its output
    goes to ``log``. Stopped (killed) at the end if still running."""
    import os
    import subprocess
    import sys

    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", f"--namespace={ns}",
             "-m", "safehold.controller.handlers"], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "SAFEHOLD_METRICS_PORT": "0"})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def kubectl(cluster: Any, *args: str, input: str | None = None) -> str:
    """The real kubectl against the node (``cluster``: tests.infra.node.Node), as a user would
    run it (``input``: its stdin, e.g. manifests for ``apply -f -``); its output."""
    import os
    import subprocess

    from tests.infra.procs import CACHE

    res = subprocess.run([str(CACHE / "bin" / "kubectl"), *args], capture_output=True,
                         text=True, timeout=60, check=False, input=input,
                         env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})
    assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"
    return res.stdout


def adopt_crds(api: Any, release: str, namespace: str) -> None:
    """CRDs created outside Helm (kubectl apply, other tests of the session, an earlier release)
    join ``release`` in ``namespace``: the ownership metadata Helm checks before it takes an
    existing object over."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api)
    for crd in ext.list_custom_resource_definition().items:
        if crd.spec.group != GROUP:
            continue
        ext.patch_custom_resource_definition(crd.metadata.name, {"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": release,
                            "meta.helm.sh/release-namespace": namespace}}})


def pg_allow_pods(pg: Any, *, replication: bool = False) -> None:
    """Let Pods (the CNI bridge's range; DNAT keeps their source address) log in to ``pg``
    (tests.infra.postgres.Postgres) with a password; with ``replication`` also open
    replication connections (a WAL streamer's). Idempotent."""
    from tests.infra.netns import POD_CIDR

    hba = pg.datadir / "pg_hba.conf"
    wanted = [f"host {db} all {POD_CIDR} scram-sha-256\n"
              for db in ("all", *(["replication"] if replication else []))]
    missing = [line for line in wanted if line not in hba.read_text()]
    if missing:
        with hba.open("a") as f:
            f.writelines(missing)
        pg.psql("SELECT pg_reload_conf()")


def mariadb_pod_user(server: Any, user: str, password: str) -> None:
    """A MariaDB account ``user`` that Pods (the CNI bridge's range) log in as, with every
    privilege (backups and restores into new databases). Idempotent."""
    from tests.infra.netns import POD_CIDR

    pods = POD_CIDR.rsplit(".", 1)[0] + ".%"
    server.sql(f"CREATE USER IF NOT EXISTS '{user}'@'{pods}' IDENTIFIED BY '{password}';"
               f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'{pods}'")
