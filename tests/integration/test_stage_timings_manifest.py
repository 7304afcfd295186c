"""A backup's per-stage timings in its manifest (``engine_meta.pipeline``), bound by the MAC,
and `safehold stats` reading them; manifests from before the field still list, verify and
stat. Real SQLite backups in a local repository, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from safehold.api.manifest import PIPELINE_KEY, stage_timings
from safehold.cli.errors import Exit
from safehold.codecs import crypto
from safehold.engines.base import open_engine
from safehold.pipeline.backup import BackupOptions, run_backup
from safehold.pipeline.profile import BACKUP_STAGES, WAITING
from safehold.repository.repo import Repository
from safehold.storage.base import open_storage
from tests.integration.cli_helpers import make_db, run, run_json


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": ""}


@pytest.fixture
def setup(tmp_path: Path, env: dict[str, str]) -> tuple[Path, str, list[str]]:
    """A database, a repository URL and the key arguments of an encrypted target."""
    db = tmp_path / "app.db"
    make_db(db, rows=20000)
    key = tmp_path / "k"
    run("keys", "generate", "--out", str(key), env=env)
    return db, (tmp_path / "repo").as_uri(), ["--key-file", str(key)]


def manifest_path(repo: str, backup_id: str) -> Path:
    return Path(repo.removeprefix("file://")) / "app" / backup_id / "manifest.json"


def recorded(repo: str, backup_id: str) -> dict[str, Any]:
    meta = json.loads(manifest_path(repo, backup_id).read_text())["engine_meta"]
    assert isinstance(meta[PIPELINE_KEY], dict)
    return meta[PIPELINE_KEY]


def test_a_backup_records_its_stage_timings_and_stats_shows_them(setup, env) -> None:
    db, repo, key = setup
    ids = [run_json("backup", "-t", f"sqlite://{db}", "-r", repo, *key, env=env)["backup_id"]
           for _ in range(2)]
    pipeline = recorded(repo, ids[0])
    assert set(pipeline["stage_seconds"]) == {*BACKUP_STAGES, WAITING}
    assert pipeline["bottleneck"] in BACKUP_STAGES  # a real stage did the most work
    top = max(BACKUP_STAGES, key=lambda s: pipeline["stage_seconds"][s])
    assert pipeline["stage_seconds"][pipeline["bottleneck"]] == pipeline["stage_seconds"][top]
    assert pipeline["stage_seconds"]["read"] > 0 and pipeline["stage_seconds"]["compress"] > 0
    assert pipeline["wall_seconds"] > 0
    assert pipeline["cores_busy"] is None or 0 <= pipeline["cores_busy"] <= 1
    assert run_json("verify", "-r", repo, *key, env=env)["ok"] is True  # the MAC holds

    data = run_json("stats", "-r", repo, env=env)
    (app,) = data["targets"]
    runs = app["runs"]
    assert [r["backup_id"] for r in runs] == ids
    for r in runs:  # each run's bottleneck is the one its manifest recorded
        mine = recorded(repo, r["backup_id"])
        assert r["bottleneck_stage"] == mine["bottleneck"]
        assert r["stage_seconds"] == mine["stage_seconds"]
        assert r["cores_busy"] == mine["cores_busy"]
    assert app["bottleneck_stage"] in {r["bottleneck_stage"] for r in runs}

    text = run("stats", "-r", repo, env=env).stdout
    newest = runs[-1]["bottleneck_stage"]
    assert f"bottleneck  {app['bottleneck_stage']} in " in text and "of 2 timed run(s)" in text
    assert f"newest: {newest}" in text
    assert "bottlenecks " in text and "no stage timings" not in text


def test_a_forged_stage_timing_fails_the_mac(setup, env) -> None:
    db, repo, key = setup
    bid = run_json("backup", "-t", f"sqlite://{db}", "-r", repo, *key, env=env)["backup_id"]
    path = manifest_path(repo, bid)
    body = json.loads(path.read_text())
    pipeline = body["engine_meta"][PIPELINE_KEY]
    pipeline["bottleneck"] = "read" if pipeline["bottleneck"] != "read" else "write"
    pipeline["stage_seconds"][pipeline["bottleneck"]] = 999.0  # a consistent-looking lie
    path.write_text(json.dumps(body))
    result = run("verify", "-r", repo, *key, env=env, ok=False)
    assert result.exit_code == Exit.CORRUPT and "MAC" in result.output
    out = Path(repo.removeprefix("file://")).parent / "restored.db"
    restore = run("restore", "-r", repo, "-b", bid, "--from", "app", "-t", f"sqlite://{out}",
                  *key, env=env, ok=False)
    assert restore.exit_code == Exit.CORRUPT and not out.exists()


def test_a_manifest_from_before_the_field_lists_verifies_and_stats(setup, env,
                                                                    tmp_path: Path) -> None:
    """A backup written by the pipeline without a profile is what every backup was before
    manifests recorded timings: no ``pipeline`` key, a MAC over the body without it."""
    db, repo, key = setup
    repository = Repository(open_storage(repo))
    old = run_backup(open_engine(f"sqlite://{db}"), repository, BackupOptions(target="app"),
                     crypto.load_key_file(key[1]))
    assert PIPELINE_KEY not in old.engine_meta and stage_timings(old) is None
    assert PIPELINE_KEY not in json.loads(manifest_path(repo, old.backup_id).read_text())[
        "engine_meta"]

    listed = run_json("list", "-r", repo, env=env)["backups"]
    assert old.backup_id in json.dumps(listed)
    assert run_json("verify", "-r", repo, *key, env=env)["ok"] is True
    only_old = run_json("stats", "-r", repo, env=env)["targets"][0]
    assert only_old["bottleneck_stage"] is None
    assert only_old["runs"][0]["bottleneck_stage"] is None
    assert only_old["runs"][0]["stage_seconds"] is None
    text = run("stats", "-r", repo, env=env).stdout
    assert "bottleneck  - (no stage timings in these manifests" in text
    assert "bottlenecks" not in text

    new = run_json("backup", "-t", f"sqlite://{db}", "-r", repo, *key, env=env)["backup_id"]
    assert run_json("verify", "-r", repo, *key, env=env)["ok"] is True  # old and new verify
    mixed = run_json("stats", "-r", repo, env=env)["targets"][0]
    assert [r["bottleneck_stage"] is None for r in mixed["runs"]] == [True, False]
    assert mixed["bottleneck_stage"] == recorded(repo, new)["bottleneck"]
    text = run("stats", "-r", repo, env=env).stdout
    assert "of 1 timed run(s)" in text
    assert f"bottlenecks - x1 > {mixed['bottleneck_stage']} x1" in text
    restored = tmp_path / "old.db"
    run("restore", "-r", repo, "-b", old.backup_id, "--from", "app",
        "-t", f"sqlite://{restored}", *key, env=env)
    assert restored.exists()


def test_malformed_timings_in_an_unsigned_manifest_are_left_out(tmp_path: Path, env) -> None:
    """An unencrypted manifest is anyone's to edit: markup or nonsense for a stage is not
    shown (stats treats the run as untimed), never an error."""
    db = tmp_path / "app.db"
    make_db(db)
    repo = (tmp_path / "repo").as_uri()
    bid = run_json("backup", "-t", f"sqlite://{db}", "-r", repo, "--no-encryption",
                   env=env)["backup_id"]
    path = manifest_path(repo, bid)
    body = json.loads(path.read_text())
    body["engine_meta"][PIPELINE_KEY]["bottleneck"] = "\x1b[31m<b>x"
    path.write_text(json.dumps(body))
    data = run_json("stats", "-r", repo, env=env)["targets"][0]
    assert data["bottleneck_stage"] is None and data["runs"][0]["bottleneck_stage"] is None
    assert "\x1b" not in run("stats", "-r", repo, env=env).stdout
