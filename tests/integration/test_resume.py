"""Backups to S3 through the real CLI: a round trip, and resuming a backup killed mid-upload.

moto stands in for S3; a FaultProxy in front of it holds back part uploads so the kill lands
after some parts are durable and before the object is complete, and it logs every request, so
the bytes the second run sent are measured on the wire, not taken from our own counters.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.faults import FaultProxy, Request
from tests.infra.objectstores import MotoS3
from tests.integration.cli_helpers import dump, make_db, run, run_json

MiB = 1 << 20


@pytest.fixture
def proxy(s3_server: MotoS3) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint) as p:
        yield p


@pytest.fixture
def env(tmp_path: Path, s3_server: MotoS3) -> dict[str, str]:
    """moto's credentials, and nothing of the developer's own config, keys or endpoint."""
    (tmp_path / "safehold.yaml").write_text("{}\n")
    aws = {k: v for k, v in s3_server.env().items() if k != "AWS_ENDPOINT_URL"}
    return {**aws, "SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_BACKUP_ID": ""}


@pytest.fixture
def key(tmp_path: Path) -> list[str]:
    run("keys", "generate", "--out", str(tmp_path / "kek"))
    return ["--key-file", str(tmp_path / "kek")]


def is_upload(r: Request) -> bool:
    return r.method == "PUT" and "/data/" in r.target


def test_backup_list_verify_restore_prune_on_s3(tmp_path: Path, s3_server: MotoS3,
                                                s3_bucket: str, env: dict[str, str],
                                                key: list[str]) -> None:
    db = tmp_path / "app.db"
    make_db(db)
    repo = f"s3://{s3_bucket}/backups?endpoint={s3_server.endpoint}&part_size=5MiB"
    ids = [run_json("backup", "-t", f"sqlite://{db}", "-r", repo, *key, env=env)["backup_id"]
           for _ in range(2)]
    listed = run_json("list", "-r", repo, env=env)["backups"]
    assert [b["backup_id"] for b in listed] == ids
    assert run_json("verify", "-r", repo, *key, env=env)["ok"] is True
    out = tmp_path / "restored.db"
    run("restore", "-r", repo, "-b", "latest", "-t", f"sqlite://{out}", "--from", "app", *key,
        env=env)
    assert dump(out) == dump(db)
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert f"backups/app/{ids[0]}/manifest.json" in keys
    assert all(k.startswith("backups/") for k in keys)

    run("prune", "-r", repo, "-t", "app", "--keep-last", "1", env=env)
    assert [b["backup_id"] for b in run_json("list", "-r", repo, env=env)["backups"]] == ids[1:]


def _random_db(path: Path, mib: int) -> None:
    """Incompressible rows (random blobs), so stored size ~ database size."""
    rng = os.urandom
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
        conn.executemany("INSERT INTO blobs VALUES (?, ?)",
                         [(i, rng(4000)) for i in range(mib * 256)])


def _rows_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with sqlite3.connect(path) as conn:
        for row_id, data in conn.execute("SELECT id, data FROM blobs ORDER BY id"):
            digest.update(row_id.to_bytes(8, "big") + data)
    return digest.hexdigest()


def _stored_parts(client: object, bucket: str) -> int:
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])  # type: ignore
    return max((len(client.list_parts(Bucket=bucket, Key=u["Key"],  # type: ignore
                                      UploadId=u["UploadId"]).get("Parts", []))
                for u in uploads), default=0)


def test_a_killed_backup_resumes_from_the_stored_parts(tmp_path: Path, s3_server: MotoS3,
                                                       s3_bucket: str, proxy: FaultProxy,
                                                       env: dict[str, str],
                                                       key: list[str]) -> None:
    db = tmp_path / "app.db"
    _random_db(db, 40)
    repo = f"s3://{s3_bucket}/r?endpoint={proxy.endpoint}&part_size=5MiB&concurrency=2"
    backup_id = "20261126T120000.000000Z"
    args = ["backup", "-t", f"sqlite://{db}", "-r", repo, *key, "--backup-id", backup_id]
    client = s3_server.client()

    # Run 1: parts 4 and later hang in the proxy; kill -9 once 3 parts are durable.
    proxy.fail(nth=4, mode="stall", seconds=300, when=is_upload, times=1000)
    # (a short lease TTL: the killed run's lease expires soon, and the resume waits for that)
    first = subprocess.Popen([sys.executable, "-m", "safehold.cli", "--log-level", "warning",
                              *args], env={**os.environ, **env, "SAFEHOLD_LEASE_TTL": "2"},
                             stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _stored_parts(client, s3_bucket) < 3 and first.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    _, stderr = first.communicate()
    assert first.returncode == -signal.SIGKILL, stderr.decode()
    assert _stored_parts(client, s3_bucket) == 3
    assert run_json("list", "-r", repo, env=env)["backups"][0]["type"] == "incomplete"

    # Run 2, same backup id: completes, sending only what was not stored yet.
    proxy.clear()
    done = run_json(*args, "--lock-wait", "1m", env=env)
    assert done["backup_id"] == backup_id
    pages = next(o for o in run_json("list", "-r", repo, env=env)["backups"]
                 if o["backup_id"] == backup_id)
    assert pages["type"] == "full"
    sent = sum(int(r.headers.get("content-length", 0)) for r in proxy.requests if is_upload(r))
    assert done["stored_bytes"] > 38 * MiB  # random rows: no compression
    assert sent < 0.7 * done["stored_bytes"], (sent, done["stored_bytes"])  # 15 MiB skipped
    assert sent > 0.5 * done["stored_bytes"]  # and the rest really went up
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []

    assert run_json("verify", "-r", repo, *key, env=env)["ok"] is True
    out = tmp_path / "restored.db"
    run("restore", "-r", repo, "-b", backup_id, "-t", f"sqlite://{out}", "--from", "app", *key,
        env=env)
    assert _rows_digest(out) == _rows_digest(db)

    again = run(*args, env=env, ok=False)
    assert again.exit_code != 0
    assert "already complete" in again.output


def test_prune_aborts_a_stale_upload(s3_server: MotoS3, s3_bucket: str,
                                     env: dict[str, str]) -> None:
    client = s3_server.client()
    repo = f"s3://{s3_bucket}/r?endpoint={s3_server.endpoint}"
    stale = "r/app/20260101T000000.000000Z/data/pages"
    client.create_multipart_upload(Bucket=s3_bucket, Key=stale)
    client.create_multipart_upload(Bucket=s3_bucket, Key="other-repo/app/x")
    run("prune", "-r", repo, "-t", "app", "--keep-last", "3", env=env)
    # moto dates every upload 2010, so ours is older than prune's one-hour grace period
    left = client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["other-repo/app/x"]
