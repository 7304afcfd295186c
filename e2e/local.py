"""``local`` mode: the real single-node cluster of the tests (the node ``make cluster`` runs:
tests/infra/node.py inside the session's network namespace), the chart installed with helm as
``scripts/cluster up`` does (tests/infra/local_cluster.helm_install), the operator as a Pod of
its image, the runner and operator images built here. The servers are the session's fixtures
(PostgreSQL 15, MariaDB, moto, fake-gcs-server, Azurite) on the namespace's 127.0.0.1; Pods reach
them at SAFEHOLD_HOST_IP (the node IP) and their ports, as under ``scripts/cluster exec``."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.cluster.kit import (
    RUNNER_UID,
    adopt_crds,
    kubectl,
    mariadb_pod_user,
    owned_dirs,
    pg_allow_pods,
)
from tests.infra.helm import helm
from tests.infra.images import image_size
from tests.infra.local_cluster import RELEASE, helm_install
from tests.infra.netns import NODE_IP

from e2e import data
from e2e.system import PITR_CLAIM, STORES, System, drop_buckets

ENGINES = ("postgresql", "mariadb", "sqlite")
OPERATOR_NAMESPACE = "safehold-e2e-system"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}
COPIES = (*(f"{data.SOURCE}_from_{s}" for s in STORES), data.AT_TIME)
RESTORE_UID = 999  # the postgres images' user: the point-in-time Restore writes pgdata as it
STREAMER_POLL_SECONDS = 5  # how often the operator reads the streamers' status (chart: 30)
# the replication slots of the examples' WAL streamers (safehold_<target>)
DROP_SLOTS = ("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
              " WHERE slot_name LIKE 'safehold\\_%' AND NOT active")


def _postgres(pg: Any) -> None:
    """The role and database the examples name: `safehold` (password of
    docs/examples/postgresql/credentials.yaml, may create databases and replicate) owning
    `shop`; replication open to Pods and max_slot_wal_keep_size bounded (pointintime-target's
    WAL streamer)."""
    pg_allow_pods(pg, replication=True)
    pg.psql("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'safehold') THEN "
            "CREATE ROLE safehold LOGIN CREATEDB REPLICATION PASSWORD 'change-me-postgresql';"
            " END IF; END$$")
    pg.psql("ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'")
    pg.psql("SELECT pg_reload_conf()")
    pg.psql(f"CREATE DATABASE {data.SOURCE} OWNER safehold")
    pg.psql("SET ROLE safehold;" + data.PG_SEED, data.SOURCE)


def _drop_slots(pg: Any) -> None:
    """The WAL streamer's slot, once its Pod (deleted with the namespace) no longer holds it:
    left behind, it would keep WAL on the session's server."""
    deadline = time.monotonic() + 120
    while pg.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE"
                  " 'safehold\\_%' AND active") != "0" and time.monotonic() < deadline:
        time.sleep(2)
    with contextlib.suppress(subprocess.CalledProcessError):
        pg.psql(DROP_SLOTS)


def _drop_postgres(pg: Any) -> None:
    for db in (data.SOURCE, *COPIES):
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    with contextlib.suppress(subprocess.CalledProcessError):
        pg.psql("DROP ROLE IF EXISTS safehold")


def _mariadb(server: Any) -> None:
    mariadb_pod_user(server, "safehold", "change-me-mariadb")
    server.sql(f"CREATE DATABASE {data.SOURCE} CHARACTER SET utf8mb4")
    server.sql(data.MARIADB_SEED, data.SOURCE)


def _drop_mariadb(server: Any) -> None:
    for db in (data.SOURCE, *COPIES):
        with contextlib.suppress(subprocess.CalledProcessError):
            server.sql(f"DROP DATABASE IF EXISTS {db}")


def _sqlite(directory: Path) -> Any:
    def run(action: str, name: str) -> str:
        path = directory / name
        out = subprocess.run([sys.executable, "-c", data.SQLITE_SCRIPT, action, str(path)],
                             capture_output=True, text=True, check=True).stdout
        if action == "seed":
            os.chown(path, RUNNER_UID, RUNNER_UID)
        return out
    return run


def _restored_postgres(pg: Any, directory: Path) -> Callable[
        [str], contextlib.AbstractContextManager[Callable[[str, str], str]]]:
    """The host's PostgreSQL 15 (no postgres image here) started on the pgdata the Restore
    wrote into the claim bound to ``directory``, as a Pod of that image would start it."""
    from tests.integration.test_pg_physical import Restored

    @contextlib.contextmanager
    def start(claim: str) -> Iterator[Callable[[str, str], str]]:
        assert claim == PITR_CLAIM, claim
        restored = Restored(pg, directory / "pgdata")
        try:
            yield lambda database, statements: restored.psql(statements, database)
        finally:
            restored.stop()
    return start


