"""deletionPolicy on the real node: what deleting a Backup object does to the repository.

Retain (the default) removes only the object; Delete removes the backup's objects from the
storage through a delete Job, but is refused — with a ``Deleting`` condition naming the
dependent — while a kept incremental builds on it, and goes ahead once that one is gone.
Deleting a Backup (Delete) whose Job is still running cancels the Job and removes what it wrote.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from safehold.repository import layout
from tests.cluster.kit import (
    RUNNER_UID,
    SLOW,
    apply_crds,
    big_db,
    condition,
    create,
    eventually,
    finished,
    jobs,
    operator,
    owned_dirs,
    sqlite_target,
    volume,
)
from tests.infra.images import Image
from tests.infra.node import Node
from tests.integration.cli_helpers import make_db

GROUP, VERSION = "safehold.dev", "v1alpha1"


def stored(repo: Path, backup_id: str) -> list[str]:
    """The files of one backup in the file:// repository (empty: nothing left)."""
    root = repo / layout.backup_prefix("app", backup_id)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


def test_deletion_policy_on_the_repository(cluster: Node, runner_image: Image,
                                           cluster_namespace: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client

    ns = cluster_namespace
    data, repo = tmp_path / "data", tmp_path / "repo"
    owned_dirs(data, repo)
    make_db(data / "app.db", rows=500)
    os.chown(data / "app.db", RUNNER_UID, RUNNER_UID)
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("SAFEHOLD_RUNNER_IMAGE", runner_image.ref)
    monkeypatch.setenv("SAFEHOLD_IMAGE_PULL_POLICY", "Never")
    with cluster.api_client() as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)

        def gone(name: str) -> bool:
            try:
                custom.get_namespaced_custom_object(GROUP, VERSION, ns, "backups", name)
            except client.ApiException as exc:
                return exc.status == 404
            return False

        def delete(name: str) -> None:
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "backups", name)

        def backup(name: str, **spec: str) -> str:
            create(custom, ns, "Backup", name, {"targetRef": {"name": "app"}, **spec})
            done = finished(custom, ns, "backups", name)
            assert done["phase"] == "Completed", done
            assert stored(repo, done["backupId"]), f"{name}: nothing in the repository"
            return str(done["backupId"])

        apply_crds(api)
        with volume(core, ns, "app-data", data), volume(core, ns, "backups", repo), operator(ns):
            assert sqlite_target(custom, ns, "app")["status"] == "True"
            full = backup("full", deletionPolicy="Delete")
            with sqlite3.connect(data / "app.db") as conn:
                conn.execute("UPDATE t0 SET name = 'changed' WHERE id < 50")
            inc = backup("inc", type="incremental", deletionPolicy="Delete")
            assert finished(custom, ns, "backups", "inc")["parentId"] == full
            kept = backup("kept")  # Retain, the default

            # Retain: the object goes at once (no finalizer), the data stays
            delete("kept")
            eventually(lambda: gone("kept"), "the Retain Backup gone")
            assert (repo / layout.manifest_key("app", kept)).is_file()

            # Delete, with a kept incremental on top: refused, and the condition says why
            delete("full")
            refused = eventually(lambda: condition(custom, ns, "backups", "full", "Deleting"),
                                 "the Deleting condition")
            assert (refused["status"], refused["reason"]) == ("False", "DependentBackups")
            assert "inc" in refused["message"], refused
            assert not gone("full")
            assert (repo / layout.manifest_key("app", full)).is_file()
            assert not jobs(api, ns, "delete")  # refused before any delete Job

            # the dependent goes first (its own Delete), then the refused one follows
            delete("inc")
            eventually(lambda: gone("inc"), "the incremental deleted")
            assert stored(repo, inc) == []
            eventually(lambda: gone("full"), "the full backup deleted once nothing depends"
                       " on it", timeout=240)
        events = {e.reason for e in core.list_namespaced_event(ns).items}
    assert stored(repo, full) == []
    assert (repo / layout.manifest_key("app", kept)).is_file()  # Retain kept its data
    assert {"DependentBackups", "Deleting", "Deleted"} <= events, events


def test_deleting_a_running_backup_cancels_it_and_removes_what_it_wrote(
        cluster: Node, runner_image: Image, cluster_namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client

    ns = cluster_namespace
    data, repo = tmp_path / "data", tmp_path / "repo"
    owned_dirs(data, repo)
    big_db(data / "app.db")
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("SAFEHOLD_RUNNER_IMAGE", runner_image.ref)
    monkeypatch.setenv("SAFEHOLD_IMAGE_PULL_POLICY", "Never")
    with cluster.api_client() as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        apply_crds(api)
        with volume(core, ns, "app-data", data), volume(core, ns, "backups", repo), operator(ns):
            assert sqlite_target(custom, ns, "app", **SLOW)["status"] == "True"
            create(custom, ns, "Backup", "app-1",
                   {"targetRef": {"name": "app"}, "deletionPolicy": "Delete"})
            backup_id = eventually(lambda: finished_or_id(custom, ns), "the backup id")
            # caught writing: its data key is stored, its manifest is not
            eventually((repo / layout.keys_key("app", backup_id)).is_file,
                       "the running backup's data key", timeout=600)
            assert not (repo / layout.manifest_key("app", backup_id)).exists()
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "backups", "app-1")
            eventually(lambda: not custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, "backups")["items"], "the Backup deleted", timeout=600)
            eventually(lambda: not jobs(api, ns, "backup"), "the backup Job cancelled")
            events = {e.reason for e in core.list_namespaced_event(ns).items}
    assert stored(repo, backup_id) == [], stored(repo, backup_id)
    assert {"Deleting", "Deleted"} <= events, events


def finished_or_id(custom: object, ns: str) -> str | None:
    """The backup id of app-1 while it runs; fails if it finished before it could be caught."""
    from tests.cluster.kit import status

    st = status(custom, ns, "backups", "app-1")
    assert st.get("phase") not in ("Completed", "Failed"), st
    return st.get("backupId") if st.get("phase") == "Running" else None
