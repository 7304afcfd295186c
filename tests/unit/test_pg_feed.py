"""postgres.procs.feed: verify before apply at the pipe. A failing stream kills the tool before
its stdin closes (psql must never see a clean end of input), and a tool that stops reading early
but succeeded still has the rest of the stream read, so its final check (the SHA-256) runs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from safehold.engines.postgres.archive import only_old_server_setting
from safehold.engines.postgres.procs import feed


class Damaged(Exception):
    pass


def stream(blocks: int, *, fail_at_end: bool) -> Iterator[bytes]:
    for _ in range(blocks):
        yield b"x" * 65536
    if fail_at_end:
        raise Damaged("sha256 does not match the manifest")


def child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)


def test_a_failing_stream_kills_the_tool_before_its_input_ends() -> None:
    # The child commits (exit 0) only if it reads a clean end of input.
    proc = child("import sys\nwhile sys.stdin.buffer.read(65536): pass\nsys.exit(0)")
    errors: list[BaseException] = []
    assert proc.stdin is not None
    feed(proc.stdin, stream(4, fail_at_end=True), errors, proc.kill)
    assert proc.wait() < 0  # killed: it never saw EOF
    assert [type(e) for e in errors] == [Damaged]


def test_a_tool_that_stops_reading_early_does_not_skip_the_final_check() -> None:
    proc = child("import sys\nsys.stdin.buffer.read(10)\nsys.stdin.close()\nsys.exit(0)")
    errors: list[BaseException] = []
    assert proc.stdin is not None
    feed(proc.stdin, stream(64, fail_at_end=True), errors, proc.kill,
         drain=lambda: proc.wait() == 0)
    assert [type(e) for e in errors] == [Damaged]


def test_a_failed_tool_is_not_waited_for_with_the_rest_of_the_download() -> None:
    proc = child("import sys\nsys.stdin.buffer.read(10)\nsys.stdin.close()\nsys.exit(3)")
    errors: list[BaseException] = []
    read = []

    def counted() -> Iterator[bytes]:
        for block in stream(64, fail_at_end=True):
            read.append(len(block))
            yield block

    assert proc.stdin is not None
    feed(proc.stdin, counted(), errors, proc.kill, drain=lambda: proc.wait() == 0)
    assert errors == [] and len(read) < 64  # the tool's own error is the one to report


REFUSED = ('pg_restore: error: could not execute query: ERROR:  unrecognized configuration'
           ' parameter "transaction_timeout"\nCommand was: SET transaction_timeout = 0;\n')


@pytest.mark.parametrize(("stderr", "harmless"), [
    (REFUSED + "pg_restore: warning: errors ignored on restore: 1\n", True),
    (REFUSED * 3 + "pg_restore: warning: errors ignored on restore: 3\n", True),  # -j: each
    (REFUSED * 4 + "pg_restore: warning: errors ignored on restore: 2\n", True),  # reported twice
    (REFUSED + "pg_restore: error: could not execute query: ERROR:  relation \"t\" already"
     " exists\nCommand was: CREATE TABLE public.t (id integer);\n"
     "pg_restore: warning: errors ignored on restore: 2\n", False),
    (REFUSED, False),  # stopped at it (--exit-on-error): nothing was restored
    (REFUSED + "pg_restore: warning: errors ignored on restore: 2\n", False),  # one unseen
    (REFUSED + "pg_restore: warning: errors ignored on restore: 0\n", False),
    ("pg_restore: error: connection to server failed\n", False),
    ("", False),
])
def test_only_a_refused_transaction_timeout_is_harmless(stderr: str, harmless: bool) -> None:
    assert only_old_server_setting(stderr) is harmless
