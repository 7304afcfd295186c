"""The whole-system suite's fixtures. The mode comes from ``SAFEHOLD_E2E_MODE``:

* ``local`` (default; run by ``make test`` and ``make e2e``): e2e/local.py;
* ``kind``: e2e/kind.py, against the cluster of ``KUBECONFIG`` (a kind cluster with the chart
  installed and the images loaded, as .github/workflows/e2e-kind.yml does; not run here).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from e2e.system import System

# the real-server fixtures (the same plugins as tests/conftest.py, for `pytest e2e` alone)
pytest_plugins = [
    "tests.infra.fixtures_db",
    "tests.infra.fixtures_storage",
    "tests.infra.fixtures_cluster",
]

MODES = ("local", "kind")


def mode() -> str:
    value = os.environ.get("SAFEHOLD_E2E_MODE", "local")
    if value not in MODES:
        raise pytest.UsageError(f"SAFEHOLD_E2E_MODE={value!r}: use one of {', '.join(MODES)}")
    return value


def pytest_collection_finish(session: pytest.Session) -> None:
    """local mode: the session moves into the test network namespace (as for tests/cluster),
    so the node and every server it starts are inside it."""
    if mode() == "local" and any(item.nodeid.startswith("e2e/") for item in session.items):
        from tests.infra import fixtures_cluster
        from tests.infra.netns import NETNS

        try:
            NETNS.enter()
        except OSError as exc:
            fixtures_cluster._netns_error = str(exc)


@pytest.fixture(scope="session")
def system(request: pytest.FixtureRequest) -> Iterator[System]:
    """The cluster of the selected mode, with the chart's operator and the servers ready."""
    if mode() == "local":
        from e2e.local import local_system

        yield from local_system(request)
    else:
        from e2e.kind import kind_system

        yield from kind_system()
