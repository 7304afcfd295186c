"""Point in time on the real node (MariaDB): a BackupTarget with pointInTime runs its streamer
Deployment as a real restricted pod, the operator polls it into status (the recoverable window),
and a Restore to a time between two writes matches exactly."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import pytest

from tests.cluster.kit import (
    apply_crds,
    condition,
    create,
    eventually,
    finished,
    key_secret,
    mariadb_pod_user,
    operator,
    operator_env,
    restricted,
    s3_credentials,
    secret,
    status,
)
from tests.infra.images import Image
from tests.infra.mariadb import MariaDB
from tests.infra.node import Node
from tests.infra.objectstores import MotoS3


def _rows(server: MariaDB, db: str) -> list[str]:
    out = server.sql(f"SELECT CONCAT(id, ':', batch) FROM `{db}`.t ORDER BY id")
    return out.splitlines() if out else []


def test_point_in_time_window_in_status_and_a_restore_between_two_writes(
    cluster: Node, runner_image: Image, cluster_namespace: str, mariadb_server: MariaDB,
    s3_server: MotoS3, s3_bucket: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubernetes import client

    ns, server = cluster_namespace, mariadb_server
    operator_env(monkeypatch, cluster.kubeconfig, runner_image.ref)
    monkeypatch.setenv("SAFEHOLD_STREAMER_POLL_SECONDS", "2")
    user, password = "backup", "backup-pw"
    mariadb_pod_user(server, user, password)
    source, copy = f"pit_{uuid.uuid4().hex[:8]}", f"pitc_{uuid.uuid4().hex[:8]}"
    server.sql(f"CREATE DATABASE `{source}`; CREATE TABLE `{source}`.t"
               " (id INT PRIMARY KEY, batch VARCHAR(10))")
    host, port = cluster.pod_address(server.port).rsplit(":", 1)

    def target(database: str, **extra: object) -> dict[str, object]:
        return {"engine": "mysql",
                "connection": {"host": host, "port": int(port), "database": database,
                               "username": user,
                               "passwordSecretRef": {"name": "db-password", "key": "password"}},
                "storage": {"url": f"s3://{s3_bucket}/pitr",
                            "credentialsSecretRef": {"name": "s3-creds"}},
                "encryption": {"keySecretRef": {"name": "db-key"}}, **extra}

    def write(batch: str, ids: range) -> None:
        server.sql(f"INSERT INTO `{source}`.t VALUES "
                   + ", ".join(f"({i}, '{batch}')" for i in ids))

    try:
        with cluster.api_client() as api:
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            apply_crds(api)
            restricted(core, ns)
            secret(core, ns, "db-password", {"password": password})
            s3_credentials(core, ns, "s3-creds", cluster, s3_server)
            key_secret(core, ns, "db-key")
            write("w0", range(1, 11))
            with operator(ns):
                create(custom, ns, "BackupTarget", "db", target(
                    source, pointInTime={"enabled": True, "segmentSeconds": 2}))
                create(custom, ns, "BackupTarget", "copy", target(copy))
                create(custom, ns, "Backup", "db-1", {"targetRef": {"name": "db"}})
                done = finished(custom, ns, "backups", "db-1")
                assert done["phase"] == "Completed", done
                pit = eventually(lambda: (s := status(custom, ns, "backuptargets", "db")
                                          .get("pointInTime", {})).get("health") == "ok"
                                 and s.get("windowStart") and s, "the streamer healthy")
                cond = condition(custom, ns, "backuptargets", "db", "PointInTime")
                assert cond is not None and cond["reason"] == "Streaming", cond

                write("w1", range(11, 21))
                time.sleep(1.5)  # binlog times are whole seconds: a clear second either side
                mark = datetime.fromisoformat(server.sql(
                    "SELECT DATE_FORMAT(UTC_TIMESTAMP(), '%Y-%m-%dT%H:%i:%sZ')")
                    .replace("Z", "+00:00"))
                expected = _rows(server, source)
                time.sleep(1.5)
                write("w2", range(21, 31))
                pit = eventually(
                    lambda: (s := status(custom, ns, "backuptargets", "db")
                             .get("pointInTime", {})).get("windowEnd")
                    and datetime.fromisoformat(s["windowEnd"].replace("Z", "+00:00")) > mark
                    and s, "the window past the mark (the streamer archived w2)")
                assert datetime.fromisoformat(pit["windowStart"].replace("Z", "+00:00")) < mark
                assert pit["lastSegment"] and pit["deployment"]

                create(custom, ns, "Restore", "to-mark", {
                    "source": {"targetRef": {"name": "db"},
                               "pointInTime": {"time": mark.isoformat()}},
                    "destination": {"targetRef": {"name": "copy"}}})
                restored = finished(custom, ns, "restores", "to-mark")
                assert restored["phase"] == "Completed", restored
                assert _rows(server, copy) == expected  # w0 and w1, not w2
                assert len(expected) == 20
    finally:
        server.sql(f"DROP DATABASE IF EXISTS `{source}`; DROP DATABASE IF EXISTS `{copy}`")
