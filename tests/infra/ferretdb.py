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
    """

    def __init__(self, *, binary: str | None = None, repl_set_name: str | None = None) -> None:
        self.binary = binary or ferretdb_binary()
        self.repl_set_name = repl_set_name
        self.host = "127.0.0.1"
        self.port = 0
        self.dir: Path | None = None
        self.log: Path | None = None
        self._server: Server | None = None

    @property
    def uri(self) -> str:
        """Connection string for pymongo (direct connection, no auth)."""
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    def client(self, **kwargs: Any) -> Any:
        """A new pymongo MongoClient for this server (the caller closes it)."""
        from pymongo import MongoClient

        kwargs.setdefault("serverSelectionTimeoutMS", 5000)
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
        argv = [
            self.binary,
            "--handler=sqlite",
            f"--sqlite-url=file:{data}/",
            f"--listen-addr={self.host}:{self.port}",
            f"--state-dir={self.dir}",
            # the default debug/metrics listener is a fixed port (8088): turn it off
            "--debug-addr=-",
            "--telemetry=disable",
            "--log-level=info",
            "--log-format=console",
        ]
        if self.repl_set_name:
            argv.append(f"--repl-set-name={self.repl_set_name}")
        # DO_NOT_TRACK also turns telemetry off, in case a future version ignores the flag.
        self._server = Server("ferretdb", argv, log=self.log, env={"DO_NOT_TRACK": "1"})
        try:
            self._server.wait_ready(self._ping, timeout=timeout)
        except ServerError:
            self.stop()  # the message already carries the log tail; drop the temp dir
            raise
        return self

    def _ping(self) -> bool:
        client = self.client(serverSelectionTimeoutMS=500, connectTimeoutMS=500)
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
