"""Someone who can write to the repository cannot make a restore apply data the key holder did not
back up: the downgrade and rollback attacks of issue 8, through the real CLI, on a local
repository and on S3 (moto). docs/security.md links each claim to a test here.

Each attack builds its forgery with Safehold itself (another repository, the same --backup-id)
and copies stored objects with the storage layer, as anyone with bucket access could.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from safehold.storage.base import Storage, open_storage
from tests.infra.objectstores import MotoS3
from tests.integration.cli_helpers import dump, make_db, run, run_json

OLD, NEW = "20261126T120000.000000Z", "20261126T130000.000000Z"


@dataclass
class Place:
    url: str
    env: dict[str, str]

    def storage(self) -> Storage:
        return open_storage(self.url)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_BACKUP_ID": "",
            "SAFEHOLD_NO_ENCRYPTION": "", "SAFEHOLD_NAMESPACE": ""}


@pytest.fixture(params=["file", "s3"])
def repo(request: pytest.FixtureRequest, tmp_path: Path, env: dict[str, str]) -> Iterator[Place]:
    if request.param == "file":
        yield Place((tmp_path / "repo").as_uri(), env)
        return
    s3: MotoS3 = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    aws = {k: v for k, v in s3.env().items() if k != "AWS_ENDPOINT_URL"}
    env.update(aws)
    import os

    os.environ.update(aws)  # open_storage() in the test itself reads the same credentials
    yield Place(f"s3://{bucket}/repo?endpoint={s3.endpoint}", env)


@pytest.fixture
def key(tmp_path: Path) -> list[str]:
    run("keys", "generate", "--out", str(tmp_path / "kek"))
    return ["--key-file", str(tmp_path / "kek")]


def put_rows(path: Path, text: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE t0 SET name = ?", (text,))


def replace_folder(dst: Storage, dst_prefix: str, src: Storage, src_prefix: str) -> None:
    """What an attacker with write access does: delete a backup's folder, copy another in."""
    for info in list(dst.list(dst_prefix)):
        dst.delete(info.key)
    for info in list(src.list(src_prefix)):
        dst.put_bytes(dst_prefix + info.key[len(src_prefix):], src.get_bytes(info.key))
    # the manifest last, as a backup writes it (a storage listing must find it complete)
    manifest = dst_prefix + "manifest.json"
    dst.put_bytes(manifest, dst.get_bytes(manifest))


def refused(place: Place, *args: str, names: str, code: int = 4) -> str:
    result = run(*args, "-r", place.url, env=place.env, ok=False)
    out = result.output
    assert result.exit_code == code, f"safehold {' '.join(args)} -> {result.exit_code}:\n{out}"
    assert names in out, out
    return out


def restore_refused(place: Place, key: list[str], into: Path, ref: str, names: str,
                    source: str = "app") -> None:
    """A restore into a database that holds data is refused and leaves it as it was."""
    before = dump(into)
    refused(place, "restore", "-b", ref, "-t", f"sqlite://{into}", "--from", source, "--yes",
            *key, names=names)
    assert dump(into) == before


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    make_db(path, rows=300)
    return path


@pytest.fixture
def live(tmp_path: Path) -> Path:
    """The database a restore would overwrite: it holds data of its own."""
    path = tmp_path / "live" / "app.db"
    path.parent.mkdir()
    make_db(path, rows=50, tables=1)
    return path


def backup(place: Place, db: Path, *args: str) -> str:
    out = run_json("backup", "-t", f"sqlite://{db}", "-r", place.url, *args, env=place.env)
    return str(out["backup_id"])


def test_unencrypted_backup_copied_over_encrypted_one_is_refused(
        repo: Place, tmp_path: Path, key: list[str], db: Path, live: Path) -> None:
    backup(repo, db, *key, "--backup-id", OLD)
    evil = tmp_path / "evil" / "app.db"
    evil.parent.mkdir()
    make_db(evil, rows=10)
    put_rows(evil, "'); DROP TABLE t1; --")
    elsewhere = Place((tmp_path / "elsewhere").as_uri(), repo.env)
    backup(elsewhere, evil, "--no-encryption", "--backup-id", OLD)
    replace_folder(repo.storage(), f"app/{OLD}/", elsewhere.storage(), f"app/{OLD}/")

    out = refused(repo, "verify", *key, names=OLD)
    assert "not encrypted" in out and "all ok" not in out
    restore_refused(repo, key, live, "latest", names=OLD)
    restore_refused(repo, [], live, OLD, names=OLD)  # without the key too: the target's policy


