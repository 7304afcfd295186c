"""The Helm chart on the real node: installed with helm into namespaces that enforce the
restricted Pod Security Standard, the operator runs as a Pod of its image under the chart's
ServiceAccount and RBAC (watchNamespaces mode), and the whole path works under it — the
BackupTarget's check Job and a Backup's Job are admitted and complete. The release starts from
the previous chart version, whose Backup CRD lacks a field; `helm upgrade` brings the field.
`helm uninstall` keeps the CRDs and the objects.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.kit import RUNNER_UID, condition, create, eventually, finished, volume
from tests.infra.helm import CHART, helm
from tests.infra.images import Image
from tests.infra.node import Node
from tests.integration.cli_helpers import make_db

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}
RELEASE = "safehold"
PREVIOUS = "0.1.0"
# the field the previous chart's Backup CRD lacks (added in the current one)
NEW_FIELD = "pinned"


def previous_chart(dest: Path) -> Path:
    """The chart as it was one version ago: an older version number and a Backup CRD without
    ``spec.pinned`` (what an API change between two releases looks like to the cluster)."""
    chart = dest / "safehold"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert meta["version"] != PREVIOUS
    meta["version"] = PREVIOUS
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    crd_path = chart / "files" / "crds" / "safehold.dev_backups.yaml"
    crd = yaml.safe_load(crd_path.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    del spec["properties"][NEW_FIELD]
    crd_path.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def adopt_crds(api: Any, namespace: str) -> None:
    """CRDs created outside Helm (kubectl apply, other tests of the session) join the release:
    the ownership metadata Helm checks before it takes an existing object over."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api)
    for crd in ext.list_custom_resource_definition().items:
        if crd.spec.group != "safehold.dev":
            continue
        ext.patch_custom_resource_definition(crd.metadata.name, {"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": RELEASE,
                            "meta.helm.sh/release-namespace": namespace}}})


def image_values(prefix: str, image: Image) -> list[str]:
    repo, tag = image.ref.rsplit(":", 1)
    return ["--set", f"{prefix}.repository={repo}", "--set", f"{prefix}.tag={tag}",
            "--set", f"{prefix}.pullPolicy=Never"]


@contextmanager
def explained(core: Any, ops: str, app: str) -> Iterator[None]:
    """On a failed assertion, add what the operator logged and what happened in ``app``."""
    try:
        yield
    except AssertionError as exc:
        lines = []
        for pod in core.list_namespaced_pod(ops).items:
            log = core.read_namespaced_pod_log(pod.metadata.name, ops, tail_lines=60)
            lines.append(f"--- operator pod {pod.metadata.name}:\n{log}")
        for pod in core.list_namespaced_pod(app).items:
            lines.append(f"--- pod {pod.metadata.name}: {pod.status.phase} "
                         f"{[c.state for c in pod.status.container_statuses or []]}")
        for ev in core.list_namespaced_event(app).items:
            lines.append(f"--- event {ev.involved_object.kind}/{ev.involved_object.name} "
                         f"{ev.reason}: {ev.message}")
        raise AssertionError(f"{exc}\n" + "\n".join(lines)) from None


def backup_schema(api: Any) -> dict[str, Any]:
    from kubernetes import client

    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition("backups.safehold.dev")
    props: dict[str, Any] = crd.spec.versions[0].schema.open_apiv3_schema.properties[
        "spec"].properties
    return props


@pytest.fixture
def namespaces(cluster: Node) -> Iterator[tuple[str, str]]:
    """(operator namespace, watched namespace), both enforcing the restricted PSS."""
    from kubernetes import client

    names = (f"sh-op-{uuid.uuid4().hex[:8]}", f"sh-app-{uuid.uuid4().hex[:8]}")
    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        for name in names:
            core.create_namespace({"metadata": {"name": name, "labels": RESTRICTED}})
        try:
            yield names
        finally:
            for name in names:
                core.delete_namespace(name, grace_period_seconds=0)


