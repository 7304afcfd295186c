"""Fixtures: a real single-node Kubernetes cluster (``tests/infra/node.py``).

- ``cluster`` (session): a started :class:`tests.infra.node.Node` — ``kubeconfig``,
  ``api_client()``, ``import_image(image)``, ``pod_address(port)``, ``ip``, ``logs``.
- ``runner_image`` (session): the runner image built from images/runner/Dockerfile (cached by
  input hash) and imported into the node; its ``ref`` goes into Pod specs with
  ``imagePullPolicy: Never``.
- ``operator_image`` (session): the same for images/operator/Dockerfile (the chart's Pod).
- ``cluster_namespace`` (function): a fresh namespace with its ``default`` ServiceAccount,
  deleted afterwards. When the test failed, what the namespace held is printed first (its
  Pods with their container states, events, container logs, and the node's log lines that
  name the namespace), so that a failure in CI says why a Pod did not finish.

When a session collects any test that uses ``cluster``, the whole pytest process moves into the
test network namespace before the first fixture runs (see ``tests/infra/netns.py``), so every
server the session starts (the database and storage fixtures too) is inside it and reachable
from Pods at ``cluster.pod_address(port)``. Sessions without such tests are not affected.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item (``item.rep_call``), for fixtures' teardown."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


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
def cluster_namespace(cluster: Node, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new namespace (``c-<hex>``) whose ``default`` ServiceAccount exists; deleted after,
    and first described (:func:`describe_namespace`) if the test failed."""
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
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                print(describe_namespace(cluster, core, name))
            core.delete_namespace(name, grace_period_seconds=0)


def describe_namespace(cluster: Node, core: Any, ns: str, *, log_lines: int = 40) -> str:
    """The namespace's Pods (phase, container states), events and container logs, and the
    node's log lines naming it: what a failed cluster test needs to say why a Pod hung."""
    out = [f"===== namespace {ns} after the failure ====="]
    with contextlib.suppress(Exception):
        for pod in core.list_namespaced_pod(ns).items:
            out.append(f"pod {pod.metadata.name}: {pod.status.phase}"
                       f" (created {pod.metadata.creation_timestamp})")
            for cond in pod.status.conditions or []:
                out.append(f"  condition {cond.type}={cond.status} {cond.reason or ''}"
                           f" {cond.message or ''}".rstrip())
            for cs in pod.status.container_statuses or []:
                out.append(f"  container {cs.name}: ready={cs.ready} state={cs.state.to_dict()}")
            with contextlib.suppress(Exception):
                text = core.read_namespaced_pod_log(pod.metadata.name, ns,
                                                    tail_lines=log_lines)
                out += [f"  | {line}" for line in text.splitlines()]
    with contextlib.suppress(Exception):
        events = core.list_namespaced_event(ns).items
        events.sort(key=lambda e: str(e.last_timestamp or e.event_time or ""))
        for e in events:
            out.append(f"event {e.last_timestamp or e.event_time} {e.type} {e.reason}"
                       f" {e.involved_object.kind}/{e.involved_object.name}: {e.message}")
    for component, log in cluster.logs.items():
        with contextlib.suppress(OSError):
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ns in ln]
            out += [f"{component}: {ln[:400]}" for ln in lines[-log_lines:]]
    return "\n".join(out)
