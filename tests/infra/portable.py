"""The ``portable`` marker: the tests that need no server, no root and no Linux-only tool — the
runner's SQLite, local-storage, configuration and CLI paths and the pure logic below them. The
GitHub Actions workflow ``unit`` runs ``pytest -m portable`` on Linux, macOS and Windows (not run
here: this machine is Linux only; see docs/testing.md, "CI workflows").

Marked here by file, so the test files themselves stay as they are; a file joins the list when
every test in it runs anywhere Python does.
"""

from __future__ import annotations

import pytest

PORTABLE = frozenset({
    "tests/unit/test_api_models.py",
    "tests/unit/test_api_task_result.py",
    "tests/unit/test_compression.py",
    "tests/unit/test_crypto.py",
    "tests/unit/test_engine_quoting.py",
    "tests/unit/test_errors.py",
    "tests/unit/test_lease.py",
    "tests/unit/test_profile.py",
    "tests/unit/test_repository.py",
    "tests/unit/test_retention.py",
    "tests/unit/test_slots.py",
    "tests/unit/test_sqlite_engine.py",
    "tests/unit/test_sqlite_filemode.py",
    "tests/unit/test_stream.py",
    "tests/unit/test_trends.py",
    "tests/unit/test_trust_policy.py",
    "tests/contract/test_storage_local.py",
    "tests/integration/test_cli_config.py",
    "tests/integration/test_cli_exit_codes.py",
    "tests/integration/test_cli_logs.py",
    "tests/integration/test_cli_outcomes.py",
    "tests/integration/test_cli_schedule.py",
    "tests/integration/test_cli_sqlite.py",
    "tests/integration/test_cli_stats.py",
    "tests/integration/test_lease_cli.py",
    "tests/integration/test_run_task_list.py",
    "tests/integration/test_run_task_rewrap.py",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("::", 1)[0] in PORTABLE:
            item.add_marker(pytest.mark.portable)


# the file list, for `pytest -m portable $(python -m tests.infra.portable)`
if __name__ == "__main__":
    print(" ".join(sorted(PORTABLE)))
