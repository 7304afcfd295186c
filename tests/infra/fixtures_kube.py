"""Fixtures: a real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager).

``kube`` (session) is a started :class:`tests.infra.kube.ControlPlane`; ``kube_namespace``
(function) is a fresh namespace, with its ``default`` ServiceAccount present, deleted afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.infra.kube import ControlPlane, missing_binaries
from tests.infra.procs import serve, unavailable, wait_until

WHAT = "Kubernetes control plane"


@pytest.fixture(scope="session")
def kube() -> Iterator[ControlPlane]:
    missing = missing_binaries()
    if missing:
        unavailable(WHAT, "missing " + "; ".join(missing))
    yield from serve(ControlPlane(), WHAT)


@pytest.fixture
def kube_namespace(kube: ControlPlane) -> Iterator[str]:
    """A new namespace (name ``t-<hex>``) that Pods can be admitted to; deleted after the test."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    with kube.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        # the ServiceAccount admission plugin rejects Pods until the serviceaccount controller
        # has created `default` in the new namespace (usually within a second)
        wait_until(
            lambda: core.read_namespaced_service_account("default", name) is not None,
            what=f"ServiceAccount default in namespace {name}",
            timeout=30,
        )
        try:
            yield name
        finally:
            # no waiting: the namespace controller finishes the deletion in the background
            core.delete_namespace(name)
