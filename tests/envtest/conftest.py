"""The operator in-process (kopf's KopfRunner) against a real kube-apiserver + controller-manager.

No kubelet: Jobs get their Pods (admitted by the real API server, Pod Security included), but
Pods stay Pending, so these tests check what the operator creates and records, never a run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.infra.kube import ControlPlane
from tests.infra.procs import REPO

T = TypeVar("T")
GROUP, VERSION = "safehold.dev", "v1alpha1"
CRDS = REPO / "crds"


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 180.0) -> T:
    """Poll until ``probe`` returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last seen: {last!r})")


def events_include(k8s: Cluster, name: str, wanted: set[str]) -> set[str]:
    """The reasons of ``name``'s events once they include ``wanted``. The operator posts an
    event after the status patch it reports, so a test that saw the status waits for the
    event (inside the operator's block: a stopped operator posts nothing more)."""
    return eventually(lambda: (r := {e.reason for e in k8s.events(name)}) >= wanted and r,
                      f"events {sorted(wanted)} of {name}")


@pytest.fixture(scope="session")
def crds(kube: ControlPlane) -> list[str]:
    """The generated CRDs applied and Established."""
    from kubernetes import client

    names = []
    with kube.api_client() as api:
        ext = client.ApiextensionsV1Api(api)
        for path in sorted(Path(CRDS).glob("*.yaml")):
            body = yaml.safe_load(path.read_text())
            names.append(body["metadata"]["name"])
            try:
                ext.create_custom_resource_definition(body)
            except client.ApiException as exc:
                if exc.status != 409:
                    raise
        for name in names:
            eventually(
                lambda n=name: any(  # type: ignore[misc]
                    c.type == "Established" and c.status == "True"
                    for c in ext.read_custom_resource_definition(n).status.conditions or []
                ),
                f"CRD {name} established",
            )
    assert names, f"no CRDs in {CRDS}: run `make crds`"
    return names


class Cluster:
    """Admin clients for one test namespace, with small helpers."""

    def __init__(self, kube: ControlPlane, namespace: str) -> None:
        from kubernetes import client

        self.kube = kube
        self.ns = namespace
        self.api = kube.api_client()
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "metadata": {**body["metadata"], "namespace": self.ns}}
        body["metadata"].pop("uid", None)
        body["metadata"].pop("creationTimestamp", None)
        body["metadata"].pop("generation", None)
        out: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, plural, body)
        return out

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client import ApiException

        try:
            out: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.ns, plural, name)
            return out
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_status(self, plural: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.ns, plural, name, {"status": status})

    def delete(self, plural: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name)

    def jobs(self, owner_uid: str | None = None, purpose: str | None = None) -> list[Any]:
        sel = ",".join(s for s in (
            f"safehold.dev/owner-uid={owner_uid}" if owner_uid else "",
            f"safehold.dev/purpose={purpose}" if purpose else "") if s) or None
        return list(self.batch.list_namespaced_job(self.ns, label_selector=sel).items)

    def status(self, plural: str, name: str) -> dict[str, Any]:
        obj = self.get(plural, name) or {}
        return dict(obj.get("status") or {})

    def events(self, name: str) -> list[Any]:
        evs = self.core.list_namespaced_event(self.ns, field_selector=f"involvedObject.name={name}")
        return list(evs.items)


@pytest.fixture
def k8s(kube: ControlPlane, kube_namespace: str, crds: list[str]) -> Iterator[Cluster]:
    c = Cluster(kube, kube_namespace)
    # the real API server enforces the restricted Pod Security Standard on runner pods
    c.core.patch_namespace(kube_namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})
    try:
        yield c
    finally:
        c.api.close()


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """The operator's /metrics port for this test session (served once per process)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def operator(kube: ControlPlane, monkeypatch: pytest.MonkeyPatch, metrics_port: int
             ) -> Callable[[], Any]:
    """``with operator(): ...`` runs the operator in a thread until the block ends."""
    from kopf.testing import KopfRunner

    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    monkeypatch.setenv("SAFEHOLD_METRICS_PORT", str(metrics_port))
    monkeypatch.setenv("SAFEHOLD_RUNNER_IMAGE", "safehold/runner:envtest")
    monkeypatch.setenv("SAFEHOLD_IMAGE_PULL_POLICY", "Never")

    @contextmanager
    def run() -> Iterator[KopfRunner]:
        args = ["run", "--standalone", "--all-namespaces", "-m", "safehold.controller.handlers"]
        with KopfRunner(args, timeout=60) as runner:
            yield runner

    return run


def finish_pod(k8s: Cluster, job: Any, *, exit_code: int, message: str = "",
               reason: str | None = None) -> str:
    """Play the kubelet for the Job's newest Pending pod: mark it terminated.

    The Job controller then counts it exactly as it would a real one (Complete, a retry, or
    Failed by the pod failure policy) and the operator reads the termination message.
    """
    pods = eventually(
        lambda: [p for p in k8s.core.list_namespaced_pod(
            k8s.ns, label_selector=f"batch.kubernetes.io/controller-uid={job.metadata.uid}"
        ).items if p.status.phase == "Pending"],
        "a Pending pod of the Job",
    )
    pod = pods[-1]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    term = {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0
                                                        else "Error"),
            "message": message, "startedAt": now, "finishedAt": now}
    k8s.core.patch_namespaced_pod_status(pod.metadata.name, k8s.ns, {"status": {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "containerStatuses": [{
            "name": "runner", "ready": False, "restartCount": 0,
            "image": "safehold/runner:envtest", "imageID": "", "state": {"terminated": term},
        }],
    }})
    return str(pod.metadata.name)
