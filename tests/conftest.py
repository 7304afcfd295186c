"""Root conftest: the real-server fixtures live in tests/infra (one plugin module per area)."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.infra.fixtures_db",
    "tests.infra.fixtures_mongo",
    "tests.infra.fixtures_storage",
    "tests.infra.fixtures_kube",
    "tests.infra.fixtures_tls",
    "tests.infra.fixtures_cluster",
    "tests.infra.slackhook",
    "tests.infra.portable",
]

# Tests on the one real node (tests/infra/node.py: host-wide containerd, kubelet and image
# builds): under pytest-xdist they all run in one worker, one after another.
NODE_GROUP = "real-node"
NODE_PATHS = ("tests/cluster/", "e2e/")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs two pytest-xdist workers with ``--dist loadgroup``: each test file is a
    group (its module-scoped servers start once), and the real node's tests are one group. This
    runs before xdist reads the groups; without xdist the marker does nothing."""
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        group = NODE_GROUP if path.startswith(NODE_PATHS) else path
        item.add_marker(pytest.mark.xdist_group(group))
