"""Restoring physical PostgreSQL backups into a new data directory.

Nothing is written into the destination until the whole chain is extracted, combined
(pg_combinebackup, PostgreSQL 17+) and verified (pg_verifybackup, WAL included): the work
happens in a staging directory beside the destination, renamed into place at the end and
removed on any failure. The destination must not exist or be empty.

Chains are checked from their manifests before anything is read: every backup physical, of one
cluster (system identifier), one major and one timeline, each naming the parent before it.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from safehold.api.errors import Conflict, UsageError
from safehold.api.manifest import Manifest, method_of
from safehold.engines import childenv
from safehold.engines.base import ChainReader, EngineError
from safehold.engines.postgres.physical import (
    BASE_OBJECT,
    INCREMENTAL_MAJOR,
    RESTORE_TOOLS,
    physical_tools,
)
from safehold.engines.recovery import BrokenChain

log = logging.getLogger("safehold.postgres.physical")


def chain_problems(chain: Sequence[Manifest]) -> list[str]:
    """Everything that keeps ``chain`` (root first) from being restored, from manifests only."""
    problems: list[str] = []
    if not chain:
        return ["the chain is empty"]
    root = chain[0]
    if root.type != "full":
        problems.append(f"the chain starts with {root.backup_id}, a {root.type}, not a full")
    for m in chain:
        if m.engine != "postgresql" or method_of(m) != "physical":
            problems.append(f"{m.backup_id} is a {method_of(m)} {m.engine} backup, not a"
                            " physical PostgreSQL one")
    for prev, m in itertools.pairwise(chain):
        wanted = root.backup_id if m.type == "differential" else prev.backup_id
        if m.parent_id != wanted:
            problems.append(f"{m.backup_id} names parent {m.parent_id}, but the backup before it"
                            f" is {prev.backup_id}: the parent is missing")
        if m.chain_id != root.backup_id:
            problems.append(f"{m.backup_id} belongs to chain {m.chain_id}, not {root.backup_id}")
        for key, what in (("system_identifier", "system identifier"), ("pg_major", "major"),
                          ("timeline", "timeline")):
            if m.engine_meta.get(key) != root.engine_meta.get(key):
                problems.append(f"{m.backup_id} has {what} {m.engine_meta.get(key)}, its full"
                                f" {root.backup_id} has {root.engine_meta.get(key)}")
    major = int(root.engine_meta.get("pg_major", 0))
    if len(chain) > 1 and major < INCREMENTAL_MAJOR:
        problems.append(f"a chain of PostgreSQL {major} backups cannot be combined (needs"
                        f" pg_combinebackup, PostgreSQL {INCREMENTAL_MAJOR}+)")
    return problems


def check_destination(data_dir: Path) -> None:
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise Conflict(f"{data_dir} is not an empty directory: a physical restore writes a new"
                       " data directory; give a path that does not exist yet or is empty",
                       hint="choose a new --data-dir")
    if not data_dir.parent.is_dir():
        raise UsageError(f"the parent of --data-dir {data_dir} does not exist: create it first")


class _Blocks(io.RawIOBase):
    """A read-only file over an iterator of byte blocks (for tarfile's stream mode)."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks, self._rest = blocks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._rest:
            block = next(self._blocks, None)
            if block is None:
                return 0
            self._rest = block
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def extract(blocks: Iterator[bytes], into: Path) -> None:
    """Untar a base backup; the ``data`` filter refuses absolute paths, links leaving the
    directory and device files, so a hostile archive cannot write outside ``into``."""
    into.mkdir(mode=0o700)
    reader = io.BufferedReader(_Blocks(blocks), buffer_size=1 << 20)
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # Python before 3.11.4 (Debian 12's 3.11.2, the runner image's): no filters
            tar.extractall(into, members=plain_members(tar, into))
    for _ in blocks:  # the object's final checks (size, SHA-256) run at its end
        pass


def plain_members(tar: tarfile.TarFile, into: Path) -> Iterator[tarfile.TarInfo]:
    """The members of a base backup as the ``data`` filter passes them, for Pythons without
    it: regular files and directories inside ``into`` only, without setuid, setgid, sticky or
    group/other write bits. Anything else (an absolute or escaping path, a link, a device) is
    refused: pg_basebackup's base.tar holds none (tablespaces come in their own archives)."""
    root = into.resolve()
    for member in tar:
        where = (root / member.name).resolve()
        if os.path.isabs(member.name) or not where.is_relative_to(root):
            raise EngineError(f"the base backup's archive holds {member.name!r}, outside the"
                              " data directory: refused (a damaged or forged backup)")
        if not (member.isfile() or member.isdir()):
            raise EngineError(f"the base backup's archive holds {member.name!r}, neither a"
                              " file nor a directory: refused (a damaged or forged backup)")
        member.mode &= 0o755
        yield member


def _run(argv: list[str], doing: str) -> None:
    proc = childenv.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise EngineError(f"{doing} failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")


def restore_data_dir(chain: Sequence[Manifest], reader: ChainReader, data_dir: Path) -> Path:
    """Extract, combine and verify ``chain`` into the new data directory ``data_dir``."""
    problems = chain_problems(chain)
    if problems:
        raise BrokenChain("cannot restore this chain: " + "; ".join(problems))
    data_dir = data_dir.absolute()
    check_destination(data_dir)
    major = int(chain[0].engine_meta["pg_major"])
    needs = RESTORE_TOOLS + (("pg_combinebackup",) if len(chain) > 1 else ())
    tools = physical_tools(major, needs)
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.safehold-", dir=data_dir.parent))
    try:
        parts = []
        for i, m in enumerate(chain):
            part = staging / f"{i:03d}-{m.type}"
            log.info("extracting %s backup %s", m.type, m.backup_id)
            extract(iter(reader.open(m, BASE_OBJECT)), part)
            parts.append(part)
        out = parts[0]
        if len(parts) > 1:
            out = staging / "combined"
            log.info("combining %d backups with pg_combinebackup", len(parts))
            _run([tools.path("pg_combinebackup"), "-o", str(out), *map(str, parts)],
                 "pg_combinebackup")
        _run([tools.path("pg_verifybackup"), "-m", str(out / "backup_manifest"), str(out)],
             "pg_verifybackup")
        out.chmod(0o700)
        if data_dir.exists():
            data_dir.rmdir()
        os.rename(out, data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("restored %s into %s (PostgreSQL %d)", chain[-1].backup_id, data_dir, major)
    return data_dir
