"""Fixtures: a real single-node Kubernetes cluster (``tests/infra/node.py``).

- ``cluster`` (session): a started :class:`tests.infra.node.Node` — ``kubeconfig``,
  ``api_client()``, ``import_image(image)``, ``pod_address(port)``, ``ip``, ``logs``.
- ``runner_image`` (session): the runner image built from images/runner/Dockerfile (cached by
  input hash) and imported into the node; its ``ref`` goes into Pod specs with
  ``imagePullPolicy: Never``.
- ``operator_image`` (session): the same for images/operator/Dockerfile (the chart's Pod).
- ``cluster_namespace`` (function): a fresh namespace with its ``default`` ServiceAccount,
  deleted afterwards.

When a session collects any test that uses ``cluster``, the whole pytest process moves into the
test network namespace before the first fixture runs (see ``tests/infra/netns.py``), so every
server the session starts (the database and storage fixtures too) is inside it and reachable
from Pods at ``cluster.pod_address(port)``. Sessions without such tests are not affected.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.infra import images
from tests.infra.netns import NETNS
from tests.infra.node import Node, missing_binaries
from tests.infra.procs import ServerError, serve, unavailable, wait_until

WHAT = "single-node Kubernetes cluster"
_netns_error: str | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    global _netns_error
    if any("cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        try:
            NETNS.enter()
        except OSError as exc:
            _netns_error = str(exc)


def pytest_unconfigure(config: pytest.Config) -> None:
    NETNS.leave()


@pytest.fixture(scope="session")
def cluster() -> Iterator[Node]:
    missing = missing_binaries()
    if missing:
        unavailable(WHAT, "missing " + "; ".join(missing))
    if not NETNS.active:
        unavailable(WHAT, f"no test network namespace: {_netns_error or 'not entered'}")
    yield from serve(Node(), WHAT)


@pytest.fixture(scope="session")
def runner_image(cluster: Node) -> images.Image:
    try:
        image = images.runner_image()
        cluster.import_image(image)
    except ServerError as exc:
        unavailable("runner image", str(exc))
    return image


@pytest.fixture(scope="session")
def operator_image(cluster: Node) -> images.Image:
    """The operator image from images/operator/Dockerfile, imported into the node."""
    try:
        image = images.operator_image()
        cluster.import_image(image)
    except ServerError as exc:
        unavailable("operator image", str(exc))
    return image


@pytest.fixture
def cluster_namespace(cluster: Node) -> Iterator[str]:
    """A new namespace (``c-<hex>``) whose ``default`` ServiceAccount exists; deleted after."""
    from kubernetes import client

    name = f"c-{uuid.uuid4().hex[:10]}"
    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        wait_until(
            lambda: core.read_namespaced_service_account("default", name) is not None,
            what=f"ServiceAccount default in namespace {name}",
            timeout=30,
        )
        try:
            yield name
        finally:
            core.delete_namespace(name, grace_period_seconds=0)
