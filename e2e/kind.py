"""``kind`` mode (for machines with Docker; NOT run here): the same scenarios on the cluster of
``KUBECONFIG`` — a kind cluster with the runner and operator images loaded and the chart
installed in ``safehold-system``, as .github/workflows/e2e-kind.yml prepares it. The databases
(PostgreSQL, MariaDB, MongoDB) and the object-store emulators run in the cluster
(e2e/kind/servers.yaml) behind NodePort Services: SAFEHOLD_HOST_IP is the node's InternalIP.

Settings (environment): ``SAFEHOLD_E2E_RUNNER_IMAGE`` (the runner image in the cluster, for the
Pods that write and read the SQLite file), ``SAFEHOLD_E2E_OPERATOR_NAMESPACE`` (default
``safehold-system``), ``KUBECTL`` (default ``kubectl``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from e2e import data
from e2e.system import System, eventually, render

HERE = Path(__file__).parent / "kind"
SERVERS = "safehold-e2e-servers"
ENGINES = ("postgresql", "mariadb", "sqlite", "mongodb")
# the NodePorts of e2e/kind/servers.yaml
PORTS = {"POSTGRES_PORT": 30432, "MARIADB_PORT": 30306, "MONGODB_PORT": 30017,
         "S3_PORT": 30500, "GCS_PORT": 30443, "AZURE_PORT": 30000}
DEPLOYMENTS = ("postgres", "mariadb", "mongodb", "moto", "fake-gcs", "azurite")
POSTGRES_IMAGE = "docker.io/library/postgres:18"  # servers.yaml's: a restored pgdata's major
RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
              "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def _kubectl(*args: str, input: str | None = None, timeout: float = 600) -> str:
    res = subprocess.run([os.environ.get("KUBECTL", "kubectl"), *args], capture_output=True,
                         text=True, input=input, timeout=timeout, check=False)
    assert res.returncode == 0, f"kubectl {' '.join(args[:6])}: {res.stderr}"
    return res.stdout


def _sql(engine: str, database: str, statements: str) -> str:
    exec_ = ["-n", SERVERS, "exec", "-i"]
    if engine == "postgresql":
        return _kubectl(*exec_, "deploy/postgres", "--", "psql", "-X", "-A", "-t", "-v",
                        "ON_ERROR_STOP=1", "-U", "safehold", "-d", database, "-f", "-",
                        input=statements)
    if engine == "mariadb":
        return _kubectl(*exec_, "deploy/mariadb", "--", "sh", "-c",
                        'MYSQL_PWD="$MARIADB_PASSWORD" mariadb -usafehold -N -B "$0"', database,
                        input=statements)
    return _kubectl(*exec_, "deploy/mongodb", "--", "sh", "-c",
                    'mongosh --quiet -u safehold -p "$SAFEHOLD_PASSWORD" '
                    '--authenticationDatabase shop "$0" --eval "$(cat)"', database,
                    input=statements)


def _sqlite(namespace: str, image: str) -> object:
    """Run data.SQLITE_SCRIPT in a Pod of the runner image that mounts the claim app-data."""
    def run(action: str, name: str) -> str:
        pod = f"sqlite-{action}-{uuid.uuid4().hex[:6]}"
        restricted = {**RESTRICTED, "runAsUser": 65532}
        _kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
            "spec": {"restartPolicy": "Never", "securityContext": {"fsGroup": 65532},
                     "containers": [{"name": "sqlite", "image": image,
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["python3", "-c", data.SQLITE_SCRIPT, action,
                                                 f"/data/{name}"],
                                     "securityContext": restricted,
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data",
                                  "persistentVolumeClaim": {"claimName": "app-data"}}]}}))
        try:
            _kubectl("-n", namespace, "wait", "--for=jsonpath={.status.phase}=Succeeded",
                     f"pod/{pod}", "--timeout=300s")
            return _kubectl("-n", namespace, "logs", pod)
        finally:
            _kubectl("-n", namespace, "delete", "pod", pod, "--wait=false")
    return run


def _restored_postgres(namespace: str) -> Callable[
        [str], contextlib.AbstractContextManager[Callable[[str, str], str]]]:
    """A Pod of the server's postgres image (uid 999, as the Restore wrote pgdata) started on
    the claim's pgdata, as a user would start it; psql through kubectl exec."""
    @contextlib.contextmanager
    def start(claim: str) -> Iterator[Callable[[str, str], str]]:
        pod = f"restored-{uuid.uuid4().hex[:6]}"
        mount = "/var/lib/postgresql/restored"
        _kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
            "spec": {"securityContext": {"fsGroup": 999},
                     "containers": [{"name": "postgres", "image": POSTGRES_IMAGE,
                                     "env": [{"name": "PGDATA", "value": f"{mount}/pgdata"}],
                                     "securityContext": {**RESTRICTED, "runAsUser": 999,
                                                         "runAsGroup": 999},
                                     "volumeMounts": [{"name": "data", "mountPath": mount}]}],
                     "volumes": [{"name": "data",
                                  "persistentVolumeClaim": {"claimName": claim}}]}}))

        def psql(database: str, statements: str) -> str:
            return _kubectl("-n", namespace, "exec", "-i", pod, "--", "psql", "-X", "-A", "-t",
                            "-v", "ON_ERROR_STOP=1", "-U", "safehold", "-d", database, "-f", "-",
                            input=statements).strip()

        def answers() -> bool:
            try:
                return bool(psql("postgres", "SELECT 1"))
            except AssertionError:
                return False

        try:
            _kubectl("-n", namespace, "wait", "--for=condition=Ready", f"pod/{pod}",
                     "--timeout=300s")
            eventually(answers, f"the restored server in Pod {pod} to answer", timeout=300)
            yield psql
        finally:
            _kubectl("-n", namespace, "delete", "pod", pod, "--wait=false")
    return start


