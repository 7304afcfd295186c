"""FerretDB: a real MongoDB wire-protocol server (SQLite backend) for the Mongo tests.

No mongod can be installed here, so FerretDB v1 stands in for it (built by
scripts/infra/30-ferretdb.sh). It speaks OP_MSG to pymongo like mongod does; see
docs/testing.d/mongo.md for what it lacks (oplog, replica sets, transactions, ...).

Usable outside pytest::

    with FerretDB() as fdb:
        print(fdb.uri)  # mongodb://127.0.0.1:PORT/
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.infra.procs import CACHE, Server, ServerError, free_port, which
from tests.infra.tls import KeyPair

FERRETDB_VERSION = os.environ.get("FERRETDB_VERSION", "v1.24.2")


def ferretdb_binary() -> str | None:
    """The FerretDB built by scripts/infra/30-ferretdb.sh ($FERRETDB_BIN overrides; else PATH)."""
    override = os.environ.get("FERRETDB_BIN")
    if override:
        return override if os.access(override, os.X_OK) else None
    return which("ferretdb", CACHE / "ferretdb" / FERRETDB_VERSION)


class FerretDB:
    """One FerretDB process on a free 127.0.0.1 port with its SQLite files in a temp dir.

    ``repl_set_name`` makes hello/isMaster advertise a replica set name (FerretDB has no oplog
    or elections behind it; it only lets clients that insist on ``replicaSet=`` connect).

    ``tls`` (a server certificate and key) makes it listen with TLS only (no plaintext
    listener), so a client that gets an answer provably used TLS; ``tls_ca`` is the CA that
    :meth:`client` verifies the server with.
    """

    def __init__(self, *, binary: str | None = None, repl_set_name: str | None = None,
                 tls: KeyPair | None = None, tls_ca: Path | None = None) -> None:
        self.binary = binary or ferretdb_binary()
        self.repl_set_name = repl_set_name
        self.tls = tls
        self.tls_ca = tls_ca
        self.host = "127.0.0.1"
        self.port = 0
        self.dir: Path | None = None
        self.log: Path | None = None
        self._server: Server | None = None
        self._argv: list[str] = []

    @property
    def uri(self) -> str:
        """Connection string for pymongo (direct connection, no auth)."""
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    def client(self, **kwargs: Any) -> Any:
        """A new pymongo MongoClient for this server (the caller closes it)."""
        from pymongo import MongoClient

        kwargs.setdefault("serverSelectionTimeoutMS", 5000)
        if self.tls is not None:
            kwargs.setdefault("tls", True)
            if self.tls_ca is not None:
                kwargs.setdefault("tlsCAFile", str(self.tls_ca))
            else:
                kwargs.setdefault("tlsAllowInvalidCertificates", True)
        return MongoClient(self.uri, **kwargs)

    def start(self, timeout: float = 30.0) -> FerretDB:
        if not self.binary:
            raise ServerError(
                f"ferretdb {FERRETDB_VERSION} binary not found "
                "(build it with scripts/infra/30-ferretdb.sh)"
            )
        self.dir = Path(tempfile.mkdtemp(prefix="safehold-ferretdb-"))
        data = self.dir / "data"
        data.mkdir()
        self.log = self.dir / "ferretdb.log"
        self.port = free_port()
        if self.tls is not None:
            cert, key = self._install_pair(self.tls)
            listen = [
                "--listen-addr=",  # no plaintext listener
                f"--listen-tls={self.host}:{self.port}",
                f"--listen-tls-cert-file={cert}",
                f"--listen-tls-key-file={key}",
            ]
        else:
            listen = [f"--listen-addr={self.host}:{self.port}"]
        argv = [
            self.binary,
            "--handler=sqlite",
            f"--sqlite-url=file:{data}/",
            *listen,
            f"--state-dir={self.dir}",
            # the default debug/metrics listener is a fixed port (8088): turn it off
            "--debug-addr=-",
            "--telemetry=disable",
            "--log-level=info",
            "--log-format=console",
        ]
        if self.repl_set_name:
            argv.append(f"--repl-set-name={self.repl_set_name}")
        self._argv = argv
        self._launch(timeout)
        return self

    def _launch(self, timeout: float) -> None:
        assert self.log is not None
        # DO_NOT_TRACK also turns telemetry off, in case a future version ignores the flag.
        self._server = Server("ferretdb", self._argv, log=self.log, env={"DO_NOT_TRACK": "1"})
        try:
            self._server.wait_ready(self._ping, timeout=timeout)
        except ServerError:
            self.stop()  # the message already carries the log tail; drop the temp dir
            raise

    def _install_pair(self, pair: KeyPair) -> tuple[Path, Path]:
        """Fixed paths for the served certificate and key (use_certificate() overwrites them)."""
        assert self.dir is not None
        cert, key = self.dir / "server.pem", self.dir / "server.key"
        shutil.copyfile(pair.cert, cert)
        shutil.copyfile(pair.key, key)
        key.chmod(0o600)
        return cert, key

    def use_certificate(self, pair: KeyPair, timeout: float = 30.0) -> None:
        """Serve ``pair`` from now on: FerretDB loads its certificate at start-up only, so
        this restarts it on the same port and data (a second or less)."""
        assert self.tls is not None and self._server is not None, \
            "use_certificate() needs a running server started with tls="
        self._install_pair(pair)
        self._server.stop()
        self._launch(timeout)

    def _ping(self) -> bool:
        # Liveness only: the host name check is for the tests to make (use_certificate() may
        # serve a certificate for another name).
        relax = {"tlsAllowInvalidHostnames": True} if self.tls is not None else {}
        client = self.client(serverSelectionTimeoutMS=500, connectTimeoutMS=500, **relax)
        try:
            return bool(client.admin.command("ping").get("ok"))
        finally:
            client.close()

    @property
    def pid(self) -> int | None:
        return self._server.pid if self._server else None

    def version(self) -> str:
        """FerretDB's own version as reported by buildInfo (e.g. 'v1.24.2')."""
        client = self.client()
        try:
            info = client.admin.command("buildInfo")
            return str(info.get("ferretdbVersion") or info.get("version"))
        finally:
            client.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> FerretDB:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
