"""Resilience on the real node: a SQLite Backup interrupted half-way still ends Completed once.

* The operator (a ``kopf run`` child process) is SIGKILLed while its backup Job runs, the Job
  finishes with no operator watching, and a restarted operator records the result from the Job
  it finds: exactly one Job, the Backup Completed. Killed again mid-backup and restarted at
  once, while the Job still runs, it again makes no second Job and records the result.
* The runner process is SIGKILLed (as the OOM killer or a node crash would: no SIGTERM, no
  clean-up, its lease left behind) after it wrote the backup's data key; the Job retries the
  pod (``backoffLimit``), the retry waits for the dead writer's lease to expire (at most
  ``SAFEHOLD_LEASE_TTL``, 60 s by default, after its last renewal), takes it over and resumes
  the same backup id with the same data key: one backup in the repository, the one the status
  names.

The runner is slowed by a CPU limit (``spec.runner.resources``) so a 40 MiB database takes
long enough to be caught in the act; no fault hook in the product.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from safehold.controller.naming import OWNER_NAME
from safehold.repository import layout
from tests.cluster.kit import (
    SLOW,
    apply_crds,
    big_db,
    create,
    eventually,
    finished,
    jobs,
    operator,
    operator_process,
    owned_dirs,
    sqlite_target,
    status,
    volume,
)
from tests.infra.images import Image
from tests.infra.node import Node


@contextmanager
def sqlite_node(cluster: Node, runner_image: Image, ns: str, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Path]]:
    """CRDs, a restricted namespace, the database and repository volumes; (api client, repo)."""
    from kubernetes import client

    data, repo = tmp_path / "data", tmp_path / "repo"
    owned_dirs(data, repo)
    big_db(data / "app.db")
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("SAFEHOLD_RUNNER_IMAGE", runner_image.ref)
    monkeypatch.setenv("SAFEHOLD_IMAGE_PULL_POLICY", "Never")
    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        apply_crds(api)
        core.patch_namespace(ns, {"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})
        with volume(core, ns, "app-data", data), volume(core, ns, "backups", repo):
            yield api, repo


def kill_runner(backup_id: str) -> int:
    """SIGKILL, from the host, the one runner process taking ``backup_id``; its pid."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue  # not a process, or gone
        if b"run-task" in cmdline and b"SAFEHOLD_TASK=" in environ \
                and backup_id.encode() in environ:
            found.append(int(proc.name))
    assert len(found) == 1, f"runner processes of backup {backup_id}: {found}"
    os.kill(found[0], signal.SIGKILL)
    return found[0]


def running_backup(api: Any, custom: Any, ns: str, name: str) -> Any:
    """Create Backup ``name``; its Job once that runs a pod and the status says Running."""
    create(custom, ns, "Backup", name, {"targetRef": {"name": "app"}})
    job = eventually(lambda: next((j for j in jobs(api, ns, "backup") if j.status.active
                                   and j.metadata.annotations.get(OWNER_NAME) == name), None),
                     f"the running Job of {name}")
    eventually(lambda: status(custom, ns, "backups", name).get("phase") == "Running",
               f"{name} Running")
    return job


def backups_in(repo: Path, target: str) -> list[str]:
    """Backup ids with a directory in the file:// repository (complete or not)."""
    return sorted(p.name for p in (repo / target).iterdir() if layout.is_backup_id(p.name))


