"""Helpers the database engine tests share: killing a CLI run mid-way, concurrent sink puts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from safehold.api.manifest import Manifest
from safehold.codecs.compression import parse_codec
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.objects import ObjectReader, ObjectWriter
from safehold.repository.repo import Repository
from safehold.storage.local import LocalStorage


def kill_cli_when(args: Sequence[str], env: Mapping[str, str], ready: Callable[[], bool], *,
                  timeout: float, poll: float = 0.02) -> str:
    """Run ``safehold *args`` in a child process and SIGKILL it as soon as ``ready()`` holds
    (the test's "caught in the act" condition); its output.

    Fails, after killing the child all the same, when the command ends first or ``ready()``
    does not hold within ``timeout`` seconds: a kill test must not pass because nothing ran.
    """
    proc = subprocess.Popen([sys.executable, "-m", "safehold.cli", *args],
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    reached = False
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                reached = True
                break
            time.sleep(poll)
    finally:
        proc.send_signal(signal.SIGKILL)  # a no-op when it has ended already
        out = proc.communicate(timeout=30)[0].decode()
    assert reached, f"safehold {' '.join(args)} was not caught in the act" \
        f" (exit {proc.returncode}):\n{out}"
    assert proc.returncode == -signal.SIGKILL, f"the command finished before the kill:\n{out}"
    return out


def check_concurrent_puts(tmp_path: Path, payloads: Mapping[str, bytes], *, piece: int,
                          data_key: bytes | None) -> None:
    """The engines call ``BackupSink.put`` from ``--jobs`` threads: the real ObjectWriter must
    store every object whole when all puts start at once, and read each back byte for byte."""
    repo = Repository(LocalStorage(tmp_path / "repo"))
    writer = ObjectWriter(repo, "t", "20260101T000000.000000Z", parse_codec("zstd"), data_key,
                          chunk_size=64 * 1024)
    barrier = threading.Barrier(len(payloads))

    def put(name: str) -> None:
        barrier.wait()
        data = payloads[name]
        writer.put(name, (data[j:j + piece] for j in range(0, len(data), piece)))

    threads = [threading.Thread(target=put, args=(n,)) for n in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.name for r in writer.records) == sorted(payloads)
    now = datetime.now(UTC)
    manifest = Manifest(backup_id=writer.backup_id, target="t", engine="test", type="full",
                        chain_id=writer.backup_id, started_at=now, finished_at=now,
                        compression="zstd:3", chunk_size=64 * 1024,
                        objects=tuple(writer.records))

    class Keys(DataKeys):
        def __init__(self) -> None:
            pass

        def for_backup(self, backup: Manifest) -> bytes | None:
            return writer.data_key

    reader = ObjectReader(repo, Keys())
    for name, data in payloads.items():
        assert b"".join(reader.open(manifest, name)) == data
