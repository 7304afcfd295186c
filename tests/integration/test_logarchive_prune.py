"""`safehold prune` also deletes archived log segments no kept backup needs (real CLI, local
repository; the segments are written through the archive API, as a streamer writes them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from safehold.pipeline.logarchive import LogArchive
from safehold.repository.logarchive import SegmentId
from safehold.repository.repo import Repository
from safehold.storage.local import LocalStorage
from tests.integration.cli_helpers import make_db, run, run_json


def test_prune_deletes_segments_older_than_every_kept_full(tmp_path: Path) -> None:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    env = {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
           "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": ""}
    db, repo = tmp_path / "app.db", (tmp_path / "repo").as_uri()
    make_db(db, rows=10, tables=1)
    for _ in range(2):
        run("backup", "-t", f"sqlite://{db}", "-r", repo, "--no-encryption", env=env)
    archive = LogArchive(Repository(LocalStorage(tmp_path / "repo")), "app", no_encryption=True)
    now = datetime.now(UTC)
    for name, age in (("binlog.000001", timedelta(days=3)), ("binlog.000002", timedelta(0))):
        archive.put(SegmentId("app", "binlog", "server-1", name), [b"log"],
                    start={"binlog_file": name, "binlog_pos": "4"},
                    end={"binlog_file": name, "binlog_pos": "7"},
                    first_time=now - age, last_time=now - age)
    dry = run_json("prune", "-r", repo, "-t", "app", "--keep-last", "1", "--dry-run", env=env)
    assert dry["log_segments"] == ["app/binlog/server-1/binlog.000001"]
    assert len(archive.list()) == 2  # a dry run deletes nothing
    run("prune", "-r", repo, "-t", "app", "--keep-last", "1", env=env)
    assert [s.name for s in archive.list()] == ["binlog.000002"]
    ok = run_json("verify", "-r", repo, "-t", "app", env=env)
    assert ok["ok"] and ok["checked"] >= 3  # the kept backup's objects and the segment
    data = tmp_path / "repo" / "app" / "_logs" / "binlog" / "server-1" / "binlog.000002" / "data"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 1
    data.write_bytes(bytes(raw))
    bad = run("verify", "-r", repo, "-t", "app", env=env, ok=False)
    assert bad.exit_code == 4 and "binlog.000002" in bad.output, bad.output