def test_operator_killed_mid_backup_converges_with_one_job(
        cluster: Node, runner_image: Image, cluster_namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client

    ns = cluster_namespace
    log = tmp_path / "operator.log"
    with sqlite_node(cluster, runner_image, ns, tmp_path, monkeypatch) as (api, repo):
        custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
        with operator_process(ns, log) as first:
            assert sqlite_target(custom, ns, "app", **SLOW)["status"] == "True", log.read_text()
            job = running_backup(api, custom, ns, "app-1")
            first.kill()  # SIGKILL: no clean-up, no last status write
            first.wait(timeout=30)
        # caught in the act: the Job was still running when its operator died
        at_kill = batch.read_namespaced_job(job.metadata.name, ns).status
        assert not at_kill.succeeded and not at_kill.failed, at_kill
        # the Job finishes with no operator watching: nobody records it
        eventually(lambda: batch.read_namespaced_job(job.metadata.name, ns).status.succeeded,
                   "the backup Job to succeed")
        assert status(custom, ns, "backups", "app-1")["phase"] == "Running"
        with operator_process(ns, log) as second:
            done = finished(custom, ns, "backups", "app-1")
            assert done["phase"] == "Completed", (done, log.read_text()[-3000:])
            # killed again mid-backup, and this time restarted at once, the Job still running
            job2 = running_backup(api, custom, ns, "app-2")
            second.kill()
            second.wait(timeout=30)
        with operator_process(ns, log):
            at_restart = batch.read_namespaced_job(job2.metadata.name, ns).status
            assert not at_restart.succeeded and not at_restart.failed, at_restart
            done2 = finished(custom, ns, "backups", "app-2")
        assert done2["phase"] == "Completed", (done2, log.read_text()[-3000:])
        found = jobs(api, ns, "backup")  # the same Jobs, one per Backup
        assert sorted(j.metadata.uid for j in found) == sorted(
            j.metadata.uid for j in (job, job2))
        assert not jobs(api, ns, "recover")  # the results came from the Jobs themselves
    assert backups_in(repo, "app") == sorted([done["backupId"], done2["backupId"]])
    assert (repo / layout.manifest_key("app", done["backupId"])).is_file()
    assert done["storedBytes"] > 30 * 2**20  # the whole database


def test_runner_pod_killed_mid_backup_is_retried_and_resumes(
        cluster: Node, runner_image: Image, cluster_namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client

    ns = cluster_namespace
    with sqlite_node(cluster, runner_image, ns, tmp_path, monkeypatch) as (api, repo):
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        with operator(ns):
            assert sqlite_target(custom, ns, "app", **SLOW)["status"] == "True"
            create(custom, ns, "Backup", "app-1", {"targetRef": {"name": "app"}})
            backup_id = eventually(lambda: status(custom, ns, "backups", "app-1")
                                   .get("backupId"), "the backup id")
            job_name = status(custom, ns, "backups", "app-1")["jobName"]
            keys = repo / layout.keys_key("app", backup_id)
            # the first pod has written the backup's data key and is streaming the pages
            eventually(keys.is_file, "the data key of the first attempt", timeout=600)
            data_key = keys.read_bytes()
            pods = core.list_namespaced_pod(ns, label_selector=f"job-name={job_name}").items
            assert len(pods) == 1, [p.metadata.name for p in pods]
            first = pods[0].metadata.name
            assert not (repo / layout.manifest_key("app", backup_id)).exists()
            kill_runner(backup_id)
            killed = time.monotonic()
            done = finished(custom, ns, "backups", "app-1", timeout=600)
            took = time.monotonic() - killed
        assert done["phase"] == "Completed", done
        assert done["backupId"] == backup_id
        job = client.BatchV1Api(api).read_namespaced_job(job_name, ns)
        assert (job.status.failed, job.status.succeeded) == (1, 1), job.status
        dead = core.read_namespaced_pod(first, ns).status.container_statuses[0].state.terminated
        assert dead.exit_code == 137, dead  # SIGKILL: it could neither report nor release
        assert len(jobs(api, ns, "backup")) == 1
        retry = next(p for p in core.list_namespaced_pod(
            ns, label_selector=f"job-name={job_name}").items if p.metadata.name != first)
        logs = core.read_namespaced_pod_log(retry.metadata.name, ns)
        events = core.list_namespaced_event(
            ns, field_selector="involvedObject.name=app-1").items
    assert "took over the expired lease" in logs, logs[-3000:]
    assert f"resuming backup {backup_id} of app with its data key" in logs, logs[-3000:]
    assert "Retrying" in {e.reason for e in events}
    # one backup, the one the status names, under the data key the first attempt wrote
    assert backups_in(repo, "app") == [backup_id]
    assert (repo / layout.manifest_key("app", backup_id)).is_file()
    assert keys.read_bytes() == data_key
    print(f"killed the runner of pod {first}: the retry finished {took:.0f}s later"
          " (lease TTL 60s)")