def test_older_backup_copied_under_newer_id_is_refused(
        repo: Place, tmp_path: Path, key: list[str], db: Path, live: Path) -> None:
    backup(repo, db, *key, "--backup-id", OLD)
    put_rows(db, "changed after the first backup")
    backup(repo, db, *key, "--backup-id", NEW)
    storage = repo.storage()
    replace_folder(storage, f"app/{NEW}/", storage, f"app/{OLD}/")

    out = refused(repo, "verify", *key, names=NEW)
    assert "copied or moved here" in out
    restore_refused(repo, key, live, "latest", names=NEW)


def test_manifest_moved_to_another_target_is_refused(
        repo: Place, tmp_path: Path, key: list[str], db: Path, live: Path) -> None:
    backup(repo, db, *key, "--backup-id", OLD)
    other = tmp_path / "other.db"
    make_db(other, rows=20, tables=1)
    backup(repo, other, *key, "--backup-id", OLD)
    storage = repo.storage()
    replace_folder(storage, f"other/{OLD}/", storage, f"app/{OLD}/")

    refused(repo, "verify", "-t", "other", *key, names="copied or moved here")
    restore_refused(repo, key, live, "latest", names=OLD, source="other")


def test_parent_swapped_for_another_backup_is_refused(
        repo: Place, tmp_path: Path, key: list[str], db: Path, live: Path) -> None:
    backup(repo, db, *key, "--backup-id", OLD)
    put_rows(db, "second state")
    child = backup(repo, db, *key, "--type", "incremental")
    put_rows(db, "third state")
    other_full = backup(repo, db, *key)
    storage = repo.storage()
    replace_folder(storage, f"app/{OLD}/", storage, f"app/{other_full}/")

    out = refused(repo, "verify", *key, names=OLD)
    assert "copied or moved here" in out
    restore_refused(repo, key, live, child, names=OLD)


def test_manifest_from_another_repository_is_refused(
        repo: Place, tmp_path: Path, key: list[str], db: Path, live: Path) -> None:
    """Same key, same target name, same id, another repository: the MAC'd repository id differs."""
    backup(repo, db, *key, "--backup-id", OLD)
    elsewhere = Place((tmp_path / "elsewhere").as_uri(), repo.env)
    put_rows(db, "state of another repository")
    backup(elsewhere, db, *key, "--backup-id", OLD)
    replace_folder(repo.storage(), f"app/{OLD}/", elsewhere.storage(), f"app/{OLD}/")

    refused(repo, "verify", *key, names="written to repository")
    restore_refused(repo, key, live, "latest", names=OLD)


def test_deleted_policy_record_is_tamper_not_a_fresh_start(
        repo: Place, tmp_path: Path, key: list[str], db: Path, live: Path) -> None:
    backup(repo, db, *key, "--backup-id", OLD)
    storage = repo.storage()
    storage.delete("app/target.json")
    # forged unencrypted backup beside it, and a key-less restore of it
    evil = tmp_path / "evil" / "app.db"
    evil.parent.mkdir()
    make_db(evil, rows=10)
    elsewhere = Place((tmp_path / "elsewhere").as_uri(), repo.env)
    backup(elsewhere, evil, "--no-encryption", "--backup-id", NEW)
    replace_folder(storage, f"app/{NEW}/", elsewhere.storage(), f"app/{NEW}/")

    refused(repo, "verify", *key, names="no policy record")
    restore_refused(repo, [], live, "latest", names="it was deleted")
    # the next backup does not quietly re-create the record as "none" (nor as anything else)
    refused(repo, "backup", "-t", f"sqlite://{db}", "--no-encryption",
            names="policy record app/target.json is missing")
    assert not storage.exists("app/target.json")


def test_policy_record_rewritten_to_none_is_refused_with_the_key(
        repo: Place, tmp_path: Path, key: list[str], db: Path, live: Path) -> None:
    backup(repo, db, *key, "--backup-id", OLD)
    storage = repo.storage()
    record = json.loads(storage.get_bytes("app/target.json"))
    storage.put_bytes("app/target.json", json.dumps(
        {**record, "encryption": "none", "mac": None, "mac_key_id": None}).encode())
    evil = tmp_path / "evil" / "app.db"
    evil.parent.mkdir()
    make_db(evil, rows=10)
    elsewhere = Place((tmp_path / "elsewhere").as_uri(), repo.env)
    backup(elsewhere, evil, "--no-encryption", "--backup-id", NEW)
    replace_folder(storage, f"app/{NEW}/", elsewhere.storage(), f"app/{NEW}/")

    refused(repo, "verify", *key, names=NEW)
    restore_refused(repo, key, live, "latest", names="is not encrypted")
    # nor does an explicit --no-encryption backup with the key launder the forged record
    refused(repo, "backup", "-t", f"sqlite://{db}", "--no-encryption", *key,
            names="the record was replaced")


