"""Root conftest: the real-server fixtures live in tests/infra (one plugin module per area)."""

pytest_plugins = [
    "tests.infra.fixtures_db",
    "tests.infra.fixtures_mongo",
    "tests.infra.fixtures_storage",
    "tests.infra.fixtures_kube",
    "tests.infra.fixtures_tls",
    "tests.infra.fixtures_cluster",
    "tests.infra.slackhook",
]