def _image_sizes() -> str:
    """The images' sizes as Docker counts them (the workflow builds them with docker)."""
    if shutil.which("docker") is None:
        return "(no docker here)"
    return _run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}  size {{.Size}}",
                 "--filter", "reference=safehold/*"])


def _run(argv: list[str]) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    return res.stdout.strip() or res.stderr.strip()


def kind_system() -> Iterator[System]:
    image = os.environ.get("SAFEHOLD_E2E_RUNNER_IMAGE")
    assert image, "kind mode needs SAFEHOLD_E2E_RUNNER_IMAGE (the runner image in the cluster)"
    operator_ns = os.environ.get("SAFEHOLD_E2E_OPERATOR_NAMESPACE", "safehold-system")
    _kubectl("-n", operator_ns, "rollout", "status", "deployment", "--timeout=300s")
    node_ip = _kubectl("get", "nodes", "-o", "jsonpath={.items[0].status.addresses"
                       "[?(@.type==\"InternalIP\")].address}").strip()
    variables = {"SAFEHOLD_HOST_IP": node_ip, **{k: str(v) for k, v in PORTS.items()}}
    _kubectl("apply", "-f", "-", input=render(HERE / "servers.yaml", variables))
    for name in DEPLOYMENTS:
        _kubectl("-n", SERVERS, "rollout", "status", f"deployment/{name}", "--timeout=600s")
    ns = f"e2e-{uuid.uuid4().hex[:8]}"
    _kubectl("create", "namespace", ns)
    _kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    try:
        _sql("postgresql", data.SOURCE, data.PG_SEED)
        _sql("mariadb", data.SOURCE, data.MARIADB_SEED)
        _sql("mongodb", data.SOURCE, data.MONGODB_SEED)
        yield System(
            mode="kind", namespace=ns, variables=variables, engines=ENGINES,
            kubectl=_kubectl, sql=_sql, sqlite=_sqlite(ns, image),  # type: ignore[arg-type]
            store_endpoints={s: f"http://{node_ip}:{PORTS[f'{s.upper()}_PORT']}"
                             for s in ("s3", "gcs", "azure")},
            operator_namespace=operator_ns, restored_postgres=_restored_postgres(ns),
            info={"image sizes (docker)": _image_sizes()})
    finally:
        _kubectl("delete", "namespace", ns, SERVERS, "--wait=false")
