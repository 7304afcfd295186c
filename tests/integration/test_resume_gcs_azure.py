"""The real CLI against gs:// and az:// repositories: the whole life cycle of a backup, and a
backup killed mid-upload (SIGKILL) that, run again with the same --backup-id, sends only what the
killed run had not stored yet.

The byte count of the second run comes from the FaultProxy's request log (it forwards
everything here), so it measures what really went over the wire.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient
from google.cloud.storage import Bucket

from tests.infra.faults import FaultProxy, Request
from tests.infra.objectstores import Azurite, FakeGCS
from tests.integration.cli_helpers import dump, make_db, run, run_json

MiB = 1 << 20
BACKUP_ID = "20261126T120000.000000Z"


@dataclass
class Cloud:
    """One store: the repository URL and environment for the CLI, the same through a proxy,
    and how to see the parts an unfinished put has stored so far."""

    url: str
    env: dict[str, str]
    proxied_url: str
    proxied_env: dict[str, str]
    proxy: FaultProxy
    stored_parts: Callable[[], int]
    is_upload: Callable[[Request], bool]


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "AZURE_STORAGE_KEY": "",
            "AZURE_STORAGE_SAS_TOKEN": "", "STORAGE_EMULATOR_HOST": "",
            "AZURE_STORAGE_CONNECTION_STRING": ""}


@pytest.fixture(params=["gcs", "azure"])
def cloud(request: pytest.FixtureRequest, base_env: dict[str, str]) -> Iterator[Cloud]:
    tuning = "part_size=1MiB&concurrency=2"
    if request.param == "gcs":
        server: FakeGCS = request.getfixturevalue("gcs_server")
        bucket: Bucket = request.getfixturevalue("gcs_bucket")
        with FaultProxy(server.endpoint) as proxy:
            yield Cloud(
                url=f"gs://{bucket.name}/repo?{tuning}",
                env={**base_env, "STORAGE_EMULATOR_HOST": server.endpoint},
                proxied_url=f"gs://{bucket.name}/repo?{tuning}&endpoint={proxy.endpoint}",
                proxied_env=base_env, proxy=proxy,
                stored_parts=lambda: sum(
                    1 for _ in bucket.client.list_blobs(bucket, prefix="repo/.parts/")),
                is_upload=lambda r: r.method == "POST" and r.target.startswith("/upload/"))
        return
    azurite: Azurite = request.getfixturevalue("azure_server")
    container: ContainerClient = request.getfixturevalue("azure_container")

    def uncommitted_blocks() -> int:
        blobs = container.list_blobs(name_starts_with="repo/", include=["uncommittedblobs"])
        return sum(len(container.get_blob_client(b.name).get_block_list("uncommitted")[1])
                   for b in blobs if "/data/" in b.name)

    with FaultProxy(azurite.endpoint) as proxy:
        yield Cloud(
            url=f"az://{container.container_name}/repo?{tuning}",
            env={**base_env, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
            proxied_url=f"az://{container.container_name}/repo?{tuning}",
            proxied_env={**base_env, "AZURE_STORAGE_CONNECTION_STRING":
                         azurite.connection_string.replace(azurite.endpoint, proxy.endpoint)},
            proxy=proxy, stored_parts=uncommitted_blocks,
            is_upload=lambda r: r.method == "PUT")


def _keyfile(tmp_path: Path) -> str:
    out = tmp_path / "key"
    run("keys", "generate", "--out", str(out))
    return str(out)


def test_backup_list_verify_restore_prune(tmp_path: Path, cloud: Cloud) -> None:
    db = tmp_path / "app.db"
    make_db(db)
    key = ["--key-file", _keyfile(tmp_path)]
    first = run_json("backup", "-t", f"sqlite://{db}", "-r", cloud.url, *key, env=cloud.env)
    assert first["encryption"] == "aes-256-gcm"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE t0 SET name = 'changed' WHERE id < 10")
    second = run_json("backup", "-t", f"sqlite://{db}", "-r", cloud.url, *key, env=cloud.env)

    listed = run_json("list", "-r", cloud.url, env=cloud.env)["backups"]
    assert [b["backup_id"] for b in listed] == [first["backup_id"], second["backup_id"]]
    assert run_json("verify", "-r", cloud.url, *key, env=cloud.env)["ok"] is True

    out = tmp_path / "restored.db"
    run("restore", "-r", cloud.url, "-b", first["backup_id"], "-t", f"sqlite://{out}",
        "--from", "app", *key, env=cloud.env)
    changed = dump(db)
    assert dump(out) != changed and len(dump(out)) == len(changed)
    out.unlink()
    run("restore", "-r", cloud.url, "-b", "latest", "-t", f"sqlite://{out}", "--from", "app",
        *key, env=cloud.env)
    assert dump(out) == changed

    run("prune", "-r", cloud.url, "-t", "app", "--keep-last", "1", env=cloud.env)
    listed = run_json("list", "-r", cloud.url, env=cloud.env)["backups"]
    assert [b["backup_id"] for b in listed] == [second["backup_id"]]
    assert run_json("verify", "-r", cloud.url, *key, env=cloud.env)["ok"] is True


def _random_db(path: Path, mib: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, data BLOB)")
        conn.executemany("INSERT INTO big (data) VALUES (?)",
                         ((os.urandom(4000),) for _ in range(mib * 256)))


def test_a_killed_backup_resumes_where_its_upload_stopped(tmp_path: Path, cloud: Cloud) -> None:
    db = tmp_path / "app.db"
    _random_db(db, 24)  # incompressible: ~24 one-MiB parts
    backup = ["backup", "-t", f"sqlite://{db}", "--key-file", _keyfile(tmp_path),
              "-c", "bzip2:9", "--backup-id", BACKUP_ID]  # bzip2 -9: slow enough to kill midway

    proc = subprocess.Popen(
        [sys.executable, "-m", "safehold.cli", "--log-level", "warning", *backup,
         "-r", cloud.url], env={**os.environ, **cloud.env, "SAFEHOLD_LEASE_TTL": "2"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while cloud.stored_parts() < 10 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"not killed midway: {stderr.decode()[-2000:]}"
    stored_before = cloud.stored_parts()
    assert stored_before >= 10
    assert run_json("list", "-r", cloud.url, env=cloud.env)["backups"][0]["type"] == "incomplete"

    cloud.proxy.clear()
    # the killed run's lease (TTL 2s) blocks the target until it expires: wait for that
    result = run_json(*backup, "-r", cloud.proxied_url, "--lock-wait", "1m",
                      env=cloud.proxied_env)
    assert result["backup_id"] == BACKUP_ID
    sent = sum(int(r.headers.get("content-length", 0))
               for r in cloud.proxy.requests if cloud.is_upload(r))
    stored = result["stored_bytes"]
    assert stored > 20 * MiB
    # Everything the killed run had stored was recognised and not sent again. (Besides data the
    # run writes its lease record a few times: under 1 KiB each.)
    lease_writes = 8 * 1024
    assert sent <= stored - (stored_before - 1) * MiB + lease_writes, (sent, stored,
                                                                      stored_before)

    assert run_json("verify", "-r", cloud.url, "--key-file", str(tmp_path / "key"),
                    env=cloud.env)["ok"] is True
    out = tmp_path / "restored.db"
    run("restore", "-r", cloud.url, "-b", BACKUP_ID, "-t", f"sqlite://{out}", "--from", "app",
        "--key-file", str(tmp_path / "key"), env=cloud.env)
    assert dump(out) == dump(db)
