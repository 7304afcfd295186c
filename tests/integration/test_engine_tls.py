"""The engines' TLS options against real TLS servers, through the real CLI.

The TLS servers (``pg15_tls``, ``mariadb_tls``, ``mongo_tls``) let clients in over TLS only
(``hostssl`` / ``REQUIRE SSL`` / a TLS-only listener), so every success here — including
pg_dump's and pg_restore's own connections — provably ran encrypted; ``--tls disable``
failing against them shows that this enforcement is real. Certificates come from a
throw-away CA (``tests/infra/tls.py``): the server's names localhost + 127.0.0.1, another
names only ``db.example``, and a second ("rogue") CA signed neither.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from safehold.cli.errors import Exit
from safehold.engines.base import ConnectionOptions
from safehold.engines.mongodb import conn as mongo_conn
from safehold.engines.mysql import conn as mysql_conn
from safehold.engines.postgres import conn as pg_conn
from tests.infra.ferretdb import FerretDB
from tests.infra.fixtures_tls import TlsCerts
from tests.infra.mariadb import MariaDB
from tests.infra.postgres import Postgres
from tests.integration.cli_helpers import run, run_json

ROWS = 500


@dataclass(frozen=True)
class Side:
    """One engine: its plain twin's fixture name, how to look at data, and (once bound by the
    ``side`` fixture) its TLS server."""

    plain_fixture: str
    url: Callable[[Any, str], str]
    create: Callable[[Any, str], None]
    digest: Callable[[Any, str], str]
    drop: Callable[[Any, str], None]
    encrypted: Callable[[str, ConnectionOptions], bool]
    server: Any = None


# -- PostgreSQL ---------------------------------------------------------------------------------

def _pg_create(pg: Postgres, db: str) -> None:
    pg.psql(f'CREATE DATABASE "{db}"')
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, name text);"
            f" INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g", db)


def _pg_encrypted(url: str, options: ConnectionOptions) -> bool:
    """What the server says about a session opened with the engine's own libpq options."""
    with psycopg2.connect(**pg_conn.parse_target(url, options).libpq_kwargs()) as conn, \
            conn.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        row = cur.fetchone()
    conn.close()
    return bool(row and row[0])


PG = Side(
    plain_fixture="pg15",
    url=lambda pg, db: f"postgresql://{pg.user}@{pg.host}:{pg.port}/{db}",
    create=_pg_create,
    digest=lambda pg, db: pg.psql(
        "SELECT count(*) || ' ' || md5(string_agg(id || name, ',' ORDER BY id)) FROM t", db),
    drop=lambda pg, db: pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'),
    encrypted=_pg_encrypted,
)


# -- MariaDB ------------------------------------------------------------------------------------

def _my_create(server: MariaDB, db: str) -> None:
    server.sql(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
    server.sql("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(40));"
               f" INSERT INTO t SELECT seq, CONCAT('row ', seq) FROM seq_1_to_{ROWS}", db)


def _my_encrypted(url: str, options: ConnectionOptions) -> bool:
    conn = mysql_conn.connect(mysql_conn.parse_target(url, options))
    try:
        rows = mysql_conn.run(conn, "SHOW SESSION STATUS LIKE 'Ssl_version'")
    finally:
        conn.close()
    return bool(rows and str(rows[0][1]).startswith("TLS"))


MY = Side(
    plain_fixture="mariadb_server",
    url=lambda s, db: f"mariadb://{s.user}@{s.host}:{s.port}/{db}",
    create=_my_create,
    digest=lambda s, db: s.sql(
        "SELECT CONCAT(COUNT(*), ' ', MD5(GROUP_CONCAT(id, name ORDER BY id SEPARATOR ',')))"
        " FROM t", db),
    drop=lambda s, db: s.sql(f"DROP DATABASE IF EXISTS `{db}`"),
    encrypted=_my_encrypted,
)


# -- MongoDB (FerretDB) -------------------------------------------------------------------------

def _mongo_create(server: FerretDB, db: str) -> None:
    with server.client() as client:
        client[db].t.insert_many([{"_id": i, "name": f"row {i}"} for i in range(1, ROWS + 1)])


def _mongo_digest(server: FerretDB, db: str) -> str:
    with server.client() as client:
        docs = list(client[db].t.find(sort=[("_id", 1)]))
    return f"{len(docs)} " + hashlib.md5(repr(docs).encode()).hexdigest()


def _mongo_drop(server: FerretDB, db: str) -> None:
    with server.client() as client:
        client.drop_database(db)


def _mongo_encrypted(url: str, options: ConnectionOptions) -> bool:
    """The engine's own client gets an answer from a listener that speaks only TLS."""
    target = mongo_conn.MongoTarget.parse(url, options.password)
    with mongo_conn.make_client(target, options) as client:
        return bool(client.admin.command("ping").get("ok"))


MONGO = Side(
    plain_fixture="mongo_server",
    url=lambda s, db: f"mongodb://{s.host}:{s.port}/{db}?directConnection=true",
    create=_mongo_create,
    digest=_mongo_digest,
    drop=_mongo_drop,
    encrypted=_mongo_encrypted,
)

SIDES = {"pg15_tls": PG, "mariadb_tls": MY, "mongo_tls": MONGO}


@pytest.fixture(params=sorted(SIDES))
def side(request: pytest.FixtureRequest) -> Side:
    return replace(SIDES[request.param], server=request.getfixturevalue(request.param))


@pytest.fixture
def env(tmp_path: Path, side: Side) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_NO_ENCRYPTION": "1",  # no key here: unencrypted by explicit choice
            "SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "PGPASSWORD": "", "MYSQL_PWD": "",
            "SAFEHOLD_PASSWORD": getattr(side.server, "password", "")}


