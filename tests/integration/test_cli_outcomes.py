"""Every outcome of the CLI is the right one, said clearly (issue 9), on SQLite + local storage.

Read-only commands create nothing; a verify that found nothing (or an incomplete backup) fails;
damaged backups are reported one by one while the healthy ones are still served; messages name
flags and files, never pydantic; JSON output covers errors; restore finds its source.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from safehold.api.errors import Exit
from tests.infra.portable import linux_only, posix_only, sqlite_url
from tests.integration.cli_helpers import dump, make_db, run, run_json


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "",
            "SAFEHOLD_NO_ENCRYPTION": "1"}  # tests that encrypt pass a key and clear this


@pytest.fixture
def repo(tmp_path: Path) -> str:
    return (tmp_path / "repo").as_uri()


def backup(tmp: Path, repo: str, env: dict[str, str], name: str = "app", rows: int = 100,
           *extra: str) -> str:
    db = tmp / f"{name}.db"
    if not db.exists():
        make_db(db, rows=rows)
    plain = [] if "--key-file" in extra else ["--no-encryption"]  # unencrypted by choice
    backup_id: str = run_json("backup", "-t", sqlite_url(db), "-r", repo, *plain, *extra,
                              env=env)["backup_id"]
    return backup_id


def backup_dir(tmp: Path, backup_id: str, target: str = "app") -> Path:
    return tmp / "repo" / target / backup_id


# -- read-only commands never create anything ------------------------------------------------

@pytest.mark.parametrize("command", [
    ["verify"], ["list"], ["prune", "-t", "app", "--keep-last", "1", "--dry-run"],
    ["prune", "-t", "app", "--keep-last", "1"], ["keys", "list"], ["show", "-t", "app"],
])
def test_a_missing_repository_is_exit_3_naming_the_path_and_is_not_created(
        tmp_path: Path, env: dict[str, str], command: list[str]) -> None:
    missing = tmp_path / "typo" / "repo"
    result = run(*command, "-r", missing.as_uri(), env=env, ok=False)
    assert result.exit_code == Exit.NOT_FOUND, result.output
    assert str(missing) in result.output
    assert not (tmp_path / "typo").exists()


def test_an_empty_mount_point_is_not_a_repository(tmp_path: Path, env: dict[str, str]) -> None:
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()  # what an unmounted volume looks like
    result = run("verify", "-r", mount_point.as_uri(), env=env, ok=False)
    assert result.exit_code == Exit.NOT_FOUND and "nothing is stored there" in result.output
    assert list(mount_point.iterdir()) == []


def test_verify_of_an_unknown_target_is_exit_3_listing_the_targets(
        tmp_path: Path, repo: str, env: dict[str, str]) -> None:
    backup(tmp_path, repo, env)
    result = run("verify", "-r", repo, "-t", "apq", env=env, ok=False)
    assert result.exit_code == Exit.NOT_FOUND and "targets here: app" in result.output


def test_verify_fails_on_an_incomplete_backup(tmp_path: Path, repo: str,
                                              env: dict[str, str]) -> None:
    backup(tmp_path, repo, env)
    broken = backup(tmp_path, repo, env)
    (backup_dir(tmp_path, broken) / "manifest.json").unlink()
    result = run("verify", "-r", repo, env=env, ok=False)
    assert result.exit_code == Exit.CORRUPT
    assert f"backup {broken} of app is incomplete" in result.output


def test_verify_with_nothing_to_verify_fails(tmp_path: Path, repo: str,
                                             env: dict[str, str]) -> None:
    backup_id = backup(tmp_path, repo, env)
    run("prune", "-r", repo, "-t", "app", "--keep-last", "1", env=env)
    shutil.rmtree(backup_dir(tmp_path, backup_id))  # the repository config stays
    result = run("verify", "-r", repo, env=env, ok=False)
    assert result.exit_code == Exit.NOT_FOUND and "nothing to verify" in result.output


# -- damaged items one by one ------------------------------------------------------------------

def test_a_damaged_manifest_is_reported_while_the_healthy_backups_are_served(
        tmp_path: Path, repo: str, env: dict[str, str]) -> None:
    ids = [backup(tmp_path, repo, env) for _ in range(3)]
    damaged = backup_dir(tmp_path, ids[1]) / "manifest.json"
    damaged.write_text('{"format": 1, "backup_id": 7}')
    listed = run("list", "-r", repo, env=env, ok=False)
    assert listed.exit_code == Exit.CORRUPT
    assert ids[0] in listed.output and ids[2] in listed.output
    assert f"backup {ids[1]} of app: app/{ids[1]}/manifest.json is damaged" in listed.output
    assert "pydantic" not in listed.output and "errors.pydantic.dev" not in listed.output
    verified = run("--output", "json", "verify", "-r", repo, env=env, ok=False)
    report = json.loads(verified.stdout)
    assert verified.exit_code == Exit.CORRUPT and report["backups"] == 2
    assert [f["backup_id"] for f in report["failures"]] == [ids[1]]
    pruned = run("prune", "-r", repo, "-t", "app", "--keep-last", "1", env=env, ok=False)
    assert pruned.exit_code == Exit.CORRUPT
    assert f"deleted      {ids[0]}" in pruned.output and damaged.exists()


def test_a_damaged_key_record_names_its_file(tmp_path: Path, repo: str,
                                             env: dict[str, str]) -> None:
    key = tmp_path / "k"
    env = {**env, "SAFEHOLD_NO_ENCRYPTION": ""}
    run("keys", "generate", "--out", str(key), env=env)
    backup_id = backup(tmp_path, repo, env, "app", 100, "--key-file", str(key))
    (backup_dir(tmp_path, backup_id) / "keys.json").write_text("")
    result = run("verify", "-r", repo, "--key-file", str(key), env=env, ok=False)
    assert result.exit_code == Exit.CORRUPT, result.output
    assert f"app/{backup_id}/keys.json is damaged" in result.output
    assert "Expecting value" not in result.output.splitlines()[0]


def test_a_manifest_lacking_an_object_is_an_integrity_error(tmp_path: Path, repo: str,
                                                            env: dict[str, str]) -> None:
    backup_id = backup(tmp_path, repo, env)
    path = backup_dir(tmp_path, backup_id) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["objects"] = [o for o in manifest["objects"] if o["name"] != "pages"]
    path.write_text(json.dumps(manifest))
    result = run("restore", "-r", repo, "-b", "latest", "-t", sqlite_url(tmp_path / 'n.db'),
                 env=env, ok=False)
    assert result.exit_code == Exit.CORRUPT, result.output
    assert "lists no such object" in result.output and "KeyError" not in result.output
    assert not (tmp_path / "n.db").exists()


def test_messages_name_flags_not_fields(tmp_path: Path, repo: str, env: dict[str, str]) -> None:
    backup(tmp_path, repo, env)
    result = run("prune", "-r", repo, "-t", "app", "--keep-last", "-1", env=env, ok=False)
    assert result.exit_code == Exit.USAGE and "--keep-last" in result.output
    assert "keep_last" not in result.output and "pydantic" not in result.output
    none = run("prune", "-r", repo, "-t", "app", env=env, ok=False)
    assert none.exit_code == Exit.USAGE and "--keep-daily" in none.output
    assert "keep_daily" not in none.output


# -- full disk -----------------------------------------------------------------------------------

@linux_only("a tmpfs in a user and mount namespace (util-linux unshare)")
def test_a_full_disk_at_the_last_flush_is_the_clear_no_space_error(tmp_path: Path) -> None:
    """A small write that only fails when flushed must be reported once, as NoSpaceError."""
    assert shutil.which("unshare"), "util-linux unshare is needed for a real full disk"
    mnt = tmp_path / "small"
    mnt.mkdir()
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from safehold.storage.local import LocalStorage\n"
        f"root = Path({str(mnt)!r})\n"
        "import os\n"
        "fd = os.open(root / 'filler', os.O_WRONLY | os.O_CREAT)\n"
        "try:\n"
        "    while True:\n"
        "        os.write(fd, b'x' * 512)\n"
        "except OSError:\n"
        "    os.close(fd)\n"
        "s = LocalStorage(root / 'repo')\n"
        "try:\n"
        "    s.put_bytes('app/x/manifest.json', b'{}' * 100)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e.exit_code if hasattr(e, 'exit_code') else '', e)\n"
    )
    script = f"mount -t tmpfs -o size=64k tmpfs {mnt} && exec {sys.executable} -c \"$PROBE\""
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          env={**os.environ, "PROBE": probe}, capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout.startswith("NoSpaceError 7 cannot write"), proc.stdout + proc.stderr


# -- restore -----------------------------------------------------------------------------------

def test_include_that_names_nothing_is_an_error(tmp_path: Path, repo: str,
                                               env: dict[str, str]) -> None:
    backup(tmp_path, repo, env)
    for value in ("", ",,", " , "):
        result = run("restore", "-r", repo, "-b", "latest", "-t", sqlite_url(tmp_path / 'x.db'),
                     "--include", value, "--yes", env=env, ok=False)
        assert result.exit_code == Exit.USAGE and "names no table" in result.output
        assert not (tmp_path / "x.db").exists()


def test_an_unknown_table_is_a_usage_error_that_leaves_nothing_behind(
        tmp_path: Path, repo: str, env: dict[str, str]) -> None:
    backup(tmp_path, repo, env)
    out = tmp_path / "new.db"
    result = run("restore", "-r", repo, "-b", "latest", "-t", sqlite_url(out),
                 "--include", "t1,nope", env=env, ok=False)
    assert result.exit_code == Exit.USAGE and "no table 'nope'" in result.output
    assert "t0, t1, t2" in result.output and not out.exists()


def test_one_target_in_the_repository_implies_from(tmp_path: Path, repo: str,
                                                  env: dict[str, str]) -> None:
    backup(tmp_path, repo, env)
    out = tmp_path / "copy.db"
    run("restore", "-r", repo, "-b", "latest", "-t", sqlite_url(out), env=env)
    assert dump(out) == dump(tmp_path / "app.db")


def test_a_unique_backup_id_needs_no_from_and_ambiguity_lists_targets(
        tmp_path: Path, repo: str, env: dict[str, str]) -> None:
    backup(tmp_path, repo, env, "app")
    other = backup(tmp_path, repo, env, "billing", rows=10)
    out = tmp_path / "copy.db"
    run("restore", "-r", repo, "-b", other, "-t", sqlite_url(out), env=env)
    assert dump(out) == dump(tmp_path / "billing.db")
    ambiguous = run("restore", "-r", repo, "-b", "latest", "-t", sqlite_url(tmp_path / 'n.db'),
                    env=env, ok=False)
    assert ambiguous.exit_code == Exit.USAGE
    assert "app, billing" in ambiguous.output and "--from" in ambiguous.output


def test_a_postgresql_name_over_63_bytes_is_refused_before_anything(
        tmp_path: Path, repo: str, env: dict[str, str]) -> None:
    backup(tmp_path, repo, env)
    name = "d" * 300
    result = run("restore", "-r", repo, "-b", "latest", "-t",
                 f"postgresql://u@127.0.0.1:1/{name}", "--from", "app", env=env, ok=False)
    assert result.exit_code == Exit.USAGE and "at most 63 bytes" in result.output


# -- output -------------------------------------------------------------------------------------

def test_json_errors_are_one_document_on_stdout(tmp_path: Path, env: dict[str, str]) -> None:
    missing = (tmp_path / "nope").as_uri()
    for args in (["list", "-r", missing, "--output", "json"],
                 ["--output", "json", "list", "-r", missing],
                 ["list", "-r", missing, "-o", "json"]):
        result = run(*args, env=env, ok=False)
        error = json.loads(result.stdout)["error"]
        assert result.exit_code == error["code"] == Exit.NOT_FOUND
        assert error["class"] == "BackupNotFound" and str(tmp_path / "nope") in error["message"]
        assert error["hint"]
    usage = run("restore", "--output", "json", "-r", missing, env=env, ok=False)
    assert json.loads(usage.stdout)["error"]["code"] == Exit.USAGE


def test_global_options_are_accepted_after_the_subcommand(tmp_path: Path, repo: str,
                                                          env: dict[str, str]) -> None:
    backup(tmp_path, repo, env)
    result = run("list", "-r", repo, "--log-format", "json", "--log-level", "error",
                 "--output", "json", env=env)
    assert json.loads(result.stdout)["backups"][0]["target"] == "app"


def test_show_is_for_people(tmp_path: Path, repo: str, env: dict[str, str]) -> None:
    backup(tmp_path, repo, env)
    shown = run("show", "-r", repo, "-t", "app", env=env).output
    assert "none (a full backup)" in shown and "KiB" in shown
    assert not re.search(r"None|\{'|\[\]|raw_bytes", shown), shown


def test_sizes_are_iec_everywhere(tmp_path: Path, repo: str, env: dict[str, str]) -> None:
    from safehold.cli.common import progress_text

    assert progress_text(3 * 2**20, 10 * 2**20, 2**20) == "3.0 MiB / 10.0 MiB  1.0 MiB/s"
    backup(tmp_path, repo, env)
    listed = run("list", "-r", repo, env=env).output
    assert "KiB" in listed and not re.search(r"\d (kB|MB|GB)\b", listed)


def test_check_has_no_jobs_option(env: dict[str, str]) -> None:
    assert "--jobs" not in run("check", "--help", env=env).output
    assert "--jobs" in run("backup", "--help", env=env).output


def test_prune_reports_what_it_deleted_freed_and_the_grace_period(
        tmp_path: Path, repo: str, env: dict[str, str]) -> None:
    old = backup(tmp_path, repo, env)
    backup(tmp_path, repo, env)
    size = sum(p.stat().st_size for p in backup_dir(tmp_path, old).rglob("*") if p.is_file())
    stale = backup_dir(tmp_path, old) / "data" / ".tmp-abandoned"
    stale.write_bytes(b"x" * 1000)
    os.utime(stale, (0, 0))  # abandoned long ago
    result = run("prune", "-r", repo, "-t", "app", "--keep-last", "1", "--output", "json",
                 env=env)
    data = json.loads(result.stdout)
    assert data["deleted"] == [old] and data["freed_bytes"] == size
    assert data["temporary_upload_grace_seconds"] == 3600
    text = run("prune", "-r", repo, "-t", "app", "--keep-last", "1", env=env).output
    assert "older than 60 min" in text and "deleted 0 backup(s), freed 0 B" in text


@posix_only("SIGKILL (kill_cli_when)")
def test_a_resumed_backup_holds_no_temporary_file(tmp_path: Path, repo: str,
                                                  env: dict[str, str]) -> None:
    """kill -9 mid-object leaves a temp file; the resumed backup replaces and removes it."""
    import sqlite3

    from tests.integration.cli_helpers import kill_cli_when

    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, data BLOB)")
        conn.executemany("INSERT INTO big (data) VALUES (?)",
                         ((os.urandom(4000),) for _ in range(5000)))  # ~20 MB
    backup_id = "20261202T120000.000000Z"
    data = tmp_path / "repo" / "app" / backup_id / "data"
    args = ["backup", "-t", sqlite_url(db), "-r", repo, "-c", "gzip:9", "--chunk-size",
            "1MiB", "--backup-id", backup_id]
    # A short lease TTL, so that the killed writer's lease expires while the resume waits for it.
    kill_cli_when(args, {**env, "SAFEHOLD_LEASE_TTL": "2"}, lambda: any(data.glob(".tmp-*")),
                  timeout=60)
    assert list(data.glob(".tmp-*")), "the killed backup left its temp file"
    run(*args, "--lock-wait", "1m", env=env)
    assert [p.name for p in (tmp_path / "repo" / "app" / backup_id).rglob(".tmp-*")] == []
    assert run_json("verify", "-r", repo, env=env)["ok"] is True
