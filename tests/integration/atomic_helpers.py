"""Verify before apply: a restore fed a damaged object or a failing storage read must fail and
leave its target exactly as it was. One driver for every engine (tests/integration/
test_restore_atomic_*.py): each engine supplies its target URL, a way to change the target
after the backup, and a snapshot of the target (rows, indexes, constraints, sequences).

Faults, each late in the largest data object of the backup, several chunks into it:

* ``flip``    — one bit flipped in a frame's payload (the frame's CRC names it);
* ``forge``   — an unencrypted object with one byte of data changed and the frame's CRC
  recomputed: every frame is well-formed, only the object's SHA-256 in the manifest, checked
  once the whole stream has been read, tells it apart (the consumer has taken all the data
  by then, so this is the case that catches a restore applying before verifying);
* ``storage`` — the repository on S3 (moto) behind the fault proxy: the download of that object
  is cut late, and the storage refuses the resuming ranged read (403): a read failure in the
  middle of the stream.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from safehold.cli.errors import Exit
from safehold.codecs.frames import MAGIC
from tests.infra.faults import FaultProxy, Request
from tests.infra.objectstores import MotoS3
from tests.integration.cli_helpers import run, run_json

FAULTS = ("flip", "forge", "storage")
CHUNK = "64KiB"
ACCESS_DENIED = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                 b"<Message>Access Denied</Message></Error>")
_HEAD = 13  # flags u8, raw_len u32, payload_len u32, crc u32
_HEX = b"0123456789abcdef"


@dataclass
class Repo:
    url: str
    local: Path | None = None  # the directory of a file:// repository
    proxy: FaultProxy | None = None
    s3: MotoS3 | None = None
    bucket: str = ""


@pytest.fixture(params=FAULTS)
def fault(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def repo(fault: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Repo]:
    """A file:// repository, or (for ``storage``) an S3 bucket reached through a fault proxy."""
    if fault != "storage":
        yield Repo((tmp_path / "repo").as_uri(), local=tmp_path / "repo")
        return
    s3: MotoS3 = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    with FaultProxy(s3.endpoint) as proxy:
        yield Repo(f"s3://{bucket}/repo?endpoint={proxy.endpoint}&path_style=true",
                   proxy=proxy, s3=s3, bucket=bucket)


def cli_env(base: dict[str, str], repo: Repo, fault: str, tmp_path: Path) -> dict[str, str]:
    """``base`` plus storage credentials and, except for ``forge`` (which needs an object
    whose frames carry no authentication), a repository key."""
    env = dict(base)
    if repo.s3 is not None:
        env.update(repo.s3.env())
    if fault == "forge":
        env["SAFEHOLD_NO_ENCRYPTION"] = "1"
    else:
        env.pop("SAFEHOLD_NO_ENCRYPTION", None)
        key = tmp_path / "kek"
        if not key.exists():
            run("keys", "generate", "--out", str(key), env=env)
        env["SAFEHOLD_KEY_FILE"] = str(key)
    return env


def backup(target_url: str, repo: Repo, env: dict[str, str], fault: str) -> dict[str, Any]:
    """A full backup in small chunks; its manifest (as JSON)."""
    # forge: an unencrypted backup (by explicit choice) whose object is then forged
    codec = ["--compression", "none", "--no-encryption"] if fault == "forge" else []
    out = run_json("backup", "-t", target_url, "-r", repo.url, "--chunk-size", CHUNK, *codec,
                   env=env)
    key = f"{out['target']}/{out['backup_id']}/manifest.json"
    if repo.local is not None:
        text = (repo.local / key).read_bytes()
    else:
        assert repo.s3 is not None
        text = repo.s3.client().get_object(Bucket=repo.bucket, Key=f"repo/{key}")["Body"].read()
    manifest: dict[str, Any] = json.loads(text)
    return manifest


def largest(manifest: dict[str, Any], eligible: Callable[[str], bool] = lambda n: True
            ) -> dict[str, Any]:
    objects = [o for o in manifest["objects"] if eligible(o["name"])]
    big: dict[str, Any] = max(objects, key=lambda o: o["stored_size"])
    assert big["chunks"] >= 8, f"test data too small: {big['name']} has {big['chunks']} chunks"
    return big


def _frames(data: bytes) -> list[tuple[int, int]]:
    """(payload offset, payload length) of every frame of a stored object."""
    assert data[:len(MAGIC)] == MAGIC
    pos, out = len(MAGIC), []
    while pos < len(data):
        length = int.from_bytes(data[pos + 5:pos + 9], "big")
        out.append((pos + _HEAD, length))
        pos += _HEAD + length
    return out


def damage(repo: Repo, manifest: dict[str, Any], obj: dict[str, Any], fault: str) -> None:
    """Apply ``fault`` to object ``obj`` of the backup, late in it (about 85% through)."""
    key = f"{manifest['target']}/{manifest['backup_id']}/data/{obj['name']}"
    if fault == "storage":
        assert repo.proxy is not None
        size = int(obj["stored_size"])

        def plain_get(r: Request) -> bool:
            return r.method == "GET" and r.target.split("?")[0].endswith(key) \
                and "range" not in r.headers

        def resume(r: Request) -> bool:
            return r.method == "GET" and r.target.split("?")[0].endswith(key) \
                and "range" in r.headers

        repo.proxy.clear()
        repo.proxy.fail(nth=1, mode="reset", when=plain_get, at=size * 85 // 100, times=1000)
        repo.proxy.fail(nth=1, mode="503", status=403, body=ACCESS_DENIED, when=resume,
                        times=1000)
        return
    assert repo.local is not None
    path = repo.local / key
    data = bytearray(path.read_bytes())
    frames = [f for f in _frames(bytes(data)) if f[1] > 0]
    offset, length = frames[len(frames) * 85 // 100]
    if fault == "flip":
        data[offset + length // 2] ^= 0x10
    else:  # forge: a plausible change (one hex digit for another), the frame's CRC recomputed
        payload = data[offset:offset + length]
        at = next(i for i in range(length // 2, length) if payload[i] in _HEX)
        data[offset + at] = _HEX[(_HEX.index(payload[at]) + 1) % 16]
        crc = zlib.crc32(bytes(data[offset:offset + length]))
        data[offset - 4:offset] = crc.to_bytes(4, "big")
    path.write_bytes(bytes(data))


EXPECTED_EXIT = {"flip": Exit.CORRUPT, "forge": Exit.CORRUPT, "storage": Exit.STORAGE}


def restore_fails(target_url: str, repo: Repo, env: dict[str, str], fault: str,
                  include: list[str] | None, *extra: str) -> str:
    """Run the restore that must fail; its output. Checks the exit code names the cause."""
    args = ["restore", "-t", target_url, "-r", repo.url, "-b", "latest", "--yes",
            "--conflict", "replace", *extra]
    if include:
        args += ["--include", ",".join(include)]
    result = run(*args, env=env, ok=False)
    assert result.exit_code == EXPECTED_EXIT[fault], \
        f"restore exited {result.exit_code}, expected {EXPECTED_EXIT[fault]}:\n{result.output}"
    if repo.proxy is not None:  # the fault really happened, in the middle of the stream
        assert any(r.fault == "reset" for r in repo.proxy.requests), result.output
    return result.output


def dumps(value: Any) -> str:
    """Snapshots are compared as JSON so a failing assert shows a readable diff."""
    return json.dumps(value, indent=1, sort_keys=True, default=str)
