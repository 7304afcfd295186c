"""MariaDB 10.11 (Debian) with the binary log on in ROW format.

mariadbd runs as root (``--user=root``) from a temp directory. Root can only log in over the
socket, so start() creates a TCP superuser ``safehold``@``127.0.0.1`` with a password.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.infra.procs import Server, free_port, port_open, which
from tests.infra.tls import KeyPair

ADMIN_USER = "safehold"
ADMIN_PASSWORD = "safehold-pw"


def server_binary() -> str | None:
    return which("mariadbd", Path("/usr/sbin"))


class MariaDB:
    """One mariadbd on 127.0.0.1:<free port>.

    With ``tls`` (a server certificate and key; ``tls_ca`` to verify client certificates) the
    server offers TLS and its TCP superuser is created ``REQUIRE SSL``: a client that logs in
    as that user provably used TLS.
    """

    def __init__(self, *, tls: KeyPair | None = None, tls_ca: Path | None = None) -> None:
        self.tls = tls
        self.tls_ca = tls_ca
        self.host = "127.0.0.1"
        self.port = 0
        self.user = ADMIN_USER
        self.password = ADMIN_PASSWORD
        self.base = Path(tempfile.mkdtemp(prefix="safehold-mariadb-"))
        self.datadir = self.base / "data"
        self.socket = self.base / "sock"
        self.log = self.base / "err.log"
        self.version = ""
        self._server: Server | None = None

    @property
    def uri(self) -> str:
        return f"mariadb://{self.user}:{self.password}@{self.host}:{self.port}/"

    def start(self) -> MariaDB:
        binary = server_binary()
        assert binary, "mariadbd not found"
        # a temp directory of its own: servers bootstrapping side by side in one /tmp (the two
        # test workers, a bench) removed each other's temporary tables ("Unknown table
        # 'mysql.tmp_user_sys'", 1 in 8 runs of two at once)
        tmp = self.base / "tmp"
        tmp.mkdir()
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
                f"--tmpdir={tmp}",
            ],
            check=True,
            capture_output=True,
        )
        self.port = free_port()
        tls_args: list[str] = []
        if self.tls is not None:
            cert, key = self._install_pair(self.tls)
            tls_args = [f"--ssl-cert={cert}", f"--ssl-key={key}"]
            if self.tls_ca is not None:
                tls_args.append(f"--ssl-ca={self.tls_ca}")
        self._server = Server(
            "mariadbd",
            [
                binary,
                "--no-defaults",
                "--user=root",
                f"--datadir={self.datadir}",
                f"--tmpdir={tmp}",
                "--bind-address=127.0.0.1",
                f"--port={self.port}",
                f"--socket={self.socket}",
                f"--pid-file={self.base / 'pid'}",
                f"--log-bin={self.datadir / 'binlog'}",
                "--server-id=1",
                "--binlog-format=ROW",
                f"--log-error={self.log}",
                "--innodb-flush-log-at-trx-commit=2",
                "--sync-binlog=0",
                "--innodb-buffer-pool-size=256M",
                "--max-allowed-packet=256M",
                *tls_args,
            ],
            log=self.base / "stdout.log",
        )
        self._server.wait_ready(
            lambda: port_open(self.port) and self._socket_sql("SELECT 1") == "1"
        )
        require = " REQUIRE SSL" if self.tls is not None else ""
        self._socket_sql(
            f"CREATE USER '{ADMIN_USER}'@'127.0.0.1' IDENTIFIED BY '{ADMIN_PASSWORD}'{require};"
            f"GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'127.0.0.1' WITH GRANT OPTION;"
        )
        self.version = self._socket_sql("SELECT VERSION()")
        return self

    def _install_pair(self, pair: KeyPair) -> tuple[Path, Path]:
        """Fixed paths for the served certificate and key (use_certificate() overwrites them)."""
        tls_dir = self.base / "tls"
        tls_dir.mkdir(mode=0o700, exist_ok=True)
        cert, key = tls_dir / "server.pem", tls_dir / "server.key"
        shutil.copyfile(pair.cert, cert)
        shutil.copyfile(pair.key, key)
        key.chmod(0o600)
        return cert, key

    def use_certificate(self, pair: KeyPair) -> None:
        """Serve ``pair`` to new connections from now on (FLUSH SSL, no restart)."""
        assert self.tls is not None, "use_certificate() needs a server started with tls="
        self._install_pair(pair)
        self._socket_sql("FLUSH SSL")

    def _socket_sql(self, sql: str) -> str:
        out = subprocess.run(
            [
                "mariadb",
                "--no-defaults",
                "-uroot",
                f"--socket={self.socket}",
                "-N",
                "-B",
                "-e",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    def sql(self, sql: str, db: str | None = None) -> str:
        """Run SQL as the TCP superuser (password through MYSQL_PWD, never argv)."""
        argv = [
            "mariadb",
            "--no-defaults",
            f"-h{self.host}",
            f"-P{self.port}",
            f"-u{self.user}",
            *(["--ssl"] if self.tls is not None else []),
            "-N",
            "-B",
            "-e",
            sql,
        ]
        if db:
            argv.append(db)
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=True,
            env={"MYSQL_PWD": self.password, "PATH": "/usr/bin:/bin"},
        )
        return out.stdout.strip()

    def cpu_seconds(self) -> float:
        """CPU seconds the running server has used so far (:meth:`.procs.Server.cpu_seconds`)."""
        assert self._server is not None, "cpu_seconds() of a server that is not running"
        return self._server.cpu_seconds()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=30)
            self._server = None
        shutil.rmtree(self.base, ignore_errors=True)