def test_chart_upgrades_and_runs_the_operator_in_a_restricted_namespace(
    cluster: Node, runner_image: Image, operator_image: Image, namespaces: tuple[str, str],
    tmp_path: Path,
) -> None:
    from kubernetes import client

    ops, app = namespaces
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HELM_CACHE_HOME":
           str(tmp_path / "helm-cache"), "HELM_CONFIG_HOME": str(tmp_path / "helm-config")}
    values = [*image_values("image", operator_image), *image_values("runner.image", runner_image),
              "--set", f"watchNamespaces={{{app}}}", "--namespace", ops]

    with cluster.api_client() as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        apps = client.AppsV1Api(api)
        adopt_crds(api, ops)

        # 1. the previous chart version
        old = previous_chart(tmp_path / "previous")
        res = helm("install", RELEASE, str(old), *values, "--wait", "--timeout", "240s", env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert NEW_FIELD not in backup_schema(api)

        # 2. upgraded to this one: the CRDs follow
        res = helm("upgrade", RELEASE, str(CHART), *values, "--wait", "--timeout", "240s",
                   env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert NEW_FIELD in backup_schema(api), "helm upgrade did not upgrade the Backup CRD"
        history = helm("history", RELEASE, "--namespace", ops, "-o", "yaml", env=env)
        charts = [r["chart"] for r in yaml.safe_load(history.stdout)]
        assert charts[0] == f"safehold-{PREVIOUS}" and charts[-1] != charts[0], charts

        # 3. the operator Pod is admitted under restricted and Ready (readiness = kopf /healthz)
        deploy = apps.read_namespaced_deployment(RELEASE, ops)
        assert deploy.status.ready_replicas == 1
        (pod,) = core.list_namespaced_pod(ops).items
        assert pod.spec.service_account_name == RELEASE
        assert all(c.ready for c in pod.status.container_statuses)

        # 4. the whole path under the chart's RBAC: check Job -> Ready, Backup -> Completed
        data, repo = tmp_path / "data", tmp_path / "repo"
        data.mkdir()
        repo.mkdir()
        make_db(data / "app.db", rows=200)
        for p in (data, data / "app.db", repo):
            os.chown(p, RUNNER_UID, RUNNER_UID)
        with volume(core, app, "app-data", data), volume(core, app, "backups", repo), \
                explained(core, ops, app):
            create(custom, app, "BackupTarget", "app", {
                "engine": "sqlite",
                "sqlite": {"claimName": "app-data", "mountPath": "/data", "path": "/data/app.db"},
                "storage": {"url": "file:///backups", "volume": {"claimName": "backups"}},
                "encryption": {"generateKey": True}})
            ready = eventually(lambda: condition(custom, app, "backuptargets", "app", "Ready"),
                               "Ready")
            assert ready["status"] == "True", ready
            create(custom, app, "Backup", "app-1", {"targetRef": {"name": "app"}})
            done = finished(custom, app, "backups", "app-1")
            assert done["phase"] == "Completed", done
            jobs = client.BatchV1Api(api).list_namespaced_job(app).items
            succeeded = {j.metadata.labels["safehold.dev/purpose"]: j.status.succeeded
                         for j in jobs}
            # (the adopt Job fails by design here: an empty repository, NothingToAdopt)
            assert succeeded["check"] == 1 and succeeded["backup"] == 1, succeeded
            runner_pods = core.list_namespaced_pod(app).items
            assert runner_pods
            for p in runner_pods:  # no rights, and not even a token to present
                assert p.spec.service_account_name == "safehold-runner"
                assert not [v for v in p.spec.volumes or [] if v.projected and any(
                    s.service_account_token for s in v.projected.sources)], p.metadata.name
            refused = [e.message for e in core.list_namespaced_event(app).items
                       if e.reason == "FailedCreate"]
            assert not refused, refused
            (pod,) = core.list_namespaced_pod(ops).items
            assert pod.status.container_statuses[0].restart_count == 0, "the operator restarted"
            logs = core.read_namespaced_pod_log(pod.metadata.name, ops)
            for word in ("Forbidden", "forbidden", "Not enough permissions"):
                assert word not in logs, f"the operator was refused something:\n{logs[-3000:]}"

        # 5. uninstall keeps the CRDs (and so every object of the four kinds)
        res = helm("uninstall", RELEASE, "--namespace", ops, "--wait", env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        client.ApiextensionsV1Api(api).read_custom_resource_definition("backups.safehold.dev")
        assert custom.get_namespaced_custom_object("safehold.dev", "v1alpha1", app, "backups",
                                                   "app-1")["status"]["phase"] == "Completed"
