"""Disaster recovery and key rotation on the real node: the operator in-process, runner Jobs
as real containers, SQLite on a PersistentVolume, a file:// repository on another.

(a) A repository written outside the cluster (the CLI: a full and two incrementals) is mounted
    into a fresh namespace; a fresh operator's BackupTarget on it adopts every backup (type,
    parent, chain) and a Restore of an older one — not the newest — reproduces that state.
(b) Rotation: a backup with key A; key B is added and marked active -> the operator's re-wrap
    Job wraps every data key with B (KeysRotated); key A is removed -> the old backup still
    restores, with B alone.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from safehold.codecs import crypto
from tests.cluster.kit import (
    GROUP,
    RUNNER_UID,
    VERSION,
    apply_crds,
    condition,
    create,
    eventually,
    finished,
    operator,
    status,
    volume,
)
from tests.infra.images import Image
from tests.infra.node import Node
from tests.integration.cli_helpers import dump, make_db, run


def _change(db: Path, n: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE t0 SET name = ? WHERE id % 7 = ?", (f"changed {n}", n))
        conn.execute("INSERT INTO t1 (id, name, data) VALUES (?, ?, ?)",
                     (100_000 + n, f"new {n}", b"x" * 50))


def _own(*paths: Path) -> None:
    for top in paths:
        for root, dirs, files in os.walk(top):
            for name in [*dirs, *files]:
                os.chown(Path(root) / name, RUNNER_UID, RUNNER_UID)
        os.chown(top, RUNNER_UID, RUNNER_UID)


def _key_secret(core: Any, ns: str, name: str, keys: dict[str, Path], active: str) -> None:
    data = {k: base64.b64encode(p.read_bytes()).decode() for k, p in keys.items()}
    data["active"] = base64.b64encode(active.encode()).decode()
    core.create_namespaced_secret(ns, {"apiVersion": "v1", "kind": "Secret",
                                       "metadata": {"name": name}, "data": data})


def _sqlite_target(claim: str, db: str, repo_name: str | None = None,
                   key_secret: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "engine": "sqlite",
        "sqlite": {"claimName": claim, "mountPath": "/data", "path": f"/data/{db}"},
        "storage": {"url": "file:///backups", "volume": {"claimName": "backups"}},
        "encryption": {"keySecretRef": {"name": key_secret}} if key_secret else {"none": True}}
    if repo_name:
        spec["repositoryName"] = repo_name
    return spec


@contextmanager
def _namespace_with_volumes(cluster: Node, ns: str, data: Path, repo: Path,
                            monkeypatch: pytest.MonkeyPatch, image: Image
                            ) -> Iterator[tuple[Any, Any, Any]]:
    from kubernetes import client

    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("SAFEHOLD_RUNNER_IMAGE", image.ref)
    monkeypatch.setenv("SAFEHOLD_IMAGE_PULL_POLICY", "Never")
    with cluster.api_client() as api, ExitStack() as stack:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        apply_crds(api)
        core.patch_namespace(ns, {"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})
        stack.enter_context(volume(core, ns, "app-data", data))
        stack.enter_context(volume(core, ns, "backups", repo))
        yield core, custom, client.BatchV1Api(api)


def _backups(custom: Any, ns: str) -> list[dict[str, Any]]:
    return list(custom.list_namespaced_custom_object(GROUP, VERSION, ns, "backups")["items"])


def _events(core: Any, ns: str, name: str) -> set[str]:
    return {e.reason for e in core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name}").items}


def test_a_fresh_operator_adopts_every_backup_and_restores_an_older_one(
        cluster: Node, runner_image: Image, cluster_namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ns = cluster_namespace
    data, repo, key = tmp_path / "data", tmp_path / "repo", tmp_path / "key"
    data.mkdir()
    make_db(data / "app.db", rows=400)
    run("keys", "generate", "--out", str(key))
    # the repository of a lost cluster (here: written by the CLI): full, incr, incr
    states = []
    for n, kind in enumerate(("full", "incremental", "incremental")):
        if n:
            _change(data / "app.db", n)
        run("backup", "-t", f"sqlite://{data / 'app.db'}", "-r", repo.as_uri(), "--name", "app",
            "--type", kind, "--key-file", str(key))
        states.append(dump(data / "app.db"))
    ids = sorted(p.name for p in (repo / "app").iterdir() if p.name[:1].isdigit())
    assert len(ids) == 3
    _change(data / "app.db", 5)  # the live database moves on; the restore goes elsewhere
    _own(data, repo)
    with _namespace_with_volumes(cluster, ns, data, repo, monkeypatch, runner_image) as (
            core, custom, _):
        _key_secret(core, ns, "app-keys", {"key-a": key}, "key-a")  # escrowed key, re-applied
        with operator(ns):
            create(custom, ns, "BackupTarget", "app", _sqlite_target("app-data", "app.db",
                                                                     key_secret="app-keys"))
            adopted = eventually(lambda: (
                bks := [b for b in _backups(custom, ns)
                        if (b.get("status") or {}).get("phase") == "Completed"]
            ) and len(bks) == 3 and bks, "three imported Backups")
            create(custom, ns, "BackupTarget", "copy", _sqlite_target(
                "app-data", "copy.db", repo_name="copy"))
            by_id = {b["spec"]["backupId"]: b for b in adopted}
            older = by_id[ids[1]]["metadata"]["name"]  # the middle one: not the newest
            create(custom, ns, "Restore", "dr", {
                "source": {"backupRef": {"name": older}},
                "destination": {"targetRef": {"name": "copy"}}})
            done = finished(custom, ns, "restores", "dr")
            through = status(custom, ns, "backuptargets", "app").get("adoptedThrough")
            reasons = _events(core, ns, "app")
    assert done["phase"] == "Completed", done
    assert sorted(by_id) == ids and through == ids[-1]
    for i, bid in enumerate(ids):
        b = by_id[bid]
        assert b["metadata"]["labels"]["safehold.dev/imported"] == "true"
        assert b["spec"]["deletionPolicy"] == "Retain"
        assert b["status"]["imported"] is True and b["status"]["chainId"] == ids[0]
        assert b["spec"]["type"] == ("full" if i == 0 else "incremental")
        assert b["status"].get("parentId") == (ids[i - 1] if i else None)
    assert [p["backupId"] for p in done["plan"]["backups"]] == ids[:2]
    assert dump(data / "copy.db") == states[1] != states[2]
    assert "Adopted" in reasons


def test_rotation_rewraps_and_the_old_backup_restores_with_the_new_key_alone(
        cluster: Node, runner_image: Image, cluster_namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ns = cluster_namespace
    data, repo = tmp_path / "data", tmp_path / "repo"
    data.mkdir()
    repo.mkdir()
    make_db(data / "app.db", rows=400)
    key_a, key_b = tmp_path / "a", tmp_path / "b"
    run("keys", "generate", "--out", str(key_a))
    run("keys", "generate", "--out", str(key_b))
    id_a, id_b = (crypto.load_key_file(p).key_id for p in (key_a, key_b))
    _own(data, repo)
    with _namespace_with_volumes(cluster, ns, data, repo, monkeypatch, runner_image) as (
            core, custom, batch), operator(ns):
        _key_secret(core, ns, "app-keys", {"key-a": key_a}, "key-a")
        create(custom, ns, "BackupTarget", "app", _sqlite_target("app-data", "app.db",
                                                                 key_secret="app-keys"))
        ready = eventually(lambda: condition(custom, ns, "backuptargets", "app", "Ready"), "Ready")
        assert ready["status"] == "True", ready
        create(custom, ns, "Backup", "old", {"targetRef": {"name": "app"}})
        old = finished(custom, ns, "backups", "old")
        assert old["phase"] == "Completed" and old["keyId"] == id_a, old
        before = dump(data / "app.db")
        _change(data / "app.db", 1)
        # 1. add key B and mark it active -> the operator re-wraps with B
        core.patch_namespaced_secret("app-keys", ns, {"data": {
            "key-b": base64.b64encode(key_b.read_bytes()).decode(),
            "active": base64.b64encode(b"key-b").decode()}})
        rotated = eventually(lambda: (s := status(custom, ns, "backuptargets", "app")).get(
            "activeKeyId") == id_b and s, "the re-wrap with key B")
        cond = condition(custom, ns, "backuptargets", "app", "KeysRotated")
        assert cond is not None and cond["status"] == "True", cond
        assert rotated["retiredKeyIds"] == [id_a] and id_a in cond["message"]
        # 2. retire key A: the next re-wrap finds nothing to do (every key is B's)
        core.patch_namespaced_secret("app-keys", ns, [{"op": "remove", "path": "/data/key-a"}])
        version = core.read_namespaced_secret("app-keys", ns).metadata.resource_version
        eventually(lambda: (s := status(custom, ns, "backuptargets", "app")).get(
            "keySecretVersion") == f"app-keys@{version}" and not s.get("rewrapJob")
            and (c := condition(custom, ns, "backuptargets", "app", "KeysRotated"))
            and c["status"] == "True" and c["reason"] == "Rewrapped", "the re-wrap after A left")
        create(custom, ns, "BackupTarget", "copy", _sqlite_target(
            "app-data", "copy.db", repo_name="copy"))
        create(custom, ns, "Restore", "back", {
            "source": {"backupRef": {"name": "old"}},
            "destination": {"targetRef": {"name": "copy"}}})
        done = finished(custom, ns, "restores", "back")
        rewraps = batch.list_namespaced_job(ns, label_selector="safehold.dev/purpose=rewrap").items
        reasons = _events(core, ns, "app")
    assert done["phase"] == "Completed", done
    assert dump(data / "copy.db") == before
    assert len(rewraps) == 2 and {"Rewrapping", "Rewrapped"} <= reasons
    # the repository on disk: the old backup's data key is wrapped by B, A is named nowhere
    keys_json = (repo / "app" / old["backupId"] / "keys.json").read_text()
    assert id_b in keys_json and id_a not in keys_json
