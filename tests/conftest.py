"""Root conftest: the real-server fixtures live in tests/infra (one plugin module per area)."""

from __future__ import annotations

from typing import Any

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


def work_unit(nodeid: str) -> str:
    """What one xdist worker runs whole: the test's file (its module-scoped servers start once),
    or the real node's group."""
    path = nodeid.split("::", 1)[0]
    return NODE_GROUP if path.startswith(NODE_PATHS) else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` runs two pytest-xdist workers; this scheduler (whatever ``--dist`` says)
    hands each a :func:`work_unit` at a time, the biggest first."""
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByUnit(config, log)


def pytest_configure(config: object) -> None:
    """Keep the test run out of the user's own files: the CLI's user/system config discovery
    and its default audit log (platformdirs: XDG_*) point into a directory of this run, so a
    developer's ~/.config/safehold never changes a result and no test appends to their
    ~/.local/state/safehold/audit.jsonl. Subprocesses inherit it (and each xdist worker makes
    its own)."""
    import os
    import tempfile

    home = tempfile.mkdtemp(prefix="safehold-xdg-")
    os.chmod(home, 0o755)
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CONFIG_DIRS"):
        os.environ[name] = os.path.join(home, name.lower())
        # Like /tmp: the database servers' own OS users inherit this environment and run
        # safehold too (PostgreSQL's restore_command), so they may look and write here.
        os.mkdir(os.environ[name])
        os.chmod(os.environ[name], 0o1777)
