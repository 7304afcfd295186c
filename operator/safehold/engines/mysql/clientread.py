"""Reading table rows through the ``mariadb`` client: its C protocol code instead of PyMySQL's.

For the tables read row by row: a table with a one-column integer primary key is read in
key-range chunks on a PyMySQL connection instead (:func:`.rows.chunked_statements`), cheaper
than either, since this client writes its output a character at a time (``putc``: 0.5 CPU-s
per 100 MB of rows here).

The server renders each row as one ready SQL tuple (:mod:`.rows`), so reading is moving bytes;
PyMySQL still parses every row packet in Python (about 2 µs a row: most of a backup's CPU on
tables of small rows). The ``mariadb`` command-line client reads them in C and writes them out
one per line (``--batch --raw``: no escaping, no column names; ``--quick``: row by row, never a
whole result in memory). Safehold keeps each client running as a session: statements go in on
its stdin, rows come out on its stdout, and after every statement a ``SELECT`` of a random end
mark tells where that statement's output ends. Every row ends in a NUL byte that no value holds
(:data:`.rows.ROW_END`), and the end mark counts only right after one, so no value can be taken
for it. Several blocks of rows become one ``INSERT`` by :func:`.rows.values_list`: C-speed
byte operations, no per-row Python.

A session is one server connection, so it can join the backup's snapshot like any other: it
runs ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` under the global read lock and reports the
binlog position of its snapshot (see :mod:`.snapshot`). Statements that carry names (a table's
``SELECT``) go in as ``PREPARE`` of a hex literal, so no table or column name is ever parsed by
the client (a name may hold ``;``, quotes, backslashes or newlines). The connection, password and
TLS settings reach the client through :mod:`.tools` (an in-memory option file, never the command
line or the environment); the session state is the one :func:`.conn.connect` sets.

The client reports an SQL error on stderr and exits (batch mode stops at the first error), so
an output that ends before its end mark is a failure, raised with the client's own error
classified as PyMySQL's would be.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from typing import IO

import pymysql

from safehold.engines import childenv
from safehold.engines.base import EngineError
from safehold.engines.mysql import tools
from safehold.engines.mysql.catalog import Table
from safehold.engines.mysql.conn import SESSION_INIT, Target, classify
from safehold.engines.mysql.rows import (
    BATCH_BYTES,
    ROW_END,
    RowStats,
    altered,
    insert_prefix,
    insert_statement,
    select_rows,
)

CLIENT = "mariadb"
_READ = 256 << 10  # bytes per read from the client's stdout
_ERROR = re.compile(rb"ERROR (\d+) \([0-9A-Z]{5}\)(?: at line \d+)?: (.*)", re.DOTALL)


class ClientMissing(EngineError):
    """``reader=client`` was asked for but no ``mariadb`` client is installed."""


def find_client() -> str | None:
    """The ``mariadb`` client's path, or None."""
    return shutil.which(CLIENT)


def client_version(path: str) -> str:
    """``mariadb --version``'s line, for the manifest's tools."""
    done = childenv.run([path, "--version"], capture_output=True, timeout=30)
    return bytes(done.stdout).decode(errors="replace").strip()


