"""spec.pointInTime on a real control plane: the streamer Deployment the operator builds, owns,
replaces and deletes, and its status polled from a real `safehold binlog stream` against a real
MariaDB (no kubelet: the test plays it by marking the streamer pod Running at 127.0.0.1)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.envtest.conftest import Cluster, events_include, eventually, finish_pod
from tests.infra import mariadb
from tests.infra.procs import free_port, serve, unavailable
from tests.unit.controller import samples

PURPOSE = "safehold.dev/purpose=stream"


def _deployments(k8s: Cluster) -> list[Any]:
    from kubernetes import client

    apps = client.AppsV1Api(k8s.api)
    return list(apps.list_namespaced_deployment(k8s.ns, label_selector=PURPOSE).items)


def _pods(k8s: Cluster) -> list[Any]:
    return list(k8s.core.list_namespaced_pod(k8s.ns, label_selector=PURPOSE).items)


def _spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(samples.MARIADB_PIT_TARGET_SPEC)
    spec.update(changes)
    return spec


def _patch_spec(k8s: Cluster, name: str, spec: dict[str, Any]) -> None:
    from safehold.controller.naming import GROUP

    k8s.custom.patch_namespaced_custom_object(GROUP, "v1alpha1", k8s.ns, "backuptargets", name,
                                              {"spec": spec})


def _condition(k8s: Cluster, name: str) -> dict[str, Any] | None:
    return next((c for c in k8s.status("backuptargets", name).get("conditions", [])
                 if c["type"] == "PointInTime"), None)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEHOLD_STREAMER_POLL_SECONDS", "0.5")


def test_streamer_deployment_is_owned_updated_and_deleted(
        k8s: Cluster, operator: Any, fast: None) -> None:
    with operator():
        bt = k8s.create("backuptargets", samples.target("shop", _spec()))
        uid = bt["metadata"]["uid"]
        (dep,) = eventually(lambda: _deployments(k8s), "the streamer Deployment")
        owner = dep.metadata.owner_references[0]
        assert (owner.kind, owner.uid, owner.controller) == ("BackupTarget", uid, True)
        assert (dep.spec.replicas, dep.spec.strategy.type) == (1, "Recreate")
        # the ReplicaSet made a pod: admitted by the API server under `restricted`
        (pod,) = eventually(lambda: _pods(k8s), "the streamer pod admitted (restricted)")
        assert not pod.spec.automount_service_account_token
        assert pod.spec.service_account_name == "safehold-runner"
        status = eventually(lambda: k8s.status("backuptargets", "shop").get("pointInTime"),
                            "status.pointInTime")
        assert (status["deployment"], status["health"]) == (dep.metadata.name, "starting")
        cond = eventually(lambda: _condition(k8s, "shop"), "the PointInTime condition")
        assert (cond["status"], cond["reason"]) == ("Unknown", "StreamerStarting")

        # a spec change replaces the Deployment (deleted first, then created again)
        _patch_spec(k8s, "shop", {"pointInTime": {"enabled": True, "segmentSeconds": 60}})
        (new,) = eventually(lambda: [d for d in _deployments(k8s)
                                     if d.metadata.uid != dep.metadata.uid], "the new Deployment")
        env = new.spec.template.spec.containers[0].env
        assert '"flushEvery":60.0' in next(e.value for e in env if e.name == "SAFEHOLD_TASK")
        assert len(_deployments(k8s)) == 1

        # an unrelated look changes nothing
        time.sleep(2)
        assert [d.metadata.uid for d in _deployments(k8s)] == [new.metadata.uid]

        _patch_spec(k8s, "shop", {"pointInTime": {"enabled": False}})
        eventually(lambda: not _deployments(k8s), "the Deployment deleted")
        eventually(lambda: "pointInTime" not in k8s.status("backuptargets", "shop")
                   and _condition(k8s, "shop") is None, "status.pointInTime cleared")
        events_include(k8s, "shop", {"StreamerCreated", "StreamerUpdating", "StreamerRemoved"})


# ------------------------------------------------------------------ a real streamer


@pytest.fixture(scope="module")
def server() -> Iterator[mariadb.MariaDB]:
    if mariadb.server_binary() is None:
        unavailable("MariaDB", "mariadbd not installed")
    yield from serve(mariadb.MariaDB(), "MariaDB")


def _cli_env(tmp_path: Path, server: mariadb.MariaDB) -> dict[str, str]:
    cfg = tmp_path / "safehold.yaml"
    cfg.write_text("{}\n")
    key = tmp_path / "key"
    key.write_text("a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=\n")
    return {**os.environ, "SAFEHOLD_CONFIG": str(cfg), "SAFEHOLD_KEY_FILE": str(key),
            "SAFEHOLD_PASSWORD": server.password}


def test_status_is_polled_from_a_real_streamer(
        k8s: Cluster, operator: Any, fast: None, server: mariadb.MariaDB, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    db = f"pit_{os.urandom(3).hex()}"
    server.sql(f"CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY);"
               f" INSERT INTO {db}.t VALUES (1), (2)")
    url = f"mariadb://{server.user}@{server.host}:{server.port}/{db}"
    repo = (tmp_path / "repo").as_uri()
    env = _cli_env(tmp_path, server)
    full = json.loads(subprocess.run(
        [sys.executable, "-m", "safehold.cli", "-o", "json", "backup", "-t", url, "-r", repo,
         "--name", "shop"], env=env, capture_output=True, text=True, check=True).stdout)
    port = free_port()
    monkeypatch.setenv("SAFEHOLD_STREAMER_STATUS_PORT", str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "safehold.cli", "binlog", "stream", "-t", url, "-r", repo,
         "--name", "shop", "--poll", "0.1", "--spool", str(tmp_path / "spool"),
         "--status-port", str(port), "--status-address", "127.0.0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with operator():
            k8s.create("backuptargets", samples.target("shop", _spec()))
            (pod,) = eventually(lambda: _pods(k8s), "the streamer pod")
            # play the kubelet: the pod runs, at the address the real streamer listens on
            k8s.core.patch_namespaced_pod_status(pod.metadata.name, k8s.ns, {"status": {
                "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}})
            pit = eventually(
                lambda: (s := k8s.status("backuptargets", "shop").get("pointInTime", {}))
                .get("health") == "ok" and s, "the streamer's health polled into status")
            assert datetime.fromisoformat(pit["windowStart"]) == datetime.fromisoformat(
                full["end_position"]["time"])
            assert pit["windowEnd"] and pit["lastPollTime"]
            first = server.sql("SHOW MASTER STATUS").split()[0]
            server.sql(f"INSERT INTO {db}.t VALUES (3); FLUSH BINARY LOGS")
            pit = eventually(
                lambda: (s := k8s.status("backuptargets", "shop").get("pointInTime", {}))
                .get("lastSegment") == first and s.get("lagBytes") is not None and s,
                "the archived file and the lag polled into status")
            assert pit["lastSegmentTime"] and pit["lagSeconds"] is not None
            assert datetime.fromisoformat(pit["windowEnd"]) >= datetime.fromisoformat(
                pit["windowStart"])
            cond = eventually(lambda: (c := _condition(k8s, "shop")) and c["status"] == "True"
                              and c, "PointInTime True")
            assert cond["reason"] == "Streaming" and "recoverable window" in cond["message"]

            proc.send_signal(signal.SIGTERM)  # the streamer goes away: a real fault
            proc.wait(timeout=60)
            cond = eventually(lambda: (c := _condition(k8s, "shop")) and c["status"] == "False"
                              and c, "PointInTime False")
            assert cond["reason"] == "StreamerUnreachable"
            assert f"127.0.0.1:{port}/status" in cond["message"]
            pit = k8s.status("backuptargets", "shop")["pointInTime"]
            assert pit["health"] == "unreachable" and pit["windowStart"]  # last known window
    finally:
        proc.kill()
        proc.wait()
        server.sql(f"DROP DATABASE IF EXISTS {db}")


# ------------------------------------------------------------------ Restore to a point in time


def _restore(name: str, target: str, point: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "safehold.dev/v1alpha1", "kind": "Restore",
            "metadata": samples.meta(name, uid=""),
            "spec": {"source": {"targetRef": {"name": target}, "pointInTime": point},
                     "destination": {"database": "shop_copy"}}}


def test_a_restore_to_a_time_plans_and_runs_the_recovery_task(
        k8s: Cluster, operator: Any) -> None:
    from safehold.api.common import ErrorInfo
    from safehold.api.result import TaskResult
    from safehold.api.task import parse_task

    when = "2026-12-02T18:30:05Z"
    with operator():
        k8s.create("backuptargets", samples.target("shop", _spec(pointInTime=None)))
        rs = k8s.create("restores", _restore("to-time", "shop", {"time": when}))
        uid = rs["metadata"]["uid"]
        (plan_job,) = eventually(lambda: k8s.jobs(uid, "plan"), "the plan Job")
        task = parse_task(plan_job.spec.template.spec.containers[0].env[0].value)
        assert task.kind == "restore" and task.plan_only and task.source == "shop"
        assert task.recovery is not None and task.recovery.time is not None
        assert task.recovery.time.isoformat() == "2026-12-02T18:30:05+00:00"
        planned = TaskResult(kind="restore", phase="Completed", target="shop", plan_only=True,
                             backup_id="20261202T180000.000001Z",
                             chain=["20261202T180000.000001Z"],
                             restored_to=datetime.fromisoformat("2026-12-02T18:30:05+00:00"))
        finish_pod(k8s, plan_job, exit_code=0, message=planned.to_termination_message())
        (run_job,) = eventually(lambda: k8s.jobs(uid, "restore"), "the restore Job")
        task = parse_task(run_job.spec.template.spec.containers[0].env[0].value)
        assert task.kind == "restore" and not task.plan_only
        assert task.recovery is not None and task.recovery.time == planned.restored_to
        assert task.database.url is not None and task.database.url.endswith("/shop_copy")
        status = k8s.status("restores", "to-time")
        assert status["plan"]["restoredTo"] == "2026-12-02T18:30:05Z"
        refused = TaskResult.failure("restore", ErrorInfo(
            error_class="OutsideWindow", exit_code=2,
            message="time 2026-12-02T18:30:05+00:00 is outside the recoverable window of shop:"
                    " 2026-12-02T18:00:00+00:00 .. 2026-12-02T18:10:00+00:00"))
        finish_pod(k8s, run_job, exit_code=2, message=refused.to_termination_message())
        failed = eventually(lambda: (s := k8s.status("restores", "to-time")).get("phase")
                            == "Failed" and s, "the Restore Failed")
    cond = next(c for c in failed["conditions"] if c["type"] == "Completed")
    assert cond["reason"] == "OutsideWindow" and "recoverable window" in cond["message"]


def _refused_at_once(k8s: Cluster, operator: Any, target: str, spec: dict[str, Any]
                     ) -> dict[str, Any]:
    """A Restore to a time of ``target`` ends Failed before any Job; its Completed condition."""
    with operator():
        k8s.create("backuptargets", samples.target(target, spec))
        rs = k8s.create("restores", _restore("pg-time", target,
                                             {"time": "2026-12-02T18:30:05Z"}))
        failed = eventually(lambda: (s := k8s.status("restores", "pg-time")).get("phase")
                            == "Failed" and s, "the Restore Failed")
        assert not k8s.jobs(rs["metadata"]["uid"])
    cond: dict[str, Any] = next(c for c in failed["conditions"] if c["type"] == "Completed")
    assert cond["reason"] == "PointInTimeUnsupported"
    return cond


def test_a_restore_to_a_time_of_an_engine_without_a_streamer_fails_at_once(
        k8s: Cluster, operator: Any) -> None:
    cond = _refused_at_once(k8s, operator, "app", samples.SQLITE_TARGET_SPEC)  # no streamer
    assert "restore a backup instead" in cond["message"]


def test_a_postgresql_restore_to_a_time_into_a_database_is_refused_naming_the_volume(
        k8s: Cluster, operator: Any) -> None:
    """PostgreSQL replays WAL into a new data directory: a Restore to a time into a database
    fails at once, naming destination.volume."""
    spec = {**samples.PG_TARGET_SPEC, "method": "physical", "pointInTime": {"enabled": False}}
    cond = _refused_at_once(k8s, operator, "orders", spec)
    assert "give destination.volume" in cond["message"]


def test_a_postgresql_restore_to_a_time_runs_into_a_new_claim(
        k8s: Cluster, operator: Any) -> None:
    """destination.volume with a claimTemplate: the plan Job mounts nothing; then the claim
    (not owned by the Restore) and the restore Job, which mounts it and runs as the database
    image's user, writing the data directory with the WAL bundled."""
    from safehold.api.result import TaskResult
    from safehold.api.task import parse_task

    spec = {**samples.PG_TARGET_SPEC, "method": "physical", "pointInTime": {"enabled": False}}
    body = _restore("pg-volume", "orders", {"time": "2026-12-02T18:30:05Z"})
    body["spec"]["destination"] = {"volume": {"claimTemplate": {
        "storage": "2Gi", "storageClassName": "fast"}, "runAsUser": 70}}
    with operator():
        k8s.create("backuptargets", samples.target("orders", spec))
        uid = k8s.create("restores", body)["metadata"]["uid"]
        (plan_job,) = eventually(lambda: k8s.jobs(uid, "plan"), "the plan Job")
        plan_pod = plan_job.spec.template.spec
        assert not [v for v in plan_pod.volumes if v.persistent_volume_claim]
        task = parse_task(plan_pod.containers[0].env[0].value)
        assert task.plan_only and task.data_dir == "/restore/pgdata" and task.database is None
        planned = TaskResult(kind="restore", phase="Completed", target="orders",
                             plan_only=True, backup_id="20261202T180000.000001Z",
                             chain=["20261202T180000.000001Z"],
                             restored_to=datetime.fromisoformat("2026-12-02T18:30:05+00:00"))
        finish_pod(k8s, plan_job, exit_code=0, message=planned.to_termination_message())
        (run_job,) = eventually(lambda: k8s.jobs(uid, "restore"), "the restore Job")
        events_include(k8s, "pg-volume", {"ClaimCreated"})
    claim = k8s.core.read_namespaced_persistent_volume_claim("pg-volume-data", k8s.ns)
    assert not claim.metadata.owner_references  # the restored data outlives the Restore
    assert claim.spec.resources.requests["storage"] == "2Gi"
    assert claim.spec.storage_class_name == "fast"
    pod = run_job.spec.template.spec
    (mount,) = [m for m in pod.containers[0].volume_mounts if m.mount_path == "/restore"]
    (volume,) = [v for v in pod.volumes if v.name == mount.name]
    assert volume.persistent_volume_claim.claim_name == "pg-volume-data"
    assert (pod.security_context.run_as_user, pod.security_context.run_as_group) == (70, 70)
    assert pod.security_context.fs_group == 70 and pod.security_context.run_as_non_root
    task = parse_task(pod.containers[0].env[0].value)
    assert not task.plan_only and task.data_dir == "/restore/pgdata"
    assert task.recovery is not None and task.recovery.time == planned.restored_to
