"""spec.pointInTime for PostgreSQL on a real control plane: the operator polls a real
`safehold wal stream` (its status endpoint) against a real PostgreSQL 15 into the
BackupTarget's status — the window from the physical full's end to the newest covered commit,
the archived segment, the PointInTime condition (no kubelet: the test plays it by marking the
streamer pod Running at 127.0.0.1, as tests/envtest/test_pointintime.py does for MariaDB)."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.envtest.conftest import Cluster, eventually
from tests.envtest.test_pointintime import _condition, _pods, fast
from tests.infra.postgres import SUPERUSER, Postgres
from tests.infra.procs import free_port
from tests.integration.pg_wal_helpers import close_segments_until
from tests.unit.controller import samples

__all__ = ["fast"]

PG_PIT_TARGET_SPEC: dict[str, Any] = {
    **copy.deepcopy(samples.PG_TARGET_SPEC), "method": "physical",
    "pointInTime": {"enabled": True}}


def test_a_postgresql_target_needs_the_physical_method_for_point_in_time(
        k8s: Cluster) -> None:
    from kubernetes.client.exceptions import ApiException

    spec = {**PG_PIT_TARGET_SPEC, "method": "logical"}
    with pytest.raises(ApiException) as err:
        k8s.create("backuptargets", samples.target("logical-pit", spec))
    assert err.value.status == 422 and "set method: physical" in str(err.value.body)


def test_status_is_polled_from_a_real_wal_streamer(
        k8s: Cluster, operator: Any, fast: None, pg15: Postgres, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pg = pg15
    pg.psql("ALTER SYSTEM SET max_slot_wal_keep_size = '4GB'")
    pg.psql("SELECT pg_reload_conf()")
    db = f"pit_{os.urandom(3).hex()}"
    pg.psql(f'CREATE DATABASE "{db}"')
    pg.psql("CREATE TABLE t (id int PRIMARY KEY)", db=db)
    url = f"postgresql://{SUPERUSER}@{pg.host}:{pg.port}/{db}"
    repo = (tmp_path / "repo").as_uri()
    cfg, key = tmp_path / "safehold.yaml", tmp_path / "key"
    cfg.write_text("{}\n")
    key.write_text("a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=\n")
    env = {**os.environ, "SAFEHOLD_CONFIG": str(cfg), "SAFEHOLD_KEY_FILE": str(key),
           "SAFEHOLD_PASSWORD": pg.password, "SAFEHOLD_PG_BINDIR": str(pg.bindir)}
    full = json.loads(subprocess.run(
        [sys.executable, "-m", "safehold.cli", "-o", "json", "backup", "-t", url, "-r", repo,
         "--name", "orders", "--method", "physical"], env=env, capture_output=True, text=True,
        check=True).stdout)
    port = free_port()
    monkeypatch.setenv("SAFEHOLD_STREAMER_STATUS_PORT", str(port))
    slot = f"safehold_envtest_{os.urandom(3).hex()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "safehold.cli", "wal", "stream", "-t", url, "-r", repo,
         "--name", "orders", "--slot", slot, "--status-port", str(port),
         "--status-address", "127.0.0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with operator():
            k8s.create("backuptargets", samples.target("orders", PG_PIT_TARGET_SPEC))
            (pod,) = eventually(lambda: _pods(k8s), "the streamer pod")
            k8s.core.patch_namespaced_pod_status(pod.metadata.name, k8s.ns, {"status": {
                "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}})
            pit = eventually(
                lambda: (s := k8s.status("backuptargets", "orders").get("pointInTime", {}))
                .get("health") == "ok" and s, "the streamer's health polled into status")
            assert datetime.fromisoformat(pit["windowStart"]) == datetime.fromisoformat(
                full["end_position"]["time"])
            # a commit, then the segment holding it closed: the streamer archives it, the
            # operator polls the window's new end into status
            before = datetime.fromisoformat(pg.psql("SELECT clock_timestamp()::text"))
            pg.psql("INSERT INTO t VALUES (1)", db=db)  # committed after `before`

            def pit_status() -> dict[str, Any]:
                return dict(k8s.status("backuptargets", "orders").get("pointInTime", {}))

            def window_end() -> datetime | None:
                end = pit_status().get("windowEnd")
                return datetime.fromisoformat(end) if end else None

            close_segments_until(pg, db, before, window_end,
                                 lambda seg: pit_status().get("lastSegment") == seg)
            pit = pit_status()
            assert pit["lagSeconds"] is not None and pit["lastSegmentTime"]
            cond = eventually(lambda: (c := _condition(k8s, "orders")) and c["status"] == "True"
                              and c, "PointInTime True")
            assert cond["reason"] == "Streaming" and "recoverable window" in cond["message"]

            proc.send_signal(signal.SIGTERM)  # stops after the segment being stored: 143
            assert proc.wait(timeout=60) == 143
            cond = eventually(lambda: (c := _condition(k8s, "orders")) and c["status"] == "False"
                              and c, "PointInTime False")
            assert cond["reason"] == "StreamerUnreachable"
    finally:
        proc.kill()
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        proc.wait()
        pg.psql(f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots"
                f" WHERE slot_name = '{slot}' AND NOT active")
        pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        print(out[-3000:])
