"""Client-tool processes: started with the connection in their environment and the password in
a passfile, streamed, reaped.

Each tool is started through :mod:`safehold.engines.childenv`: its environment is the allow-list
plus the connection's PG* settings (:meth:`PgTarget.tool_env`), and a password reaches it as a
0600 in-memory passfile (``PGPASSFILE=/dev/fd/N``) that only it inherits. A target without a
password keeps the user's ``PGPASSFILE`` / ``~/.pgpass``.

Every tool's stderr goes to an anonymous temporary file (a pipe nobody reads would fill up and
stall the tool); on failure its tail becomes a classified error. A :class:`ProcessSet` remembers
what it started, so one failure stops the rest instead of leaving them to run.

Streamed pipes are made wide. pg_dump writes its archive and pg_restore reads it through stdio,
and glibc sizes a pipe's stdio buffer to a page: one 4 KiB system call per page on each side and,
behind a 64 KiB pipe, a wake-up of the other side every few pages, for every byte of the
database. So a streamed tool runs under coreutils' ``stdbuf`` with a 1 MiB buffer on the streamed
side (where ``stdbuf`` is installed; it only sets the buffer and execs the tool, same process),
and the pipe holds 1 MiB. Measured on a 1.3 GB pgbench-like database: the backup's and the
restore's system CPU fell by a third, their wall time by 5-6% (commit message).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

from safehold.engines import childenv
from safehold.engines.base import EngineError
from safehold.engines.postgres.conn import PgTarget, check_passfile_password, classify

# reads of the pipeline's chunk size (4 MiB): such a block becomes its chunk without a copy
# (pipeline.stream.rechunk); BufferedReader.read(n) fills one bytes object from the pipe
BLOCK = 4 << 20
# What a streamed tool's stdio buffer holds (stdbuf's size syntax); its pipe holds
# childenv.PIPE_SIZE.
STREAM_BUFFER = "1M"
# Besides childenv's allow-list: the user's own passfile (used only when no password is given)
# and Kerberos settings for GSSAPI logins. Every other PG* variable is dropped.
TOOL_INHERITS = ("PGPASSFILE", "KRB5CCNAME", "KRB5_CONFIG")


def passfile(password: str) -> bytes:
    """A libpq passfile whose one line matches any connection of the tool it is given to."""
    check_passfile_password(password)
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n".encode()


def buffered(argv: Sequence[str], *, stdin: bool, stdout: bool) -> list[str]:
    """``argv`` run under ``stdbuf`` with a :data:`STREAM_BUFFER` stdio buffer on each streamed
    side; ``argv`` itself where there is no streamed side or no ``stdbuf``."""
    sides = [*(["-i", STREAM_BUFFER] if stdin else []), *(["-o", STREAM_BUFFER] if stdout else [])]
    stdbuf = shutil.which("stdbuf") if sides else None
    return [stdbuf, *sides, *argv] if stdbuf else list(argv)


class Tool:
    """One running pg_dump / pg_restore / psql."""

    def __init__(self, argv: Sequence[str], target: PgTarget, doing: str, *,
                 stdin: bool = False, stdout: bool = False,
                 tolerate: Callable[[str], bool] | None = None) -> None:
        self.argv, self.target, self.doing = list(argv), target, doing
        # Whether the stderr of an exit code 1 still means success (:meth:`succeeded`); its
        # messages are then in English, which it may read.
        self.tolerate = tolerate
        self._verdict: bool | None = None  # succeeded()'s, once the tool has ended
        self._verdict_lock = threading.Lock()  # the feeder's drain and the caller both ask
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        env = target.tool_env()
        if tolerate is not None:
            env["LC_MESSAGES"] = env["LC_ALL"] = "C"
        secrets: list[childenv.SecretFile] = []
        if target.password is not None:
            secrets.append(childenv.SecretFile(passfile(target.password), name="pgpass"))
            env["PGPASSFILE"] = secrets[0].path
        try:
            self.proc = childenv.start(
                buffered(self.argv, stdin=stdin, stdout=stdout), env=env,
                inherit=TOOL_INHERITS, secrets=secrets,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=self._stderr, start_new_session=True)
        except BaseException:
            self._stderr.close()
            raise
        finally:
            for secret in secrets:  # the tool holds its own descriptor now
                secret.close()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                childenv.widen(stream.fileno())

    def stdout_blocks(self) -> Iterator[bytes]:
        """The tool's output; raises (inside the consumer) if the tool fails, so a truncated
        stream is never taken for a complete one."""
        assert self.proc.stdout is not None
        read = self.proc.stdout.read
        while block := read(BLOCK):
            yield block
        self.wait()

    def succeeded(self) -> bool:
        """Wait for the tool; whether it succeeded (exit 0, or 1 with only the errors
        ``tolerate`` accepts). Decided once: threads asking together read stderr once."""
        rc = self.proc.wait()
        with self._verdict_lock:
            if self._verdict is None:
                if rc != 1 or self.tolerate is None:
                    self._verdict = rc == 0
                else:
                    self._stderr.seek(0)
                    self._verdict = self.tolerate(
                        self._stderr.read().decode("utf-8", "replace"))
            return self._verdict

    def wait(self) -> None:
        if not self.succeeded():
            raise self.error(self.proc.returncode)

    def error(self, rc: int) -> EngineError:
        with self._verdict_lock:
            self._stderr.seek(0)
            text = self._stderr.read()[-4000:].decode("utf-8", "replace").strip()
        if rc < 0:
            text = f"{self.argv[0].rsplit('/', 1)[-1]} was killed by signal {-rc}. {text}"
        return classify(text or f"exit code {rc}", self.target, doing=self.doing)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def close(self) -> None:
        self.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()


def feed(stdin: IO[bytes], blocks: Iterable[bytes], errors: list[BaseException],
         kill: Callable[[], None], *, drain: Callable[[], bool] | None = None) -> None:
    """Write ``blocks`` to a tool's stdin and close it.

    Verify before apply: a failure of ``blocks`` (a damaged frame, a hash that does not match
    the manifest, a storage error) first KILLS the tool, and only then closes its stdin, so
    the tool never sees a clean end of input: ``psql --single-transaction`` commits at EOF, and
    a pg_restore would finish a truncated archive. The failure is kept in ``errors`` for the
    caller to raise. A tool that stops reading early (``pg_restore -l`` reads only the
    header; ``pg_restore -L`` once it has what it was asked for) ends the writing quietly;
    then, if ``drain()`` says so (the tool ended successfully: its output counts), the rest of
    ``blocks`` is still read, unwritten, so the object's final checks (its SHA-256 and sizes
    against the manifest) run before anything is committed. A tool that failed or was stopped
    is not waited for with a download.
    """
    try:
        try:
            for block in blocks:
                stdin.write(block)
        except BrokenPipeError:
            if drain is not None and drain():
                for _ in blocks:
                    pass
    except BaseException as exc:  # re-raised in the caller's thread by Feeder.join
        errors.append(exc)
        kill()
    finally:
        with contextlib.suppress(BrokenPipeError):
            stdin.close()


class Feeder:
    """A thread streaming ``blocks`` into ``tool``'s stdin (see :func:`feed`)."""

    def __init__(self, tool: Tool, blocks: Iterable[bytes], *, drain: bool = True) -> None:
        assert tool.proc.stdin is not None
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(
            target=feed, args=(tool.proc.stdin, blocks, self.errors, tool.kill),
            kwargs={"drain": tool.succeeded if drain else None}, name=f"safehold-feed-{tool.doing}",
            daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join()
        if self.errors:
            raise self.errors[0]


class ProcessSet:
    """The tools of one operation; ``stop()`` kills those still running (after a failure)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tools: list[Tool] = []
        self.stopped = False

    def start(self, argv: Sequence[str], target: PgTarget, doing: str, **kw: Any) -> Tool:
        with self._lock:
            if self.stopped:
                raise EngineError(f"not starting {doing}: another step already failed")
            tool = Tool(argv, target, doing, **kw)
            self._tools.append(tool)
            return tool

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            for tool in self._tools:
                tool.kill()

    def close(self) -> None:
        with self._lock:
            tools, self._tools = self._tools, []
        for tool in tools:
            tool.close()
