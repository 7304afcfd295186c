"""Physical PostgreSQL backups: base backups streamed into the repository.

``pg_basebackup -D - -Ft -X fetch`` writes one tar (the data directory, the WAL the backup needs
under pg_wal/, and ``backup_manifest`` last) to stdout; it goes through the pipeline like any
object (``base.tar``). The manifest is also kept as an object of its own (``backup_manifest``):
its WAL range gives the backup's start/end LSN and timeline, and on PostgreSQL 17+ it is what a
block-level incremental or differential is taken against (``--incremental``).

Client tools must have the server's major (:func:`physical_tools`): the restored data directory
is started by that major's server, and pg_combinebackup only combines backups of its own major.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2.extensions import connection as Connection

from safehold.api.manifest import Manifest
from safehold.engines.base import (
    BackupOutcome,
    BackupRequest,
    BackupSink,
    ChainReader,
    EngineError,
    PermissionDenied,
    UnsupportedError,
    VersionUnsupported,
)
from safehold.engines.postgres.conn import PgTarget, connect, from_psycopg
from safehold.engines.postgres.procs import Tool
from safehold.engines.postgres.tools import ClientTools, candidate_dirs, tool_version

log = logging.getLogger("safehold.postgres.physical")
BASE_OBJECT = "base.tar"
MANIFEST_OBJECT = "backup_manifest"
INCREMENTAL_MAJOR = 17  # pg_basebackup --incremental, pg_combinebackup, summarize_wal
BACKUP_TOOLS = ("pg_basebackup",)
SLOT_KEEP_PROBLEM = (
    "max_slot_wal_keep_size is unlimited (-1): a stalled WAL streamer's slot would keep WAL"
    " until the disk fills; bound it (ALTER SYSTEM SET max_slot_wal_keep_size = '10GB';"
    " SELECT pg_reload_conf()), sized for the longest streamer outage to survive")
RESTORE_TOOLS = ("pg_verifybackup", "pg_waldump")


def physical_tools(major: int, needs: tuple[str, ...]) -> ClientTools:
    """The bin directory of PostgreSQL ``major`` holding ``needs``; VersionUnsupported says
    what to install."""
    found = [ClientTools(d, v) for d in candidate_dirs() if (v := tool_version(d))]
    for tools in found:
        if tools.major == major and all((tools.bindir / t).exists() for t in needs):
            return tools
    seen = ", ".join(f"{t.version} in {t.bindir}" for t in found) or "none"
    raise VersionUnsupported(
        f"physical backups of PostgreSQL {major} need {', '.join(needs)} of major {major}"
        f" (seen: {seen}); install postgresql-{major} (or its client package) or set"
        " SAFEHOLD_PG_BINDIR to that major's bin directory")


def server_facts(conn: Connection) -> dict[str, Any]:
    """Major, system identifier, timeline and the settings physical backups depend on."""
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version_num')::int,"
                    " (SELECT system_identifier::text FROM pg_control_system()),"
                    " (SELECT timeline_id FROM pg_control_checkpoint()),"
                    " current_setting('wal_level'),"
                    " (SELECT rolsuper OR rolreplication FROM pg_roles"
                    "  WHERE rolname = current_user),"
                    " current_setting('max_slot_wal_keep_size')")
        num, sysid, timeline, wal_level, replication, keep = cur.fetchone()
        summarize = None
        if num // 10000 >= INCREMENTAL_MAJOR:
            cur.execute("SELECT current_setting('summarize_wal')")
            summarize = cur.fetchone()[0] == "on"
    return {"major": num // 10000, "version": f"{num // 10000}.{num % 10000}",
            "system_identifier": sysid, "timeline": int(timeline), "wal_level": wal_level,
            "replication": bool(replication), "summarize_wal": summarize,
            "max_slot_wal_keep_size": keep}


def physical_problems(facts: dict[str, Any], user: str) -> list[str]:
    """What keeps physical backups (and their block-level incrementals) from working."""
    problems = []
    if not facts["replication"]:
        problems.append(f"role {user} lacks REPLICATION (physical backups stream the server's"
                        f" files): ALTER ROLE {user} REPLICATION, and allow it a 'replication'"
                        " line in pg_hba.conf")
    if facts["wal_level"] == "minimal":
        problems.append("wal_level is minimal: set wal_level = replica (restart) for physical"
                        " backups")
    if facts["max_slot_wal_keep_size"] == "-1":
        problems.append(SLOT_KEEP_PROBLEM)
    if facts["summarize_wal"] is False:
        problems.append("summarize_wal is off: block-level incremental and differential"
                        " backups need it (ALTER SYSTEM SET summarize_wal = on;"
                        " SELECT pg_reload_conf()); then take a new physical full")
    return problems


def check_chainable(request: BackupRequest, facts: dict[str, Any]) -> Manifest | None:
    """The backup an incremental/differential is taken against, refusing what cannot chain."""
    if request.type == "full":
        return None
    major = facts["major"]
    if major < INCREMENTAL_MAJOR:
        raise UnsupportedError(
            f"PostgreSQL {major} has no block-level {request.type} backups (pg_basebackup"
            f" --incremental needs PostgreSQL {INCREMENTAL_MAJOR}+); take a physical full"
            " (safehold backup --method physical), or upgrade the server")
    if not facts["summarize_wal"]:
        raise UnsupportedError(physical_problems(facts, "")[-1])
    parent = request.chain[-1] if request.type == "incremental" else request.chain[0]
    meta = parent.engine_meta
    if meta.get("summarize_wal") is False:
        raise UnsupportedError(
            f"the parent backup {parent.backup_id} was taken while summarize_wal was off, so no"
            f" WAL summaries reach back to it: take a new physical full (safehold backup"
            f" --method physical), then {request.type}s chain onto it")
    if meta.get("system_identifier") != facts["system_identifier"]:
        raise UnsupportedError(
            f"the parent backup {parent.backup_id} is of another cluster (system identifier"
            f" {meta.get('system_identifier')}, the server's is {facts['system_identifier']}):"
            " take a physical full (safehold backup --method physical)")
    if int(meta.get("pg_major", 0)) != major:
        raise UnsupportedError(
            f"the parent backup {parent.backup_id} is of PostgreSQL {meta.get('pg_major')}, the"
            f" server runs {major}: take a physical full (safehold backup --method physical)")
    return parent


class TarTap:
    """Passes a tar stream through unchanged, keeping the bytes of one top-level member."""

    def __init__(self, member: str) -> None:
        self.member = member
        self.captured: bytes | None = None

    def __call__(self, blocks: Iterable[bytes]) -> Iterator[bytes]:
        buf = bytearray()
        skip = 0  # bytes of the current member (and its padding) not yet passed
        keep: bytearray | None = None
        keep_left = 0
        for block in blocks:
            yield block
            buf += block
            while True:
                if skip:
                    n = min(skip, len(buf))
                    if keep is not None and keep_left:
                        take = min(keep_left, n)
                        keep += buf[:take]
                        keep_left -= take
                        if not keep_left:
                            self.captured = bytes(keep)
                    del buf[:n]
                    skip -= n
                    if skip:
                        break
                if len(buf) < 512:
                    break
                header = bytes(buf[:512])
                del buf[:512]
                if header == b"\0" * 512:
                    continue
                name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
                size = _tar_size(header[124:136])
                skip = (size + 511) // 512 * 512
                keep, keep_left = (bytearray(), size) if name == self.member else (None, 0)
                if keep is not None and size == 0:
                    self.captured = b""


def _tar_size(field: bytes) -> int:
    if field[0] & 0x80:  # base-256, for members of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def wal_range(manifest: dict[str, Any]) -> tuple[int, str, str]:
    """(timeline, start LSN, end LSN) of a backup_manifest."""
    ranges = manifest.get("WAL-Ranges") or []
    if not ranges:
        raise EngineError("pg_basebackup wrote a backup_manifest without WAL-Ranges")
    first, last = ranges[0], ranges[-1]
    return int(last["Timeline"]), str(first["Start-LSN"]), str(last["End-LSN"])


def physical_backup(target: PgTarget, request: BackupRequest, sink: BackupSink,
                    chain: ChainReader, *, attempts: int = 3) -> BackupOutcome:
    conn = connect(target, attempts=attempts)
    try:
        facts = server_facts(conn)
    except psycopg2.Error as exc:
        raise from_psycopg(exc, target, "reading the server's identity") from None
    finally:
        conn.close()
    if not facts["replication"]:
        raise PermissionDenied(physical_problems(facts, target.user)[0])
    parent = check_chainable(request, facts)
    tools = physical_tools(facts["major"], BACKUP_TOOLS)
    argv = [tools.path("pg_basebackup"), "-D", "-", "-Ft", "-X", "fetch", "-c", "fast",
            "--no-password"]
    with tempfile.TemporaryDirectory(prefix="safehold-pgbb-") as scratch:
        if parent is not None:
            parent_manifest = Path(scratch) / MANIFEST_OBJECT
            parent_manifest.write_bytes(b"".join(chain.open(parent, MANIFEST_OBJECT)))
            argv.append(f"--incremental={parent_manifest}")
        log.info("streaming a %s base backup of %s (PostgreSQL %s)", request.type,
                 target.describe(), facts["version"])
        tap = TarTap(MANIFEST_OBJECT)
        tool = Tool(argv, target, "taking a base backup", stdout=True)
        try:
            record = sink.put(BASE_OBJECT, tap(tool.stdout_blocks()),
                              meta={"format": "tar", "tool": "pg_basebackup"})
        finally:
            tool.close()
    if tap.captured is None:
        raise EngineError("pg_basebackup's tar held no backup_manifest; is the server's"
                          " PostgreSQL 13 or newer and the stream complete?")
    manifest = json.loads(tap.captured)
    timeline, start_lsn, end_lsn = wal_range(manifest)
    sink.put(MANIFEST_OBJECT, [tap.captured], meta={"format": "pg-backup-manifest"})
    return BackupOutcome(
        server_version=facts["version"],
        start_position={"lsn": start_lsn, "timeline": str(timeline)},
        # consistent from end_lsn on, which the server wrote before pg_basebackup ended: a
        # time now is at or after it (the recoverable window starts there)
        end_position={"lsn": end_lsn, "timeline": str(timeline),
                      "time": datetime.now(UTC).isoformat()},
        engine_meta={"method": "physical", "format": "pg_basebackup-tar",
                     "system_identifier": facts["system_identifier"], "timeline": timeline,
                     "pg_major": facts["major"], "start_lsn": start_lsn, "end_lsn": end_lsn,
                     "raw_data_bytes": record.raw_size,
                     "summarize_wal": facts["summarize_wal"],
                     "incremental_of": parent.backup_id if parent else None},
        tools={"pg_basebackup": tools.version},
    )