@pytest.fixture
def source(side: Side) -> Iterator[str]:
    db = f"src_{uuid.uuid4().hex[:10]}"
    side.create(side.server, db)
    yield db
    side.drop(side.server, db)


@pytest.fixture
def wrong_host(side: Side, source: str, tls_certs: TlsCerts) -> Iterator[None]:
    """The TLS server presents the certificate for db.example for the length of a test (after
    ``source`` is made: the fixtures' own clients verify the host name)."""
    side.server.use_certificate(tls_certs.wrong_host)
    try:
        yield
    finally:
        side.server.use_certificate(tls_certs.server)


def tls(mode: str, ca: Path | None = None) -> list[str]:
    return ["--tls", mode, *(["--tls-ca", str(ca)] if ca else [])]


def refused(*args: str, env: dict[str, str]) -> str:
    """Output of a CLI command that must fail as a database error (exit 6); a short connect
    timeout, since pymongo waits out server selection even on a certificate error."""
    result = run(*args, "--connect-timeout", "3", env=env, ok=False)
    assert result.exit_code == Exit.DATABASE, f"exit {result.exit_code}:\n{result.output}"
    return " ".join(result.output.split())


def test_verify_full_check_backup_restore(side: Side, source: str, tls_certs: TlsCerts,
                                          env: dict[str, str], tmp_path: Path) -> None:
    """verify-full with the right CA: the session is encrypted, and check, backup and restore
    (client tools included: the server takes nothing else) all work over TLS."""
    flags = tls("verify-full", tls_certs.ca)
    src_url, repo = side.url(side.server, source), (tmp_path / "repo").as_uri()
    options = ConnectionOptions(password=getattr(side.server, "password", None),
                                tls="verify-full", ca_file=str(tls_certs.ca))
    assert side.encrypted(src_url, options)
    assert run_json("check", "-t", src_url, *flags, env=env)["ok"] is True
    backup = run_json("backup", "-t", src_url, "-r", repo, *flags, env=env)
    copy = f"{source}_copy"
    try:
        run("restore", "-t", side.url(side.server, copy), "-r", repo, "-b", backup["backup_id"],
            "--from", source, "--yes", *flags, env=env)
        expected = side.digest(side.server, source)
        assert expected.startswith(f"{ROWS} ")
        assert side.digest(side.server, copy) == expected
    finally:
        side.drop(side.server, copy)


def test_tls_disabled_is_refused_by_the_tls_server(side: Side, source: str,
                                                   env: dict[str, str]) -> None:
    """The servers really enforce TLS, so the successes above cannot be plaintext ones."""
    out = refused("check", "-t", side.url(side.server, source), "--tls", "disable", env=env)
    assert re.search(r"--tls|encryption", out, re.I), out


def test_ca_that_did_not_sign_the_server_cert(side: Side, source: str, tls_certs: TlsCerts,
                                              env: dict[str, str]) -> None:
    out = refused("check", "-t", side.url(side.server, source),
                  *tls("verify-full", tls_certs.rogue_ca), env=env)
    assert re.search(r"certificate verify failed", out, re.I), out
    assert "--tls-ca" in out, out
    assert "retrying" not in out, f"a certificate failure is not transient:\n{out}"


@pytest.mark.usefixtures("wrong_host")
def test_certificate_for_another_host(side: Side, source: str, tls_certs: TlsCerts,
                                      env: dict[str, str]) -> None:
    """A certificate from the right CA for db.example: verify-full refuses 127.0.0.1,
    verify-ca (chain only) accepts it."""
    url = side.url(side.server, source)
    out = refused("check", "-t", url, *tls("verify-full", tls_certs.ca), env=env)
    assert re.search(r"match|not valid for", out, re.I), out
    assert "--tls-ca" in out and "host name" in out, out
    assert "retrying" not in out, f"a certificate mismatch is not transient:\n{out}"
    assert run_json("check", "-t", url, *tls("verify-ca", tls_certs.ca), env=env)["ok"] is True


def test_require_against_a_plain_server(side: Side, request: pytest.FixtureRequest,
                                        env: dict[str, str]) -> None:
    plain = request.getfixturevalue(side.plain_fixture)
    db = f"plain_{uuid.uuid4().hex[:10]}"
    side.create(plain, db)
    try:
        out = refused("check", "-t", side.url(plain, db), "--tls", "require",
                      env={**env, "SAFEHOLD_PASSWORD": getattr(plain, "password", "")})
    finally:
        side.drop(plain, db)
    assert re.search(r"--tls (prefer|require|disable)", out), out


def test_mariadb_without_tls_settings_still_encrypts_when_the_server_offers_it(
        mariadb_tls: MariaDB) -> None:
    """PyMySQL's "prefer" mode, with the one context Safehold shares between its connections
    (conn._Connection): every connection to a TLS server is encrypted, the first and later
    ones alike, and none verifies a certificate it was not asked to."""
    url = f"mariadb://{mariadb_tls.user}@{mariadb_tls.host}:{mariadb_tls.port}/mysql"
    options = ConnectionOptions(password=mariadb_tls.password)
    assert mysql_conn.parse_target(url, options).tls == "prefer"
    assert [_my_encrypted(url, options) for _ in range(3)] == [True] * 3
