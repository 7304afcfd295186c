"""Root conftest: the real-server fixtures live in tests/infra (one plugin module per area)."""

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


def pytest_configure(config: object) -> None:
    """Keep the test run out of the user's own files: the CLI's user/system config discovery
    and its default audit log (platformdirs: XDG_*) point into a directory of this run, so a
    developer's ~/.config/safehold never changes a result and no test appends to their
    ~/.local/state/safehold/audit.jsonl. Subprocesses inherit it."""
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
