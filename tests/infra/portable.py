"""The ``portable`` marker: the tests that need no server, no root and no Linux-only tool — the
runner's SQLite, local-storage, configuration and CLI paths and the pure logic below them. The
GitHub Actions workflow ``unit`` runs ``pytest -m portable`` on Linux, macOS and Windows (not run
here: this machine is Linux only; see docs/testing.md, "CI workflows").

Marked here by file, so the test files themselves stay as they are; a file joins the list when
its tests run anywhere Python does. A test in a listed file that cannot says so with one of:

* :func:`posix_only` / :func:`linux_only`: skipped by ``sys.platform`` where it cannot run
  (signals, mode bits; a Linux-only tool), still portable and run on Linux and macOS;
* :func:`not_portable`: left out of the ``portable`` selection (root, a real server, a command
  the CI matrix does not install); ``make test`` runs it (docs/testing.md, "Portable tests").

URLs of local paths come from :func:`sqlite_url` and ``Path.as_uri()``, never ``f"sqlite://{p}"``
(``sqlite://C:\\x`` on Windows). ``tests/unit/test_portable_guards.py`` checks the listed files
for the POSIX-only constructs without a guard.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

PORTABLE = frozenset({
    "tests/unit/test_api_models.py",
    "tests/unit/test_api_task_result.py",
    "tests/unit/test_compression.py",
    "tests/unit/test_crypto.py",
    "tests/unit/test_engine_quoting.py",
    "tests/unit/test_errors.py",
    "tests/unit/test_lease.py",
    "tests/unit/test_portable_fsutil.py",
    "tests/unit/test_portable_guards.py",
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
    "tests/integration/test_cli_version.py",
    "tests/integration/test_lease_cli.py",
    "tests/integration/test_portable_cli.py",
    "tests/integration/test_run_task_list.py",
    "tests/integration/test_run_task_rewrap.py",
})

WINDOWS = sys.platform == "win32"
LINUX = sys.platform.startswith("linux")


def posix_only(reason: str) -> pytest.MarkDecorator:
    """Skip on Windows, by ``sys.platform`` only: the test needs POSIX (``reason`` says what:
    SIGKILL, SIGSTOP, a signal's exit status, mode bits)."""
    return pytest.mark.skipif(WINDOWS, reason=f"POSIX only: {reason}")


def linux_only(reason: str) -> pytest.MarkDecorator:
    """Skip off Linux, by ``sys.platform`` only: the test needs a Linux-only tool or kernel
    feature (``reason`` names it)."""
    return pytest.mark.skipif(not LINUX, reason=f"Linux only: {reason}")


def not_portable(reason: str) -> pytest.MarkDecorator:
    """Leave the test out of the ``portable`` selection (it needs root, a server or a command
    the CI matrix lacks: ``reason``); ``make test`` runs it, where a missing one fails in CI."""
    return pytest.mark.not_portable(reason)


def sqlite_url(path: Path) -> str:
    """The ``sqlite:`` URL of an absolute local path, as docs/install.md writes it per platform:
    ``sqlite:///var/app.db``, ``sqlite:///C:/data/app.db`` — ``Path.as_uri()`` with the scheme
    swapped (spaces and non-ASCII percent-encoded; the CLI unquotes them)."""
    return "sqlite" + path.as_uri()[len("file"):]


def local_path(url: str) -> Path:
    """The local path of a ``file:`` URL that ``Path.as_uri()`` wrote (``/C:/x`` is ``C:/x``)."""
    path = unquote(urlsplit(url).path)
    if WINDOWS and len(path) > 2 and path[0] == "/" and path[2] == ":":
        path = path[1:]
    return Path(path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("not_portable") is not None:
            continue
        if item.nodeid.split("::", 1)[0] in PORTABLE:
            item.add_marker(pytest.mark.portable)


# the file list, for `pytest -m portable $(python -m tests.infra.portable)`
if __name__ == "__main__":
    print(" ".join(sorted(PORTABLE)))