class ClientSession:
    """One ``mariadb`` client process holding one server session (see the module text)."""

    def __init__(self, target: Target, path: str) -> None:
        self.target = target
        self.path = path
        self._end = b"safehold-end-" + secrets.token_hex(8).encode()
        args = ["--batch", "--raw", "--skip-column-names", "--quick", "--unbuffered",
                "--binary-mode", "--skip-reconnect", "--max-allowed-packet=1G",
                f"--connect-timeout={max(1, int(target.connect_timeout))}",
                f"--init-command={SESSION_INIT}", target.database]
        try:
            # its own process group: abort() stops the client and anything it runs (a
            # distribution's `mariadb` may be a wrapper script) at once
            self._proc = tools.start(path, target, args, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        except OSError as exc:
            raise ClientMissing(f"cannot start the MariaDB client {path} ({exc}); install it"
                                " (Debian: mariadb-client) or read with reader=driver in the"
                                " target URL") from None
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin: IO[bytes] = self._proc.stdin
        self._fd = self._proc.stdout.fileno()
        childenv.widen(self._fd)  # a deeper pipe lets the client run ahead of the compressor
        try:
            self.query(b"SELECT 1")  # logged in, session state set
        except BaseException:
            self.close()
            raise

    # -- statements ---------------------------------------------------------------------------

    def query(self, sql: bytes) -> list[list[bytes]]:
        """Run one statement (no names in it); its rows, columns split."""
        out = b"".join(self._blocks(sql))
        return [line.split(b"\t") for line in out.splitlines()]

    def status(self, pattern: str) -> dict[str, str]:
        """``SHOW STATUS LIKE pattern`` as a dict (names lower-cased)."""
        rows = self.query(f"SHOW STATUS LIKE '{pattern}'".encode())
        return {r[0].decode().lower(): r[1].decode() for r in rows if len(r) == 2}

    def statements(self, table: Table, stats: RowStats,
                   batch_bytes: int = BATCH_BYTES) -> Iterator[bytes]:
        """``table``'s rows as INSERT lines, as :func:`.rows.insert_statements` writes them."""
        if not table.columns:
            return
        prefix = insert_prefix(table)
        sql = select_rows(table).encode()
        # names never pass the client's parser: the statement travels as a hex literal
        prepared = (b"PREPARE safehold_rows FROM CONVERT(0x" + sql.hex().encode()
                    + b" USING utf8mb4); EXECUTE safehold_rows")
        pending: list[bytes] = []
        size = 0
        for block in self._blocks(prepared, ROW_END + b"\n"):
            pending.append(block)
            size += len(block)
            if size >= batch_bytes:
                yield self._insert(prefix, pending, stats)
                pending, size = [], 0
        # a value the server could not render as stored (one longer than max_allowed_packet
        # is NULL) leaves a warning, which the end mark's SELECT (no table) keeps
        warnings = self.query(b"SHOW WARNINGS")
        if warnings:
            raise altered(table, [(b"", w[1], b" ".join(w[2:]).decode(errors="replace"))
                                  for w in warnings])
        if pending:
            yield self._insert(prefix, pending, stats)

    @staticmethod
    def _insert(prefix: bytes, blocks: list[bytes], stats: RowStats) -> bytes:
        body = b"".join(blocks)  # whole rows, each ending in ROW_END and a newline
        return insert_statement(prefix, body, body.count(ROW_END), stats, lines=True)

    def _blocks(self, sql: bytes, line_end: bytes = b"\n") -> Iterator[bytes]:
        """Send ``sql``; its output as blocks of whole lines, up to (without) the end mark.

        A line ends in ``line_end``: rows, which may hold raw newlines, end in ``ROW_END``
        and a newline. The end mark counts only as a line of its own after one, so no value
        can pass for it."""
        try:
            self._stdin.write(sql + b";\nSELECT '" + self._end + b"';\n")
            self._stdin.flush()
        except OSError:  # the client is gone: its stderr says why
            raise self._failure() from None
        last = self._end + b"\n"
        tail = line_end + last
        buf = b""
        while True:
            try:
                chunk = os.read(self._fd, _READ)
            except OSError:
                raise self._failure() from None
            if not chunk:
                raise self._failure()
            buf = buf + chunk if buf else chunk
            if buf == last:
                return
            if buf.endswith(tail):
                yield buf[:len(buf) - len(last)]
                return
            cut = buf.rfind(line_end)  # whole lines out; a partial line (or mark) waits
            if cut != -1:
                cut += len(line_end)
                yield buf[:cut]
                buf = buf[cut:]

    # -- ending -------------------------------------------------------------------------------

    def finish(self) -> None:
        """Commit (ends the snapshot) and let the client exit."""
        self.query(b"COMMIT")
        self._stdin.close()
        if self._proc.wait(timeout=60) != 0:
            raise self._failure()

    def abort(self) -> None:
        """Stop the client now. Safe from any thread: the thread reading from it then sees
        its output end and fails (its pipes are left to :meth:`close`)."""
        with contextlib.suppress(OSError):
            if hasattr(os, "killpg"):
                os.killpg(self._proc.pid, signal.SIGKILL)
            else:  # pragma: no cover - Windows
                self._proc.kill()

    def close(self) -> None:
        """Stop the client if it still runs, and release its pipes (the reading thread)."""
        if self._proc.poll() is None:
            self.abort()
        with contextlib.suppress(Exception):
            self._proc.wait(timeout=10)
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()

    def _failure(self) -> EngineError:
        """Why the client stopped: its error, classified as the driver's would be."""
        try:
            code = self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        detail = b""
        with contextlib.suppress(Exception):
            assert self._proc.stderr is not None
            detail = self._proc.stderr.read().strip()
        match = _ERROR.search(detail)
        if match:
            message = match.group(2).decode(errors="replace").strip()
            return classify(pymysql.err.OperationalError(int(match.group(1)), message),
                            self.target)
        shown = detail.decode(errors="replace")[-600:] or "it printed no error"
        return EngineError(f"{self.target}: the MariaDB client stopped before the end of a"
                           f" statement (exit {code}; {shown}); the backup was abandoned")

