"""Every process the engines start, with only the environment and secrets it needs.

A child process never inherits Safehold's environment: that holds the repository key
(``SAFEHOLD_KEY``, ``SAFEHOLD_KEY_FILE``), the passphrase, the database password and the
storage SDKs' credentials (``AWS_*``, ``AZURE_*``, ``GOOGLE_APPLICATION_CREDENTIALS``...), and
anything in a process's environment can be read by every process of its user
(``/proc/PID/environ``) and ends up in core dumps and crash reports. A child gets
:data:`ALLOWED` (locale, time zone, search path, home and temp directories), what its caller
adds explicitly, and nothing else.

A secret a child does need (a database password) goes neither into its environment nor its
arguments (``ps`` shows those to every user) but into a :class:`SecretFile`: an anonymous
in-memory file (``memfd``) of mode 0600 that the child inherits as a file descriptor and opens
by the path ``/dev/fd/N`` (``PGPASSFILE=/dev/fd/N``, ``--defaults-file=/dev/fd/N``). It never
exists in a directory, so nothing is left behind even when Safehold or the child is killed,
and Safehold closes its own descriptor as soon as the child has started. Where ``memfd`` is
missing (macOS) it is a 0600 file in a private 0700 directory, unlinked before any child runs.

:func:`start` and :func:`run` are the only ways the engines start processes (a unit test
checks that no other engine module calls :mod:`subprocess` or ``os.exec*``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

ALLOWED = frozenset({"PATH", "HOME", "TMPDIR", "TZ", "LANG", "LANGUAGE", "USER", "LOGNAME",
                     "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR"})
ALLOWED_PREFIXES = ("LC_",)


def environment(extra: Mapping[str, str] | None = None, *, inherit: Iterable[str] = (),
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child's environment: the :data:`ALLOWED` variables of ``base`` (``os.environ``), the
    ones named in ``inherit`` (a tool's own non-secret settings), then ``extra``."""
    source = os.environ if base is None else base
    keep = ALLOWED | set(inherit)
    env = {k: v for k, v in source.items() if k in keep or k.startswith(ALLOWED_PREFIXES)}
    env.update(extra or {})
    return env


class SecretFile:
    """``content`` in an unnamed 0600 file that a child reads by :attr:`path`.

    Use it as a context manager around :func:`start` (pass it in ``secrets``): the child keeps
    its inherited descriptor open for as long as it runs, so ours can be closed right after.
    """

    def __init__(self, content: bytes, *, name: str = "safehold-secret") -> None:
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create(name, os.MFD_CLOEXEC)
            os.fchmod(fd, 0o600)
        else:  # pragma: no cover - macOS and other systems without memfd
            directory = tempfile.mkdtemp(prefix="safehold-secret-")  # mode 0700
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.unlink(path)
            os.rmdir(directory)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            os.lseek(fd, 0, os.SEEK_SET)  # where /dev/fd/N shares the offset (BSD, macOS)
        except BaseException:
            os.close(fd)
            raise
        self.fd: int | None = fd

    @property
    def path(self) -> str:
        """The name a child opens the file by (valid in a child it was passed to)."""
        if self.fd is None:
            raise ValueError("the secret file is closed")
        return f"/dev/fd/{self.fd}"

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> SecretFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _fds(secrets: Sequence[SecretFile]) -> tuple[int, ...]:
    fds = tuple(s.fd for s in secrets if s.fd is not None)
    if len(fds) != len(secrets):
        raise ValueError("a secret file passed to a child process is already closed")
    return fds


def start(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
          inherit: Iterable[str] = (), secrets: Sequence[SecretFile] = (),
          **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` with :func:`environment` ``(env, inherit=inherit)``, inheriting only
    the descriptors of ``secrets`` (besides stdin/stdout/stderr)."""
    return subprocess.Popen(list(argv), env=environment(env, inherit=inherit),
                            pass_fds=_fds(secrets), close_fds=True, **popen)


# The room a streamed child's pipe is given (the kernel's default is 64 KiB).
PIPE_SIZE = 1 << 20


def widen(fd: int) -> None:
    """Give pipe ``fd`` :data:`PIPE_SIZE` of room where the kernel allows it (Linux, within the
    user's pipe limit), so a child streaming through it runs ahead of its reader or writer;
    otherwise it keeps its 64 KiB."""
    if sys.platform == "linux":
        import fcntl

        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
        inherit: Iterable[str] = (), secrets: Sequence[SecretFile] = (),
        **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """:func:`subprocess.run` with the same environment and descriptor rules as :func:`start`."""
    return subprocess.run(list(argv), env=environment(env, inherit=inherit),
                          pass_fds=_fds(secrets), close_fds=True, **kwargs)
