"""A BackupTarget of several databases on the real node, against a real MariaDB: the runner Job
backs each database up as its own backup; one database missing ends the Backup
PartiallyFailed with a status per database; a Restore picks one database's backup and the
restored tables match the source."""

from __future__ import annotations

import uuid

import pytest

from tests.cluster.kit import (
    apply_crds,
    condition,
    create,
    finished,
    key_secret,
    operator,
    operator_env,
    restricted,
    s3_credentials,
    secret,
)
from tests.infra.images import Image
from tests.infra.mariadb import MariaDB
from tests.infra.netns import POD_CIDR
from tests.infra.node import Node
from tests.infra.objectstores import MotoS3
from tests.integration import mysql_data


def test_several_databases_partially_failed_and_one_restored(
    cluster: Node, runner_image: Image, cluster_namespace: str, mariadb_server: MariaDB,
    s3_server: MotoS3, s3_bucket: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubernetes import client

    ns = cluster_namespace
    user, password = "backup", "backup-pw"
    pods = POD_CIDR.rsplit(".", 1)[0] + ".%"
    mariadb_server.sql(f"CREATE USER IF NOT EXISTS '{user}'@'{pods}' IDENTIFIED BY"
                       f" '{password}'; GRANT ALL PRIVILEGES ON *.* TO '{user}'@'{pods}'")
    tag = uuid.uuid4().hex[:8]
    one, two, missing, copy = (f"{n}_{tag}" for n in ("one", "two", "missing", "copy"))
    for db in (one, two):
        mariadb_server.sql(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
        mysql_data.create(mariadb_server, db, many_rows=300)
    operator_env(monkeypatch, cluster.kubeconfig, runner_image.ref)
    host, port = cluster.pod_address(mariadb_server.port).rsplit(":", 1)

    def target(database: str, **extra: object) -> dict[str, object]:
        return {
            "engine": "mysql",
            "connection": {"host": host, "port": int(port), "database": database,
                           "username": user,
                           "passwordSecretRef": {"name": "db-password", "key": "password"}},
            "storage": {"url": f"s3://{s3_bucket}/multi-{tag}",
                        "credentialsSecretRef": {"name": "s3-creds"}},
            "encryption": {"keySecretRef": {"name": "db-key"}},
            **extra,
        }

    try:
        with cluster.api_client() as api:
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            apply_crds(api)
            restricted(core, ns)
            secret(core, ns, "db-password", {"password": password})
            s3_credentials(core, ns, "s3-creds", cluster, s3_server)
            key_secret(core, ns, "db-key")
            with operator(ns):
                create(custom, ns, "BackupTarget", "shop", target(
                    "mysql", databases={"names": [one, missing, two]},
                    runner={"backoffLimit": 0}))
                create(custom, ns, "BackupTarget", "copy", target(copy))
                create(custom, ns, "Backup", "shop-1", {"targetRef": {"name": "shop"}})
                done = finished(custom, ns, "backups", "shop-1")
                assert done["phase"] == "PartiallyFailed", done
                phases = {d["database"]: d["phase"] for d in done["databases"]}
                assert phases == {one: "Completed", missing: "Failed", two: "Completed"}, done
                cond = condition(custom, ns, "backups", "shop-1", "Completed")
                assert cond is not None and cond["reason"] == "PartiallyFailed", cond
                assert missing in cond["message"] and "2 of 3 backed up" in cond["message"]
                manifests = {o["Key"].split("/")[1] for o in s3_server.client().list_objects_v2(
                    Bucket=s3_bucket, Prefix=f"multi-{tag}/")["Contents"]
                    if o["Key"].endswith("/manifest.json")}
                assert manifests == {f"shop@{one}", f"shop@{two}"}  # no backup of the missing

                create(custom, ns, "Restore", "two-back", {
                    "source": {"backupRef": {"name": "shop-1"}, "database": two},
                    "destination": {"targetRef": {"name": "copy"}}})
                restored = finished(custom, ns, "restores", "two-back")
                assert restored["phase"] == "Completed", restored
                assert restored["backupId"] == done["backupId"]
        tables = mysql_data.STATIC + mysql_data.LIVE
        assert {t: mysql_data.checksum(mariadb_server, copy, t) for t in tables} == \
            {t: mysql_data.checksum(mariadb_server, two, t) for t in tables}
    finally:
        for db in (one, two, copy):
            mariadb_server.sql(f"DROP DATABASE IF EXISTS `{db}`")
