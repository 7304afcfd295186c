"""Whole path on the real node for the server engines: PostgreSQL and MariaDB.

The operator runs in-process, runner Jobs are real containers in a ``restricted`` namespace, the
database servers and the S3 emulator are the usual session fixtures (inside the test network
namespace; Pods reach them at ``cluster.pod_address(port)``). Per engine, one test walks:

* a BackupTarget with ``connection`` + ``passwordSecretRef``, S3 storage with
  ``credentialsSecretRef`` and a key Secret -> check Job -> Ready=True; a second one with a
  wrong password -> Ready=False with a reason naming the authentication failure;
* a Backup -> exactly one Job -> Completed with the result in status;
* a Restore of it into a new database on the same server (PostgreSQL: ``{database: ...}``;
  MariaDB: a second BackupTarget naming it) -> Completed, and every table the same as in the
  source (checksums);
* Restores naming a Backup object that does not exist, and a backup id the repository does not
  hold -> Failed, the condition naming what is missing.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.cluster.kit import (
    apply_crds,
    condition,
    create,
    eventually,
    finished,
    jobs,
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
from tests.infra.postgres import Postgres
from tests.infra.procs import CACHE
from tests.integration import mysql_data, pg_data

MISSING_ID = "20200101T000000.000000Z"  # a well-formed backup id no repository here holds


@dataclass
class Server:
    """One database server as the test uses it: how Pods log in, and its databases."""

    engine: str  # BackupTarget spec.engine
    port: int
    username: str
    password: str
    source: str  # the database backed up (filled with the engine's mixed-types data)
    copy: str  # the database a Restore creates
    fingerprint: Callable[[str], object]  # per-table checksums of a database
    into_target: bool  # restore into a second BackupTarget (else into {database: copy})


def _postgres(pg: Postgres) -> Iterator[Server]:
    # Pods connect from the CNI bridge (DNAT to 127.0.0.1 keeps their source address)
    hba = pg.datadir / "pg_hba.conf"
    line = f"host all all {POD_CIDR} scram-sha-256\n"
    if line not in hba.read_text():
        with hba.open("a") as f:
            f.write(line)
        pg.psql("SELECT pg_reload_conf()")
    source, copy = f"src_{uuid.uuid4().hex[:8]}", f"copy_{uuid.uuid4().hex[:8]}"
    pg.psql(f'CREATE DATABASE "{source}"')
    try:
        pg_data.build(pg, source)
        yield Server("postgresql", pg.port, pg.user, pg.password, source, copy,
                     lambda db: pg_data.fingerprint(pg, db), into_target=False)
    finally:
        for db in (source, copy):
            pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _mariadb(server: MariaDB) -> Iterator[Server]:
    user, password = "backup", "backup-pw"
    pods = POD_CIDR.rsplit(".", 1)[0] + ".%"
    server.sql(f"CREATE USER IF NOT EXISTS '{user}'@'{pods}' IDENTIFIED BY '{password}';"
               f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'{pods}'")
    source, copy = f"src_{uuid.uuid4().hex[:8]}", f"copy_{uuid.uuid4().hex[:8]}"
    server.sql(f"CREATE DATABASE `{source}` CHARACTER SET utf8mb4")
    try:
        mysql_data.create(server, source, many_rows=2000)
        yield Server("mysql", server.port, user, password, source, copy,
                     lambda db: {t: mysql_data.checksum(server, db, t)
                                 for t in mysql_data.STATIC + mysql_data.LIVE},
                     into_target=True)
    finally:
        for db in (source, copy):
            server.sql(f"DROP DATABASE IF EXISTS `{db}`")


@pytest.fixture(params=["postgresql", "mysql"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """PostgreSQL 15 (the test runner image carries bookworm's client 15) or MariaDB."""
    if request.param == "postgresql":
        yield from _postgres(request.getfixturevalue("pg15"))
    else:
        yield from _mariadb(request.getfixturevalue("mariadb_server"))


def test_server_backup_restore_and_refusals(
    cluster: Node, runner_image: Image, cluster_namespace: str, server: Server,
    s3_server: MotoS3, s3_bucket: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubernetes import client

    ns = cluster_namespace
    operator_env(monkeypatch, cluster.kubeconfig, runner_image.ref)
    host, port = cluster.pod_address(server.port).rsplit(":", 1)
    wrong_password = f"wrong-{uuid.uuid4().hex}"

    def target(password_secret: str, database: str = server.source) -> dict[str, object]:
        return {
            "engine": server.engine,
            "connection": {"host": host, "port": int(port), "database": database,
                           "username": server.username,
                           "passwordSecretRef": {"name": password_secret, "key": "password"}},
            "storage": {"url": f"s3://{s3_bucket}/{server.engine}",
                        "credentialsSecretRef": {"name": "s3-creds"}},
            "encryption": {"keySecretRef": {"name": "db-key"}},
        }

    with cluster.api_client() as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        apply_crds(api)
        restricted(core, ns)
        secret(core, ns, "db-password", {"password": server.password})
        secret(core, ns, "wrong-password", {"password": wrong_password})
        s3_credentials(core, ns, "s3-creds", cluster, s3_server)
        key_secret(core, ns, "db-key")
        with operator(ns):
            create(custom, ns, "BackupTarget", "db", target("db-password"))
            create(custom, ns, "BackupTarget", "wrong", target("wrong-password"))
            if server.into_target:  # the restore's destination: a second target, same server
                create(custom, ns, "BackupTarget", "copy", target("db-password", server.copy))
            into = ({"targetRef": {"name": "copy"}} if server.into_target
                    else {"database": server.copy})
            ready = eventually(lambda: condition(custom, ns, "backuptargets", "db", "Ready"),
                               "db Ready")
            assert ready["status"] == "True", ready
            checks = [j for j in jobs(api, ns, "check")
                      if j.metadata.labels["safehold.dev/target"] == "db"]
            assert len(checks) == 1, checks  # Ready came from its check Job
            create(custom, ns, "Backup", "db-1", {"targetRef": {"name": "db"}})
            create(custom, ns, "Restore", "no-such-object", {
                "source": {"backupRef": {"name": "db-0"}},
                "destination": into})

            wrong = eventually(lambda: condition(custom, ns, "backuptargets", "wrong", "Ready"),
                               "wrong Ready")
            assert wrong["status"] == "False", wrong
            assert wrong["reason"] == "AuthenticationFailed", wrong
            assert "authentication failed" in wrong["message"], wrong
            assert wrong_password not in wrong["message"]

            done = finished(custom, ns, "backups", "db-1")
            assert done["phase"] == "Completed", done
            assert done["backupId"] and done["keyId"] and done["type"] == "full", done
            assert done["rawBytes"] > 0 and done["storedBytes"] > 0, done
            assert len(jobs(api, ns, "backup")) == 1
            stored = s3_server.client().list_objects_v2(
                Bucket=s3_bucket, Prefix=f"{server.engine}/")["Contents"]
            assert any(done["backupId"] in o["Key"] for o in stored), stored

            create(custom, ns, "Restore", "copy", {
                "source": {"backupRef": {"name": "db-1"}},
                "destination": into})
            # not among the Backup objects: a plan Job looks in the repository, which now
            # holds a backup of db, but not this one
            create(custom, ns, "Restore", "no-such-id", {
                "source": {"targetRef": {"name": "db"}, "backupId": MISSING_ID},
                "destination": into})
            restored = finished(custom, ns, "restores", "copy")
            assert restored["phase"] == "Completed", restored
            assert restored["backupId"] == done["backupId"]
            assert server.fingerprint(server.copy) == server.fingerprint(server.source)

            missing = finished(custom, ns, "restores", "no-such-object")
            cond = condition(custom, ns, "restores", "no-such-object", "Completed")
            assert missing["phase"] == "Failed" and cond is not None, missing
            assert cond["reason"] == "BackupNotFound" and "'db-0'" in cond["message"], cond
            missing = finished(custom, ns, "restores", "no-such-id")
            cond = condition(custom, ns, "restores", "no-such-id", "Completed")
            assert missing["phase"] == "Failed" and cond is not None, missing
            assert cond["reason"] == "BackupNotFound", cond
            assert f"no backup '{MISSING_ID}' of target 'db'" in cond["message"], cond
        # the refused restores never got a restore Job
        assert len(jobs(api, ns, "restore")) == 1
    # what `kubectl get` shows a user (the CRDs' printer columns), printed for `pytest -s`
    table = kubectl(cluster, "get", "backuptargets,backups,restores", "-n", ns)
    print(table)
    row = next(line.split() for line in table.splitlines()
               if line.startswith("backup.safehold.dev/db-1"))
    assert row[1:4] == ["db", "full", "Completed"], table
    assert done["backupId"] in row, table


def kubectl(cluster: Node, *args: str) -> str:
    """The real kubectl against the node, as a user would run it; its output."""
    res = subprocess.run([str(CACHE / "bin" / "kubectl"), *args], capture_output=True,
                         text=True, timeout=60, check=False,
                         env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})
    assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"
    return res.stdout