def local_system(request: pytest.FixtureRequest) -> Iterator[System]:
    """The ``local`` System; everything it made is removed afterwards (the node, servers and
    images are the session's, shared with tests/cluster)."""
    from kubernetes import client

    cluster = request.getfixturevalue("cluster")
    runner = request.getfixturevalue("runner_image")
    operator = request.getfixturevalue("operator_image")
    pg = request.getfixturevalue("pg15")  # the runner image carries PostgreSQL client 15
    maria = request.getfixturevalue("mariadb_server")
    stores = {s: request.getfixturevalue(f"{s}_server") for s in STORES}
    work = request.getfixturevalue("tmp_path_factory").mktemp("e2e")
    ns = f"e2e-{uuid.uuid4().hex[:8]}"
    sqlite_dir = work / "app-data"
    owned_dirs(sqlite_dir)
    endpoints = {s: f"http://127.0.0.1:{store.port}" for s, store in stores.items()}
    helm_env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
                "HELM_CACHE_HOME": str(work / "helm-cache"),
                "HELM_CONFIG_HOME": str(work / "helm-config")}

    with cluster.api_client() as api, contextlib.ExitStack() as cleanup:
        core = client.CoreV1Api(api)
        cleanup.callback(_drop_slots, pg)  # last: after the namespaces' deletion
        for name in (OPERATOR_NAMESPACE, ns):
            core.create_namespace({"metadata": {"name": name, "labels": RESTRICTED}})
            cleanup.callback(core.delete_namespace, name, grace_period_seconds=0)
        adopt_crds(api, RELEASE, OPERATOR_NAMESPACE)
        installed = helm_install(
            cluster.kubeconfig, runner.ref, operator.ref, home=work, release=RELEASE,
            namespace=OPERATOR_NAMESPACE,
            # the operator serves the e2e namespace only: the session's other tests run their
            # own (in-process) operators in theirs
            extra=("--set", f"watchNamespaces={{{ns}}}",
                   "--set", f"pointInTime.pollSeconds={STREAMER_POLL_SECONDS}"))
        cleanup.callback(helm, "uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE,
                         "--wait", env=helm_env)
        # the example's claim app-data binds to this volume (no provisioner on the node)
        pv = f"{ns}-app-data"
        core.create_persistent_volume({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "", "claimRef": {"namespace": ns, "name": "app-data"},
                     "hostPath": {"path": str(sqlite_dir), "type": "Directory"}}})
        cleanup.callback(core.delete_persistent_volume, pv)
        # the claim the point-in-time Restore's claimTemplate makes binds to this one; the
        # Restore's Job (uid 999) writes pgdata into it
        # (outside pytest's 0700 tmp: the host's server runs on it as the unprivileged test user)
        restored_dir = Path(tempfile.mkdtemp(prefix="safehold-e2e-pgvolume-"))
        cleanup.callback(shutil.rmtree, restored_dir, ignore_errors=True)
        restored_dir.chmod(0o755)
        os.chown(restored_dir, RESTORE_UID, RESTORE_UID)
        pitr_pv = f"{ns}-pitr-restore"
        core.create_persistent_volume({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pitr_pv},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "", "claimRef": {"namespace": ns, "name": PITR_CLAIM},
                     "hostPath": {"path": str(restored_dir), "type": "Directory"}}})
        cleanup.callback(core.delete_persistent_volume, pitr_pv)
        cleanup.callback(_drop_postgres, pg)
        _postgres(pg)
        cleanup.callback(_drop_mariadb, maria)
        _mariadb(maria)
        cleanup.callback(drop_buckets, endpoints)

        def sql(engine: str, database: str, statements: str) -> str:
            if engine == "postgresql":
                return str(pg.psql(statements, database))
            return str(maria.sql(statements, database))

        yield System(
            mode="local", namespace=ns, engines=ENGINES,
            variables={"SAFEHOLD_HOST_IP": NODE_IP, "POSTGRES_PORT": str(pg.port),
                       "MARIADB_PORT": str(maria.port),
                       **{f"{s.upper()}_PORT": str(st.port) for s, st in stores.items()}},
            kubectl=lambda *args, input=None: kubectl(cluster, *args, input=input),
            sql=sql, sqlite=_sqlite(sqlite_dir), store_endpoints=endpoints,
            operator_namespace=OPERATOR_NAMESPACE,
            restored_postgres=_restored_postgres(pg, restored_dir),
            info={"make images (sizes)": "\n".join(
                      f"{image.ref}  size {image_size(image.ref)}" for image in (runner, operator)),
                  "helm install": installed})
