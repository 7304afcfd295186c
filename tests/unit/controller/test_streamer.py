"""The pointInTime streamer: its Deployment (golden), the status it turns into, and reading a
real status endpoint (a StatusServer on 127.0.0.1; a garbage server only injects the fault)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from safehold.api.errors import DatabaseProblem
from safehold.api.pointintime import POINT_IN_TIME, PointInTimeStatus
from safehold.api.target import BackupTarget, BackupTargetStatus
from safehold.api.task import StreamTask, parse_task
from safehold.controller.builders import streamer
from safehold.controller.handlers.streamers import _nested_patch, fetch
from safehold.controller.settings import Settings
from safehold.pipeline.streamer_status import StatusBoard, StatusServer
from tests.infra.procs import free_port
from tests.unit.controller import samples
from tests.unit.controller.golden import assert_golden

SETTINGS = Settings(runner_image="safehold/runner:test")
T0 = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)


def _target(**spec: Any) -> BackupTarget:
    return BackupTarget.from_body(samples.target(
        "shop", {**samples.MARIADB_PIT_TARGET_SPEC, **spec}))


def test_deployment_golden() -> None:
    assert_golden("deployment-stream-mariadb", streamer.streamer_deployment(_target(), SETTINGS))


def test_deployment_is_a_restricted_runner_pod_owned_by_the_target() -> None:
    dep = streamer.streamer_deployment(_target(), SETTINGS)
    assert (dep["spec"]["replicas"], dep["spec"]["strategy"]) == (1, {"type": "Recreate"})
    owner = dep["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("BackupTarget", "shop", True)
    pod = dep["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Always"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == SETTINGS.runner_service_account
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["ports"] == [{"name": "status", "containerPort": 8089, "protocol": "TCP"}]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    task = parse_task(next(e["value"] for e in c["env"] if e["name"] == "SAFEHOLD_TASK"))
    assert isinstance(task, StreamTask)
    assert (task.target, task.flush_every, task.status_port) == ("shop", 300.0, 8089)
    assert task.database.password_from is not None  # a mounted file, never a value
    assert "password" not in str(task.database.url)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["src-password"]["secret"]["secretName"] == "shop-db"
    assert volumes["src-keys"]["secret"]["secretName"] == "shop-key"
    assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]


def test_a_changed_spec_changes_the_hash_and_the_same_spec_keeps_it() -> None:
    def digest(t: BackupTarget) -> str:
        return str(streamer.streamer_deployment(t, SETTINGS)["metadata"]["annotations"][
            streamer.SPEC_HASH])

    assert digest(_target()) == digest(_target())
    assert digest(_target()) != digest(_target(pointInTime={"enabled": True}))
    assert digest(_target()) != digest(_target(storage={
        "url": "s3://backups/other", "credentialsSecretRef": {"name": "s3-creds"}}))


def test_status_and_condition_follow_what_the_streamer_reports() -> None:
    board = StatusBoard("mysql", "shop", clock=lambda: T0)
    board.window_from(lambda: (T0 - timedelta(hours=2), T0))
    board.refresh_window()
    board.archived("bin.000007", {"binlog_file": "bin.000007"}, T0)
    board.healthy()
    pit = PointInTimeStatus(deployment="stream-shop-x").polled(board.snapshot(), T0)
    status, reason, message = pit.condition()
    assert (status, reason) == ("True", "Streaming")
    assert "recoverable window 2026-12-02T16:00:00+00:00 .. 2026-12-02T18:00:00+00:00" in message
    assert (pit.window_start, pit.last_segment) == (T0 - timedelta(hours=2), "bin.000007")

    board.failed(DatabaseProblem("server gone", hint="check the host"))
    failing = pit.polled(board.snapshot(), T0)
    assert failing.condition()[:2] == ("False", "DatabaseProblem")
    assert "server gone (hint: check the host)" in failing.condition()[2]
    assert failing.window_end == T0  # the window is still known while failing

    lost = pit.unreachable("http://10.0.0.7:8089/status: connection refused", T0)
    assert lost.condition()[:2] == ("False", "StreamerUnreachable")
    assert "connection refused" in lost.condition()[2]

    old = BackupTargetStatus().streamer_seen(failing, 1, T0)
    new = old.streamer_seen(pit, 1, T0)
    diff = _nested_patch(old, new)
    assert diff["pointInTime"]["error"] is None  # the merge patch clears the old error
    gone = new.streamer_seen(None, 1, T0)
    assert gone.point_in_time is None
    assert all(c.type != POINT_IN_TIME for c in gone.conditions)


def test_fetch_reads_a_real_endpoint_and_names_each_fault() -> None:
    board = StatusBoard("mysql", "shop")
    with StatusServer(board, "127.0.0.1", 0) as server:
        seen, why = fetch("127.0.0.1", server.port)
    assert seen is not None and (seen.target, why) == ("shop", "")

    port = free_port()  # nothing listens there
    seen, why = fetch("127.0.0.1", port, timeout=2)
    assert seen is None and f"127.0.0.1:{port}/status" in why

    class Garbage(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>not a streamer</html>")

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        seen, why = fetch("127.0.0.1", srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()
    assert seen is None and "not a streamer status" in why


def test_only_a_running_pod_of_the_deployments_replicaset_is_asked() -> None:
    from safehold.controller.handlers.streamers import streamer_pod_address

    def pod(ip: str, *, owner: str | None = "stream-shop-x-6d5f", phase: str = "Running",
            deleting: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": f"p-{ip}"}
        if owner:
            meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": owner,
                                        "controller": True}]
        if deleting:
            meta["deletionTimestamp"] = "2026-12-02T18:00:00Z"
        return {"metadata": meta, "status": {"phase": phase, "podIP": ip}}

    assert streamer_pod_address([pod("10.0.0.7")], "stream-shop-x") == "10.0.0.7"
    assert streamer_pod_address([pod("fd00::7")], "stream-shop-x") == "[fd00::7]"
    assert streamer_pod_address([pod("10.0.0.8", owner=None)], "stream-shop-x") is None
    assert streamer_pod_address([pod("10.0.0.9", owner="other-6d5f")], "stream-shop-x") is None
    assert streamer_pod_address([pod("10.0.0.7", phase="Pending")], "stream-shop-x") is None
    assert streamer_pod_address([pod("10.0.0.7"), pod("10.0.0.6", deleting=True)],
                                "stream-shop-x") == "10.0.0.7"
