"""postgres.procs: a streamed client tool gets a wide stdio buffer (through stdbuf) and a wide
pipe on its streamed side, and nothing else changes: its own argv, its exit status, its bytes.

The speed this buys is a `make bench` figure; the archives staying intact is proven by every
PostgreSQL backup and restore test, whose pg_dump and pg_restore now run this way.
"""

from __future__ import annotations

import fcntl
import shutil
import sys
from pathlib import Path

import pytest

from safehold.engines.base import EngineError
from safehold.engines.childenv import PIPE_SIZE
from safehold.engines.postgres import procs
from safehold.engines.postgres.conn import PgTarget
from safehold.engines.postgres.procs import Feeder, Tool, buffered

TARGET = PgTarget(host="127.0.0.1", port=5432, user="u", database="d")
# prints the stdio buffer sizes stdbuf hands to the C library, then copies stdin to stdout
PROBE = [sys.executable, "-c",
         "import os, sys; sys.stdout.buffer.write(repr((os.environ.get('_STDBUF_I'),"
         " os.environ.get('_STDBUF_O'))).encode() + b'\\n');"
         " sys.stdout.buffer.write(sys.stdin.buffer.read())"]


def pipe_max() -> int:
    return int(Path("/proc/sys/fs/pipe-max-size").read_text())


def test_streamed_sides_run_under_stdbuf() -> None:
    stdbuf = shutil.which("stdbuf")
    assert stdbuf, "coreutils' stdbuf is part of the test machine (Debian)"
    assert buffered(["pg_dump", "-Fc"], stdin=False, stdout=True) == \
        [stdbuf, "-o", "1M", "pg_dump", "-Fc"]
    assert buffered(["pg_restore", "-d", "x"], stdin=True, stdout=False) == \
        [stdbuf, "-i", "1M", "pg_restore", "-d", "x"]
    assert buffered(["pg_restore", "--list"], stdin=True, stdout=True) == \
        [stdbuf, "-i", "1M", "-o", "1M", "pg_restore", "--list"]
    # nothing streamed (pg_restore -j of a spooled file): started as it is
    assert buffered(["pg_restore", "-j2", "f"], stdin=False, stdout=False) == \
        ["pg_restore", "-j2", "f"]


def test_without_stdbuf_the_tool_starts_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procs.shutil, "which", lambda name: None)
    assert buffered(["pg_dump", "-Fc"], stdin=True, stdout=True) == ["pg_dump", "-Fc"]


def test_a_streamed_tool_gets_wide_buffers_and_its_bytes_through_unchanged() -> None:
    payload = bytes(range(256)) * 20000 + b"\n\x00tail"  # 5 MB, every byte value
    tool = Tool(PROBE, TARGET, "probing", stdin=True, stdout=True)
    try:
        assert tool.argv == PROBE  # errors name the tool, not stdbuf
        if pipe_max() >= PIPE_SIZE:
            for stream in (tool.proc.stdin, tool.proc.stdout):
                assert stream is not None
                assert fcntl.fcntl(stream.fileno(), fcntl.F_GETPIPE_SZ) == PIPE_SIZE
        feeder = Feeder(tool, [payload[:3_000_000], payload[3_000_000:]])
        out = b"".join(tool.stdout_blocks())
        feeder.join()
    finally:
        tool.close()
    first, rest = out.split(b"\n", 1)
    assert first == b"('1048576', '1048576')"  # stdbuf's environment for libstdbuf
    assert rest == payload


def test_a_failing_tool_under_stdbuf_is_reported_by_its_own_name() -> None:
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"]
    tool = Tool(argv, TARGET, "probing", stdout=True)
    try:
        with pytest.raises(EngineError, match="boom"):
            b"".join(tool.stdout_blocks())
    finally:
        tool.close()
