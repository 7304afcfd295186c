"""Point in time on the real node (PostgreSQL 15): a physical BackupTarget with pointInTime runs
`safehold wal stream` as its streamer Deployment (a real restricted pod on a replication slot),
the operator polls the recoverable window into status, and a Restore to a time between two
writes into a volume (destination.volume) leaves a data directory that PostgreSQL 15 starts
as it is, with no safehold, repository or key, holding exactly the rows committed by then."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from tests.cluster.kit import (
    apply_crds,
    condition,
    create,
    eventually,
    finished,
    key_secret,
    operator,
    operator_env,
    pg_allow_pods,
    restricted,
    s3_credentials,
    secret,
    status,
    volume,
)
from tests.infra.images import Image
from tests.infra.node import Node
from tests.infra.objectstores import MotoS3
from tests.infra.postgres import PASSWORD, SUPERUSER, Postgres
from tests.integration.pg_wal_helpers import close_segments_until
from tests.integration.test_pg_physical import Restored

RESTORE_UID = 999  # the Debian postgres images' user: destination.volume.runAsUser's default
# the streamer's slot (safehold_<target>), once its pod no longer holds it
DROP_SLOT = ("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
             " WHERE slot_name = 'safehold_db' AND NOT active")


def _rows(read: Postgres | Restored, db: str) -> list[str]:
    out = read.psql("SELECT id || ':' || batch FROM t ORDER BY id", db)
    return out.split() if out else []


def test_a_postgresql_restore_to_a_time_into_a_volume_starts_as_it_is(
    cluster: Node, runner_image: Image, cluster_namespace: str, pg15: Postgres,
    s3_server: MotoS3, s3_bucket: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kubernetes import client

    ns, pg = cluster_namespace, pg15
    operator_env(monkeypatch, cluster.kubeconfig, runner_image.ref)
    monkeypatch.setenv("SAFEHOLD_STREAMER_POLL_SECONDS", "2")
    pg_allow_pods(pg, replication=True)  # the streamer's replication connection
    pg.psql(DROP_SLOT)
    pg.psql("ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'")
    pg.psql("SELECT pg_reload_conf()")
    db = f"pit_{uuid.uuid4().hex[:8]}"
    pg.psql(f'CREATE DATABASE "{db}"')
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, batch text)", db)
    host, port = cluster.pod_address(pg.port).rsplit(":", 1)
    # the claim's directory: the restore Job (uid 999) writes the data directory into it
    root = Path(tempfile.mkdtemp(prefix="safehold-pgvolume-"))
    root.chmod(0o755)
    os.chown(root, RESTORE_UID, RESTORE_UID)

    def write(batch: str, ids: range) -> None:
        pg.psql("INSERT INTO t VALUES " + ", ".join(f"({i}, '{batch}')" for i in ids), db)

    def pit() -> dict[str, object]:
        return dict(status(custom, ns, "backuptargets", "db").get("pointInTime", {}))

    def window_end() -> datetime | None:
        end = pit().get("windowEnd")
        return datetime.fromisoformat(str(end).replace("Z", "+00:00")) if end else None

    restored = None
    try:
        with cluster.api_client() as api:
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            apply_crds(api)
            restricted(core, ns)
            secret(core, ns, "db-password", {"password": PASSWORD})
            s3_credentials(core, ns, "s3-creds", cluster, s3_server)
            key_secret(core, ns, "db-key")
            write("w0", range(1, 11))
            with volume(core, ns, "restored", root), operator(ns):
                create(custom, ns, "BackupTarget", "db", {
                    "engine": "postgresql", "method": "physical",
                    "connection": {"host": host, "port": int(port), "database": db,
                                   "username": SUPERUSER, "tls": {"mode": "disable"},
                                   "passwordSecretRef": {"name": "db-password",
                                                         "key": "password"}},
                    "storage": {"url": f"s3://{s3_bucket}/pitr-pg",
                                "credentialsSecretRef": {"name": "s3-creds"}},
                    "encryption": {"keySecretRef": {"name": "db-key"}},
                    "pointInTime": {"enabled": True}})
                # the slot first: the archive then holds the WAL from the full's start on
                eventually(lambda: pit().get("health") == "ok", "the streamer healthy")
                create(custom, ns, "Backup", "db-1", {"targetRef": {"name": "db"}})
                done = finished(custom, ns, "backups", "db-1")
                assert done["phase"] == "Completed", done
                # (the streamer reads the window anew every WINDOW_EVERY seconds)
                eventually(lambda: pit().get("windowStart"), "the window starting at the"
                           " full's end")
                cond = condition(custom, ns, "backuptargets", "db", "PointInTime")
                assert cond is not None and cond["reason"] == "Streaming", cond

                write("w1", range(11, 21))
                mark = datetime.fromisoformat(pg.psql("SELECT clock_timestamp()::text"))
                expected = _rows(pg, db)
                time.sleep(0.2)
                write("w2", range(21, 31))  # after the mark: the restore stops before it
                close_segments_until(pg, db, mark, window_end,
                                     lambda seg: pit().get("lastSegment") == seg)
                start = str(pit()["windowStart"]).replace("Z", "+00:00")
                assert datetime.fromisoformat(start) < mark

                create(custom, ns, "Restore", "to-mark", {
                    "source": {"targetRef": {"name": "db"},
                               "pointInTime": {"time": mark.isoformat()}},
                    "destination": {"volume": {"claimName": "restored"}}})
                done = finished(custom, ns, "restores", "to-mark")
                assert done["phase"] == "Completed", done
        data = root / "pgdata"
        assert (data / "safehold_wal").is_dir() and (data / "recovery.signal").exists()
        assert data.stat().st_uid == RESTORE_UID
        restored = Restored(pg, data)  # PostgreSQL 15 alone: the WAL is in the directory
        eventually(lambda: restored.psql("SELECT pg_is_in_recovery()", "postgres") == "f",
                   "the restored server promoted", timeout=120)
        assert _rows(restored, db) == expected  # w0 and w1, not w2
        assert len(expected) == 20 and not (data / "safehold_wal").exists()
    finally:
        if restored is not None:
            restored.stop()
        shutil.rmtree(root, ignore_errors=True)  # the claim's data directory: 80 MB a run
        pg.psql(DROP_SLOT)
        pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
