"""Process plumbing shared by the server fixtures: free ports, readiness, stop-by-PID, log tails."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import pytest

if TYPE_CHECKING:  # POSIX only: imported where used, so Windows can load the plugins
    import pwd

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Unprivileged account for servers that refuse to run as root (initdb, pg_ctl).
TEST_USER = "safehold-test"


class ServerError(RuntimeError):
    """A test server could not be started; the message carries the tail of its log."""


def unavailable(what: str, why: str) -> None:
    """A server or tool the tests need is missing: fail in CI (never skip), skip elsewhere."""
    msg = f"{what} is unavailable: {why}\n(run `make infra` to install the test infrastructure)"
    if IN_CI:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def ensure_test_user() -> pwd.struct_passwd:
    """The unprivileged account servers run as when we are root (created on first use; under a
    lock, as two test workers may both be first)."""
    import fcntl
    import pwd

    with open("/run/lock/safehold-test-user.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return pwd.getpwnam(TEST_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", TEST_USER], check=True)
            return pwd.getpwnam(TEST_USER)


def as_test_user(argv: Sequence[str]) -> list[str]:
    """Prefix argv so it runs as the unprivileged test user when we are root."""
    if os.geteuid() != 0:
        return list(argv)
    ensure_test_user()
    return ["runuser", "-u", TEST_USER, "--", *argv]


def chown_test_user(path: Path) -> None:
    if os.geteuid() == 0:
        user = ensure_test_user()
        for p in [path, *path.rglob("*")]:
            os.chown(p, user.pw_uid, user.pw_gid)


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float = 60.0,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``ready`` until it is true; raise ServerError with the log tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"{what} exited with code {proc.returncode}\n{tail(log)}")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(interval)
    raise ServerError(f"{what} not ready after {timeout:.0f}s\n{tail(log)}")


def stop_pid(pid: int, *, timeout: float = 15.0, group: bool = True) -> None:
    """SIGTERM then SIGKILL a process (and its process group), waiting for it to go."""

    def alive() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # a zombie child counts as gone once reaped
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return False
        return True

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive():
        send(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)


class Server:
    """A background process with its own log file and process group, stopped by PID."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._logf = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """CPU time the server's processes have used so far: each live descendant's own time
        plus the time of the children it has reaped (an exited PostgreSQL backend's CPU moves
        to its postmaster), so a difference of two readings is the server's work in between.
        By descent, not process group: PostgreSQL's children each start a session of their
        own."""
        parents: dict[int, int] = {}
        ticks: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:  # the process ended meanwhile
                continue
            fields = text[text.rindex(")") + 2:].split()
            pid = int(stat.parent.name)
            parents[pid] = int(fields[1])
            ticks[pid] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        total = 0
        for pid, own in ticks.items():
            up = pid
            while up > 1 and up != self.proc.pid:
                up = parents.get(up, 0)
            if up == self.proc.pid:
                total += own
        return total / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        try:
            wait_until(ready, what=self.name, timeout=timeout, proc=self.proc, log=self.log)
        except ServerError:
            self.stop()
            raise

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            stop_pid(self.proc.pid, timeout=timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1)
        self._logf.close()


def which(name: str, *extra_dirs: Path) -> str | None:
    for d in extra_dirs:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which(name)


class _Startable(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=_Startable)


def serve(server: S, what: str) -> Iterator[S]:
    """Body of a fixture: start ``server``, yield it, stop it; fail (CI) or skip when it can't.

    ``stop`` is called on a failed start too (servers' stops are idempotent), and a failing
    command's stderr (initdb, mariadb-install-db) joins the message.
    """
    error = None
    try:
        server.start()
    except (ServerError, OSError, subprocess.SubprocessError) as exc:
        stderr = getattr(exc, "stderr", None)
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors="replace")
        error = f"{exc}\n{stderr}" if stderr else str(exc)
    if error is not None:  # outside the except: no chained traceback around the message
        server.stop()
        unavailable(what, error)
    try:
        yield server
    finally:
        server.stop()
