"""Smoke tests of the Kubernetes test infrastructure: a real apiserver + controller-manager, helm.

The chart tests need no apiserver: they render charts/safehold with helm and validate every
document offline against the Kubernetes 1.34 OpenAPI schemas (kubernetes-validate).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.infra.kube import KUBE_VERSION, ControlPlane
from tests.infra.procs import CACHE, REPO, ServerError, unavailable, wait_until

CHART = REPO / "charts" / "safehold"
GROUP = "smoke.safehold.dev"


@pytest.fixture
def api(kube: ControlPlane) -> Iterator[Any]:
    with kube.api_client() as client:
        yield client


# --------------------------------------------------------------------------- control plane


def test_version_and_rbac(kube: ControlPlane, api: Any) -> None:
    from kubernetes import client

    assert client.VersionApi(api).get_code().git_version == KUBE_VERSION
    # RBAC is on and the admin certificate maps to system:masters
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(verb="*", resource="*", group="*")
            )
        )
    )
    assert review.status is not None and review.status.allowed


def test_custom_resource_roundtrip(api: Any, kube_namespace: str) -> None:
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api)
    plural = "widgets"
    crd_name = f"{plural}.{GROUP}"
    crd: Any = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {
                                        "size": {"type": "integer", "minimum": 1},
                                        "color": {"type": "string", "enum": ["red", "blue"]},
                                    },
                                },
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(crd)
    try:

        def established() -> bool:
            status = ext.read_custom_resource_definition(crd_name).status
            conds = (status.conditions if status else None) or []
            return any(c.type == "Established" and c.status == "True" for c in conds)

        wait_until(established, what=f"CRD {crd_name} Established", timeout=30)

        objs = client.CustomObjectsApi(api)
        body = {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3, "color": "red"},
        }
        objs.create_namespaced_custom_object(GROUP, "v1alpha1", kube_namespace, plural, body)
        got: Any = objs.get_namespaced_custom_object(
            GROUP, "v1alpha1", kube_namespace, plural, "w1"
        )
        assert got["spec"] == {"size": 3, "color": "red"}
        assert got["metadata"]["uid"]

        # the structural schema is enforced by the apiserver
        bad = {**body, "metadata": {"name": "w2"}, "spec": {"size": 0}}
        with pytest.raises(client.ApiException) as err:
            objs.create_namespaced_custom_object(GROUP, "v1alpha1", kube_namespace, plural, bad)
        assert err.value.status == 422
    finally:
        ext.delete_custom_resource_definition(crd_name)


def test_job_gets_a_pod(kube: ControlPlane, api: Any, kube_namespace: str) -> None:
    from kubernetes import client

    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="smoke"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[
                        client.V1Container(name="main", image="busybox:1.36", command=["true"])
                    ],
                )
            ),
        ),
    )
    client.BatchV1Api(api).create_namespaced_job(kube_namespace, job)
    core = client.CoreV1Api(api)
    pods: list[Any] = []

    def pod_created() -> bool:
        pods[:] = core.list_namespaced_pod(
            kube_namespace, label_selector="batch.kubernetes.io/job-name=smoke"
        ).items
        return bool(pods)

    wait_until(
        pod_created,
        what="Pod of Job smoke (job controller)",
        timeout=60,
        log=kube.logs.get("kube-controller-manager"),
    )
    # no scheduler and no kubelet: the Pod is admitted (with the default ServiceAccount) but
    # stays Pending
    pod = pods[0]
    assert pod.spec.service_account_name == "default"
    assert pod.status.phase == "Pending"


# --------------------------------------------------------------------------- helm chart


def _helm() -> str:
    helm = CACHE / "bin" / "helm"
    if not helm.exists():
        unavailable("helm", f"{helm} is missing (scripts/infra/40-kube.sh installs it)")
    return str(helm)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_helm_lint() -> None:
    res = _run(_helm(), "lint", "--strict", str(CHART))
    assert res.returncode == 0, res.stdout + res.stderr


VARIANTS = {
    "defaults": [],
    "namespaced-no-rbac-no-metrics": [
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "rbac.create=false",
        "--set",
        "serviceAccount.create=false",
        "--set",
        "serviceAccount.name=ops",
        "--set",
        "metrics.enabled=false",
    ],
    "overrides": [
        "--set",
        "image.tag=dev",
        "--set",
        "fullnameOverride=backups",
        "--set",
        "nodeSelector.disk=ssd",
        "--set",
        "podAnnotations.a=b",
        "--set",
        "imagePullSecrets[0].name=regcred",
    ],
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_helm_template_validates(variant: str) -> None:
    import kubernetes_validate

    kube_version = KUBE_VERSION.lstrip("v")
    res = _run(
        _helm(),
        "template",
        "safehold",
        str(CHART),
        "--namespace",
        "safehold",
        "--kube-version",
        kube_version,
        *VARIANTS[variant],
    )
    assert res.returncode == 0, res.stderr
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert "Deployment" in kinds
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{variant}: {where} is invalid for Kubernetes {kube_version}: {e}")
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["safehold-operator"]


def test_helm_values_schema_rejects_bad_values() -> None:
    res = _run(_helm(), "template", "safehold", str(CHART), "--set", "rbac.create=maybe")
    assert res.returncode != 0
    assert "rbac.create" in res.stderr


def test_control_plane_restarts_cleanly(tmp_path: Any) -> None:
    """A second, independent control plane starts beside the session one and stops by PID."""
    t0 = time.monotonic()
    cp = ControlPlane(tmp_path / "cp", controller_manager=False)
    try:
        cp.start()
    except ServerError as e:
        unavailable("Kubernetes control plane", str(e))
    try:
        assert cp.get("/readyz")[0] == 200
        pids = list(cp.pids.values())
        assert len(pids) == 2  # etcd + apiserver
    finally:
        cp.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert time.monotonic() - t0 < 120
