"""The runner end to end on SQLite + local storage, through the real CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from safehold.cli.errors import Exit
from safehold.codecs.frames import MAGIC, frame_bytes, parse_frames
from tests.infra.portable import local_path, posix_only, sqlite_url
from tests.integration.cli_helpers import dump, kill_cli_when, make_db, run, run_json

CODECS = ["none", "gzip", "bzip2", "lz4", "zstd"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment free of the developer's own config and keys."""
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": ""}


@pytest.fixture
def setup(tmp_path: Path, env: dict[str, str]) -> tuple[Path, str, dict[str, str]]:
    db = tmp_path / "app.db"
    make_db(db)
    return db, (tmp_path / "repo").as_uri(), env


def keyfile(tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    run("keys", "generate", "--out", str(out))
    return out


def objects(repo: str, backup_id: str) -> Path:
    return local_path(repo) / "app" / backup_id / "data"


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
@pytest.mark.parametrize("codec", CODECS)
def test_backup_verify_restore_every_codec(tmp_path: Path, setup, codec: str,
                                           encrypted: bool) -> None:
    db, repo, env = setup
    key = ["--key-file", str(keyfile(tmp_path, "k"))] if encrypted else []
    b = run_json("backup", "-t", sqlite_url(db), "-r", repo, "-c", codec,
                 *(key or ["--no-encryption"]), env=env)
    assert b["encryption"] == ("aes-256-gcm" if encrypted else "none")
    assert b["compression"].startswith(codec)
    if codec != "none":
        assert b["compression_ratio"] > 2  # the rows repeat: any codec must shrink them
    assert run_json("verify", "-r", repo, *key, env=env)["ok"] is True
    out = tmp_path / "restored.db"
    run("restore", "-r", repo, "-b", "latest", "-t", sqlite_url(out), "--from", "app",
        *key, env=env)
    assert dump(out) == dump(db)


def test_cat_gives_a_file_standard_tools_read(tmp_path: Path, setup) -> None:
    db, repo, env = setup
    b = run_json("backup", "-t", sqlite_url(db), "-r", repo, "-c", "gzip", "--no-encryption",
                 env=env)
    pages = run("cat", "-r", repo, "-t", "app", "-b", b["backup_id"], "pages", env=env)
    copy = tmp_path / "cat.db"
    copy.write_bytes(pages.stdout_bytes)
    assert dump(copy) == dump(db)
    # the stored object is a sequence of standard gzip members behind Safehold's framing
    stored = (objects(repo, b["backup_id"]) / "pages").read_bytes()
    frames = list(parse_frames([stored]))
    import gzip
    assert b"".join(gzip.decompress(f.payload) for f in frames) == pages.stdout_bytes


def _damage(path: Path, how: str, other: Path | None = None) -> None:
    data = path.read_bytes()
    if how == "flip":
        pos = len(data) // 2
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0x40]) + data[pos + 1:])
    elif how == "forge":  # flip a payload byte and fix the frame's CRC, as an attacker would
        frames = list(parse_frames([data]))
        f = frames[1]
        payload = bytearray(f.payload)
        payload[5] ^= 0x01
        frames[1] = dataclasses.replace(f, payload=memoryview(payload))
        path.write_bytes(MAGIC + b"".join(
            frame_bytes(f.payload, f.raw_len, f.final) for f in frames))
    elif how == "truncate":
        path.write_bytes(data[: len(data) * 2 // 3])
    elif how == "reorder":
        frames = list(parse_frames([data]))
        assert len(frames) >= 3, "need several chunks to reorder"
        frames[0], frames[1] = frames[1], frames[0]
        path.write_bytes(MAGIC + b"".join(
            frame_bytes(f.payload, f.raw_len, f.final) for f in frames))
    elif how == "swap":
        assert other is not None
        shutil.copyfile(other, path)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
@pytest.mark.parametrize("how", ["flip", "forge", "truncate", "reorder", "swap"])
def test_tampering_is_detected_and_named(tmp_path: Path, setup, how: str,
                                         encrypted: bool) -> None:
    db, repo, env = setup
    key = ["--key-file", str(keyfile(tmp_path, "k"))] if encrypted else []
    args = ["-t", sqlite_url(db), "-r", repo, "--chunk-size", "64KiB", "-c", "lz4",
            *(key or ["--no-encryption"])]
    first = run_json("backup", *args, env=env)["backup_id"]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE t0 SET name = 'changed' WHERE id < 500")
    second = run_json("backup", *args, env=env)["backup_id"]
    target = objects(repo, second) / "pages"
    _damage(target, how, other=objects(repo, first) / "pages")

    result = run("verify", "-r", repo, *key, "--output", "json", env=env, ok=False)
    assert result.exit_code == Exit.CORRUPT
    assert second in result.stdout and "pages" in result.stdout
    if encrypted and how in ("forge", "reorder", "swap"):
        assert "authentication failed" in result.stdout

    before = dump(db)
    restore = run("restore", "-r", repo, "-b", second, "-t", sqlite_url(db), "--yes", *key,
                  env=env, ok=False)
    assert restore.exit_code == Exit.CORRUPT, restore.output
    assert f"backup {second}, object 'pages'" in restore.output
    assert dump(db) == before  # nothing restored silently


def test_manifest_edit_is_detected_when_encrypted(tmp_path: Path, setup) -> None:
    db, repo, env = setup
    key = ["--key-file", str(keyfile(tmp_path, "k"))]
    b = run_json("backup", "-t", sqlite_url(db), "-r", repo, *key, env=env)
    manifest = objects(repo, b["backup_id"]).parent / "manifest.json"
    body = json.loads(manifest.read_text())
    body["include"] = ["t0"]  # a plausible edit: restore would silently skip tables
    manifest.write_text(json.dumps(body))
    result = run("verify", "-r", repo, *key, env=env, ok=False)
    assert result.exit_code == Exit.CORRUPT and "MAC" in result.output


def test_wrong_or_missing_key_is_a_clear_error(tmp_path: Path, setup) -> None:
    db, repo, env = setup
    good, bad = keyfile(tmp_path, "good"), keyfile(tmp_path, "bad")
    run("backup", "-t", sqlite_url(db), "-r", repo, "--key-file", str(good), env=env)
    out = sqlite_url(tmp_path / 'x.db')
    missing = run("restore", "-r", repo, "-b", "latest", "-t", out, "--from", "app", env=env,
                  ok=False)
    assert missing.exit_code == Exit.KEY and "encrypted" in missing.output
    wrong = run("restore", "-r", repo, "-b", "latest", "-t", out, "--from", "app",
                "--key-file", str(bad), env=env, ok=False)
    assert wrong.exit_code == Exit.KEY
    assert not (tmp_path / "x.db").exists()


def test_passphrase_mode(tmp_path: Path, setup) -> None:
    db, repo, env = setup
    env["SAFEHOLD_PASSPHRASE"] = "correct horse battery staple"
    run("backup", "-t", sqlite_url(db), "-r", repo, env=env)
    out = tmp_path / "p.db"
    run("restore", "-r", repo, "-b", "latest", "-t", sqlite_url(out), "--from", "app", env=env)
    assert dump(out) == dump(db)
    env["SAFEHOLD_PASSPHRASE"] = "wrong"
    result = run("verify", "-r", repo, env=env, ok=False)
    assert result.exit_code == Exit.KEY and "SAFEHOLD_PASSPHRASE" in result.output


def test_key_rotation_retires_the_old_key(tmp_path: Path, setup) -> None:
    db, repo, env = setup
    old, new = keyfile(tmp_path, "old"), keyfile(tmp_path, "new")
    ids = [run_json("backup", "-t", sqlite_url(db), "-r", repo, "--key-file", str(old),
                    env=env)["backup_id"] for _ in range(2)]
    stored_before = {p: p.read_bytes() for p in objects(repo, ids[0]).iterdir()}
    rot = run_json("keys", "rotate", "-r", repo, "--new-key-file", str(new), "--key-file",
                   str(old), env=env)
    assert rot["rewrapped"] == 2
    retired = run("backup", "-t", sqlite_url(db), "-r", repo, "--key-file", str(old), env=env,
                  ok=False)
    assert retired.exit_code == Exit.KEY and "retired" in retired.output
    # no data was re-encrypted
    assert {p: p.read_bytes() for p in objects(repo, ids[0]).iterdir()} == stored_before
    os.remove(old)  # the old key is gone for good
    assert run_json("verify", "-r", repo, "--key-file", str(new), env=env)["ok"]
    for backup_id in ids:
        out = tmp_path / f"{backup_id}.db"
        run("restore", "-r", repo, "-b", backup_id, "-t", sqlite_url(out), "--from", "app",
            "--key-file", str(new), env=env)
        assert dump(out) == dump(db)
    listed = run_json("keys", "list", "-r", repo, env=env)["keys"]
    assert {k["key_id"]: (k["backups"], k["active"]) for k in listed}[rot["active_key_id"]] \
        == (2, True)


def test_chain_full_incr_incr_diff_restores_each_point(tmp_path: Path, setup) -> None:
    db, repo, env = setup
    points: list[tuple[str, list[str], int]] = []  # (id, dump, raw bytes of "pages")
    for step, kind in enumerate(["full", "incremental", "incremental", "differential"]):
        if step:
            with sqlite3.connect(db) as conn:
                conn.execute("UPDATE t1 SET name = ? WHERE id BETWEEN ? AND ?",
                             (f"step {step}", step * 100, step * 100 + 50))
                conn.execute("INSERT INTO t2 (name) VALUES (?)", (f"new {step}",))
        b = run_json("backup", "-t", sqlite_url(db), "-r", repo, "--no-encryption",
                     "--type", kind, env=env)
        assert b["type"] == kind
        pages = run_json("show", "-r", repo, "-t", "app", "-b", b["backup_id"], env=env)
        raw = next(o["raw_size"] for o in pages["objects"] if o["name"] == "pages")
        points.append((b["backup_id"], dump(db), raw))
    full_size = points[0][2]
    for _, _, size in points[1:]:
        assert size < full_size / 4, "incrementals must scale with the change"
    shown = run_json("show", "-r", repo, "-t", "app", "-b", points[3][0], env=env)
    assert shown["chain"] == [points[0][0], points[3][0]]  # differential: full + itself
    assert run_json("show", "-r", repo, "-t", "app", "-b", points[2][0], env=env)["chain"] \
        == [p[0] for p in points[:3]]
    for backup_id, expected, _ in points:
        out = tmp_path / f"r-{backup_id}.db"
        run("restore", "-r", repo, "-b", backup_id, "-t", sqlite_url(out), "--from", "app",
            env=env)
        assert dump(out) == expected


def test_prune_dry_run_then_prune(tmp_path: Path, setup) -> None:
    db, repo, env = setup
    ids = [run_json("backup", "-t", sqlite_url(db), "-r", repo, "--no-encryption",
                    env=env)["backup_id"]
           for _ in range(3)]
    ids.append(run_json("backup", "-t", sqlite_url(db), "-r", repo, "--type", "incremental",
                        "--no-encryption",
                        env=env)["backup_id"])
    dry = run_json("prune", "-r", repo, "-t", "app", "--keep-last", "1", "--dry-run", env=env)
    decisions = {d["backup_id"]: d for d in dry["decisions"]}
    assert [i for i in ids if not decisions[i]["keep"]] == ids[:2]
    assert decisions[ids[2]]["reasons"] == [f"needed by {ids[3]}"]
    assert len(run_json("list", "-r", repo, env=env)["backups"]) == 4  # dry run deleted nothing
    run("prune", "-r", repo, "-t", "app", "--keep-last", "1", env=env)
    assert [b["backup_id"] for b in run_json("list", "-r", repo, env=env)["backups"]] == ids[2:]
    bad = run("prune", "-r", repo, "-t", "app", env=env, ok=False)
    assert bad.exit_code == Exit.USAGE and "at least one" in bad.output


def test_free_space_is_checked_before_a_backup_starts(tmp_path: Path, setup,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from safehold.storage.local import LocalStorage

    db, repo, env = setup
    monkeypatch.setattr(LocalStorage, "free_space", lambda self: 1024)  # inject a full disk
    result = run("backup", "-t", sqlite_url(db), "-r", repo, "--no-encryption", env=env, ok=False)
    assert result.exit_code == Exit.STORAGE and "MiB free" in result.output
    assert run_json("list", "-r", repo, env=env)["backups"] == []


def test_restore_over_existing_needs_yes_off_a_terminal(setup) -> None:
    db, repo, env = setup
    run("backup", "-t", sqlite_url(db), "-r", repo, "--no-encryption", env=env)
    result = run("restore", "-r", repo, "-b", "latest", "-t", sqlite_url(db), env=env, ok=False)
    assert result.exit_code == Exit.ABORTED and "--yes" in result.output


def test_restore_with_yes_does_not_ask_whether_the_target_exists(
        setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """--yes asks nothing, so nothing finds out what it would ask about: on a server that
    question is a connection of its own (a whole restore's start-up)."""
    from safehold.engines.sqlite.engine import SQLiteEngine

    db, repo, env = setup
    run("backup", "-t", sqlite_url(db), "-r", repo, "--no-encryption", env=env)
    asked: list[str] = []
    monkeypatch.setattr(SQLiteEngine, "estimate_size",
                        lambda self: asked.append("size") or 1)  # the target exists
    run("restore", "-r", repo, "-b", "latest", "-t", sqlite_url(db), "--yes", env=env)
    assert not asked
    result = run("restore", "-r", repo, "-b", "latest", "-t", sqlite_url(db), env=env, ok=False)
    assert result.exit_code == Exit.ABORTED and asked == ["size"]


def _big_db(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, data BLOB)")
        conn.executemany("INSERT INTO big (data) VALUES (?)",
                         ((os.urandom(4000),) for _ in range(15000)))  # ~60 MB


@posix_only("SIGKILL (kill_cli_when)")
def test_kill_9_during_backup_leaves_no_backup(tmp_path: Path, env: dict[str, str]) -> None:
    db = tmp_path / "app.db"
    _big_db(db)
    repo = (tmp_path / "repo").as_uri()
    data = tmp_path / "repo" / "app"
    kill_cli_when(["backup", "-t", sqlite_url(db), "-r", repo, "-c", "bzip2:9", "--no-encryption",
                   "--chunk-size", "1MiB"], env, lambda: any(data.glob("*/data/*")), timeout=60)
    assert any(data.iterdir()), "the killed backup had started writing"
    listed = run_json("list", "-r", repo, env=env)["backups"]
    assert [b for b in listed if b["type"] != "incomplete"] == []
    run("prune", "-r", repo, "-t", "app", "--keep-last", "5", env=env)
    assert run_json("list", "-r", repo, env=env)["backups"] == []


@posix_only("SIGKILL (kill_cli_when)")
def test_kill_9_during_restore_keeps_the_old_database(tmp_path: Path,
                                                      env: dict[str, str]) -> None:
    db = tmp_path / "app.db"
    _big_db(db)
    repo = (tmp_path / "repo").as_uri()
    run("backup", "-t", sqlite_url(db), "-r", repo, "--no-encryption", "-c", "bzip2:9", env=env)
    target = tmp_path / "live.db"
    make_db(target, rows=100)
    before = dump(target)
    kill_cli_when(["restore", "-r", repo, "-b", "latest", "-t", sqlite_url(target),
                   "--from", "app", "--yes"], env,
                  lambda: bool(list(tmp_path.glob(".live.db*"))), timeout=60, poll=0.01)
    assert dump(target) == before



def test_interactive_restore_walks_through_backup_tables_and_confirmation(
        tmp_path: Path, setup) -> None:
    db, repo, env = setup
    first = run_json("backup", "-t", sqlite_url(db), "-r", repo, "--no-encryption",
                     env=env)["backup_id"]
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM t0")
    run_json("backup", "-t", sqlite_url(db), "-r", repo, "--type", "incremental",
             "--no-encryption", env=env)
    out = tmp_path / "picked.db"
    make_db(out, rows=1)
    # choose the older backup (2nd in the newest-first list), one table, then decline
    declined = run("restore", "-i", "-r", repo, "-t", sqlite_url(out), "--from", "app",
                   env=env, input="2\nt0\nn\n", ok=False)
    assert declined.exit_code == Exit.ABORTED
    assert first in declined.output and "Tables:" in declined.output
    assert "  t0 " in declined.output and "pages" not in declined.output
    with sqlite3.connect(out) as conn:
        assert conn.execute("SELECT count(*) FROM t0").fetchone()[0] == 1
    run("restore", "-i", "-r", repo, "-t", sqlite_url(out), "--from", "app", env=env,
        input="2\nt0\ny\n")
    with sqlite3.connect(out) as conn:
        assert conn.execute("SELECT count(*) FROM t0").fetchone()[0] == 2000  # from `first`
        assert conn.execute("SELECT count(*) FROM t1").fetchone()[0] == 1  # not selected