def test_a_new_target_without_a_key_needs_an_explicit_choice(
        repo: Place, tmp_path: Path, key: list[str], db: Path, live: Path) -> None:
    out = refused(repo, "backup", "-t", f"sqlite://{db}", code=5,
                  names="safehold keys generate")
    assert "--no-encryption" in out
    assert not [i for i in repo.storage().list("app/") if i.key.endswith("manifest.json")]
    # the explicit choice: recorded, then kept without repeating it
    backup(repo, db, "--no-encryption")
    backup(repo, db)
    # a key later does not silently turn it into a mixed target
    refused(repo, "backup", "-t", f"sqlite://{db}", *key, code=2, names="--no-encryption")
    backup(repo, db, "--no-encryption", *key)  # authenticates the recorded "none"
    run("restore", "-r", repo.url, "-b", "latest", "-t", f"sqlite://{live}", "--from", "app",
        "--yes", *key, env=repo.env)
    assert dump(live) == dump(db)


def test_an_encrypted_target_stays_encrypted(
        repo: Place, tmp_path: Path, key: list[str], db: Path) -> None:
    backup(repo, db, *key)
    refused(repo, "backup", "-t", f"sqlite://{db}", "--no-encryption", *key, code=2,
            names="is encrypted")
    refused(repo, "backup", "-t", f"sqlite://{db}", code=5, names="is encrypted")
    storage = repo.storage()
    record = json.loads(storage.get_bytes("app/target.json"))
    storage.put_bytes("app/target.json", json.dumps({**record, "namespace": "x"}).encode())
    out = refused(repo, "backup", "-t", f"sqlite://{db}", *key, code=4, names="policy record")
    assert "modified" in out
    refused(repo, "verify", *key, names="modified")


def test_listing_without_the_key_still_works(
        repo: Place, tmp_path: Path, key: list[str], db: Path) -> None:
    backup(repo, db, *key)
    rows = run_json("list", "-r", repo.url, env=repo.env)["backups"]
    assert [r["encryption"] for r in rows] == ["aes-256-gcm"]
    for command in (["list"], ["show", "-t", "app"]):
        result = run(*command, "-r", repo.url, env=repo.env)
        assert "nothing here is authenticated" in result.stderr


def test_two_namespaces_targets_of_one_name_never_share_a_folder(
        repo: Place, key: list[str], db: Path, live: Path) -> None:
    backup(repo, db, *key, "--namespace", "shop")
    refused(repo, "backup", "-t", f"sqlite://{db}", "--namespace", "billing", *key, code=2,
            names="belongs to 'shop/app'")
    shown = run_json("show", "-r", repo.url, "-t", "app", env=repo.env)
    assert shown["namespace"] == "shop" and shown["repo_id"].startswith("r-")


def run_task(tmp_path: Path, task: dict[str, object]) -> dict[str, object]:
    """`safehold run-task` as the operator's Job runs it: the result from its file."""
    import os
    import subprocess
    import sys

    result = tmp_path / f"result-{len(list(tmp_path.glob('result-*')))}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    proc = subprocess.run(
        [sys.executable, "-m", "safehold.cli", "run-task", "--result-file", str(result)],
        env={**env, "SAFEHOLD_TASK": json.dumps(task)}, capture_output=True, text=True,
        timeout=300, check=False)
    parsed: dict[str, object] = json.loads(result.read_text())
    assert proc.returncode == parsed.get("exitCode", 0), proc.stderr
    return parsed


def test_operator_tasks_record_the_explicit_choice_of_no_encryption(
        tmp_path: Path, db: Path) -> None:
    repo = tmp_path / "repo"
    task = {"kind": "backup", "target": "app", "repository": {"url": repo.as_uri()},
            "database": {"engine": "sqlite", "url": f"sqlite://{db}"},
            "encryption": {"mode": "none"}}
    done = run_task(tmp_path, task)
    assert done["phase"] == "Completed" and done["encryption"] == "none", done
    assert json.loads((repo / "app" / "target.json").read_text())["encryption"] == "none"
