"""In a pod the operator reaches the API server where client-go would: KUBERNETES_SERVICE_HOST
and _PORT, not kopf's https://kubernetes.default.svc (which needs cluster DNS)."""

from __future__ import annotations

import kopf

from safehold.controller.handlers import in_cluster_server

INFO = kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="t", ca_path="/ca")


def test_service_host_and_port_win() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    got = in_cluster_server(INFO, env)
    assert got.server == "https://10.0.0.1:6443"
    assert (got.token, got.ca_path) == ("t", "/ca")  # the ServiceAccount's credentials stay


def test_ipv6_host_is_bracketed_and_port_defaults() -> None:
    assert in_cluster_server(INFO, {"KUBERNETES_SERVICE_HOST": "fd00::1"}).server == (
        "https://[fd00::1]:443")


def test_without_the_variables_kopfs_default_stays() -> None:
    assert in_cluster_server(INFO, {}).server == "https://kubernetes.default.svc"
