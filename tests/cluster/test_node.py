"""The real single-node cluster itself: a Ready node, runner Jobs as real containers, Pod
networking to servers in the test namespace, and the in-cluster ``kubernetes`` Service.

These prove the test infrastructure (tests/infra/node.py) that the operator's whole-path tests
stand on; each would fail if the piece it names were faked or missing.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra.images import Image
from tests.infra.kube import KUBE_VERSION, SERVICE_IP
from tests.infra.node import Node, wait_for_pod
from tests.infra.objectstores import MotoS3
from tests.integration.cli_helpers import dump, make_db, run

RUNNER_UID = 65532  # USER of images/runner/Dockerfile


@pytest.fixture
def api(cluster: Node) -> Iterator[Any]:
    with cluster.api_client() as client:
        yield client


def job(name: str, image: str, script: str, **pod_spec: Any) -> dict[str, Any]:
    """A one-container Job that runs ``script`` with sh and writes its result as the
    termination message (the way `safehold run-task` reports)."""
    container = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    container.update(pod_spec.pop("container", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"job-name": name}},
                "spec": {"restartPolicy": "Never", "containers": [container], **pod_spec},
            },
        },
    }


def run_job(api: Any, namespace: str, manifest: dict[str, Any]) -> Any:
    """Create the Job, wait for its Pod to finish, return the Pod (V1Pod)."""
    from kubernetes import client

    name = manifest["metadata"]["name"]
    client.BatchV1Api(api).create_namespaced_job(namespace, manifest)
    core = client.CoreV1Api(api)
    pods: list[Any] = []

    def pod_exists() -> bool:
        pods[:] = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
        return bool(pods)

    from tests.infra.procs import wait_until

    wait_until(pod_exists, what=f"a Pod of Job {name}", timeout=60, interval=0.5)
    return wait_for_pod(api, namespace, pods[0].metadata.name, timeout=180)


@pytest.fixture
def backup_key(api: Any, cluster_namespace: str, tmp_path: Path) -> Path:
    """A new encryption key, as a file here and as the Secret ``backup-key`` (key ``key``)."""
    from kubernetes import client

    path = tmp_path / "backup.key"
    run("keys", "generate", "--out", str(path))
    client.CoreV1Api(api).create_namespaced_secret(
        cluster_namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "backup-key"},
            "stringData": {"key": path.read_text().strip()},
        },
    )
    return path


def terminated(pod: Any) -> Any:
    state = pod.status.container_statuses[0].state
    assert state.terminated is not None, pod.status
    return state.terminated


# --------------------------------------------------------------------------- the node


def test_node_is_ready_with_the_real_runtime(cluster: Node, api: Any) -> None:
    from kubernetes import client

    node = client.CoreV1Api(api).read_node(cluster.name)
    ready = {c.type: c.status for c in node.status.conditions}
    assert ready["Ready"] == "True"
    info = node.status.node_info
    assert info.kubelet_version == KUBE_VERSION
    assert info.container_runtime_version.startswith("containerd://")
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["InternalIP"] == cluster.ip


# --------------------------------------------------------------------------- runner Jobs


def test_runner_job_backs_up_sqlite_on_a_persistent_volume(
    cluster: Node,
    api: Any,
    runner_image: Image,
    cluster_namespace: str,
    backup_key: Path,
    tmp_path: Path,
) -> None:
    """`safehold --version` and a real, encrypted `safehold backup` in a Pod (the key from a
    Secret volume); the result comes back as the termination message, and the repository it
    wrote on the volume restores the database here."""
    from kubernetes import client

    data = tmp_path / "volume"
    data.mkdir()
    make_db(data / "app.db", rows=500)
    for p in (data, data / "app.db"):
        os.chown(p, RUNNER_UID, RUNNER_UID)
    pv = f"{cluster_namespace}-data"
    core = client.CoreV1Api(api)
    core.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "hostPath": {"path": str(data), "type": "Directory"},
            },
        }
    )
    try:
        core.create_namespaced_persistent_volume_claim(
            cluster_namespace,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "app-data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "volumeName": pv,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        script = (
            "safehold --version >&2 && "
            "safehold backup -t sqlite:///data/app.db -r file:///data/repo -c zstd "
            "--key-file /keys/key --output json > /dev/termination-log"
        )
        pod = run_job(
            api,
            cluster_namespace,
            job(
                "sqlite-backup",
                runner_image.ref,
                script,
                container={
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/data"},
                        {"name": "key", "mountPath": "/keys", "readOnly": True},
                    ]
                },
                volumes=[
                    {"name": "data", "persistentVolumeClaim": {"claimName": "app-data"}},
                    {"name": "key", "secret": {"secretName": "backup-key"}},
                ],
            ),
        )
        state = terminated(pod)
        assert pod.status.phase == "Succeeded", state.message
        result = json.loads(state.message)
        assert result["compression"].startswith("zstd")
        assert result["encryption"] == "aes-256-gcm"
        logs = core.read_namespaced_pod_log(pod.metadata.name, cluster_namespace)
        assert "safehold, version" in logs
        # the repository the Pod wrote on the volume holds a backup that restores the database
        restored = tmp_path / "restored.db"
        run("restore", "-r", (data / "repo").as_uri(), "-b", result["backup_id"],
            "-t", f"sqlite://{restored}", "--from", "app",
            "--key-file", str(backup_key))  # fmt: skip
        assert dump(restored) == dump(data / "app.db")
    finally:
        core.delete_persistent_volume(pv)


def test_failing_runner_reports_its_error_in_the_termination_message(
    api: Any, runner_image: Image, cluster_namespace: str
) -> None:
    pod = run_job(
        api,
        cluster_namespace,
        job(
            "missing-db",
            runner_image.ref,
            "safehold backup -t sqlite:///nope/app.db -r file:///tmp/r --no-encryption",
        ),
    )
    state = terminated(pod)
    assert pod.status.phase == "Failed"
    assert state.exit_code != 0
    assert "/nope/app.db" in state.message  # FallbackToLogsOnError: the CLI's own error


def test_runner_job_backs_up_into_the_s3_emulator(
    cluster: Node,
    api: Any,
    runner_image: Image,
    cluster_namespace: str,
    s3_server: MotoS3,
    s3_bucket: str,
    backup_key: Path,
    tmp_path: Path,
) -> None:
    """The S3 emulator runs in the test namespace on 127.0.0.1; Pods reach it at the node IP.
    The key comes from the Secret by reference (``secretKeyRef``)."""
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"row {i}") for i in range(100)])
    conn.close()
    env = {**s3_server.env(), "AWS_ENDPOINT_URL": f"http://{cluster.pod_address(s3_server.port)}"}
    script = (
        "python3 -c \"import sqlite3; c = sqlite3.connect('/tmp/app.db'); "
        "c.execute('CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)'); "
        "c.executemany('INSERT INTO t VALUES (?, ?)', [(i, f'row {i}') for i in range(100)]); "
        "c.commit()\" && "
        f"safehold backup -t sqlite:///tmp/app.db -r s3://{s3_bucket}/pods --output json "
        "> /dev/termination-log"
    )
    pod = run_job(
        api,
        cluster_namespace,
        job(
            "s3-backup",
            runner_image.ref,
            script,
            container={
                "env": [
                    *({"name": k, "value": v} for k, v in env.items()),
                    {
                        "name": "SAFEHOLD_KEY",
                        "valueFrom": {"secretKeyRef": {"name": "backup-key", "key": "key"}},
                    },
                ]
            },
        ),
    )
    state = terminated(pod)
    assert pod.status.phase == "Succeeded", state.message
    backup_id = json.loads(state.message)["backup_id"]
    keys = [
        o["Key"]
        for o in s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="pods/")["Contents"]
    ]
    assert any(backup_id in k for k in keys), keys
    # restore here, from the emulator, what the Pod wrote there
    restored = tmp_path / "restored.db"
    run("restore", "-r", f"s3://{s3_bucket}/pods", "-b", backup_id,
        "-t", f"sqlite://{restored}", "--from", "app", "--key-file", str(backup_key),
        env=s3_server.env())  # fmt: skip
    assert dump(restored) == dump(db)


# --------------------------------------------------------------------------- networking


class _Token(http.server.BaseHTTPRequestHandler):
    token = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.token)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def token_server() -> Iterator[tuple[int, str]]:
    """An HTTP server on this namespace's 127.0.0.1 answering a random token."""
    token = secrets.token_hex(16)
    handler = type("Handler", (_Token,), {"token": token.encode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], token
    finally:
        server.shutdown()
        server.server_close()


def test_pod_on_the_bridge_reaches_a_server_in_the_test_namespace(
    cluster: Node,
    api: Any,
    runner_image: Image,
    cluster_namespace: str,
    token_server: tuple[int, str],
) -> None:
    port, token = token_server
    url = f"http://{cluster.pod_address(port)}/"
    script = (
        "python3 -c \"import urllib.request, sys; "
        f"sys.stdout.write(urllib.request.urlopen('{url}', timeout=10).read().decode())\" "
        "> /dev/termination-log"
    )
    pod = run_job(api, cluster_namespace, job("reach-server", runner_image.ref, script))
    state = terminated(pod)
    assert pod.status.phase == "Succeeded", state.message
    assert state.message == token
    assert pod.status.pod_ip.startswith("10.244.77.")  # on the CNI bridge, not the node's net


def test_kubernetes_service_reaches_the_apiserver_through_kube_proxy(
    api: Any, runner_image: Image, cluster_namespace: str
) -> None:
    """A Pod's in-cluster client path: the `kubernetes` ClusterIP, the ServiceAccount token and
    CA mounted by the ServiceAccount admission plugin, the apiserver behind kube-proxy."""
    script = (
        "python3 - > /dev/termination-log <<'PY'\n"
        "import json, os, ssl, urllib.request\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "host = os.environ['KUBERNETES_SERVICE_HOST']\n"
        "port = os.environ['KUBERNETES_SERVICE_PORT']\n"
        "ctx = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
        "req = urllib.request.Request(f'https://{host}:{port}/version')\n"
        "req.add_header('Authorization', 'Bearer ' + open(sa + '/token').read())\n"
        "body = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))\n"
        "print(json.dumps({'host': host, 'gitVersion': body['gitVersion']}))\n"
        "PY\n"
    )
    pod = run_job(api, cluster_namespace, job("in-cluster", runner_image.ref, script))
    state = terminated(pod)
    assert pod.status.phase == "Succeeded", state.message
    assert json.loads(state.message) == {"host": SERVICE_IP, "gitVersion": KUBE_VERSION}
