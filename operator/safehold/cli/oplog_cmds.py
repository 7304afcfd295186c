"""`safehold oplog stream`: archive a MongoDB database's oplog entries, batch by batch, for
point-in-time restore (engines/mongodb/oplog_stream.py follows, pipeline/logarchive.py stores)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click

from safehold.api.errors import UsageError
from safehold.cli import common
from safehold.cli.config import resolve_repository
from safehold.pipeline.logarchive import LogArchive

log = logging.getLogger("safehold.oplog")


@click.group("oplog")
def oplog_group() -> None:
    """MongoDB oplog capture for point-in-time restore."""


@oplog_group.command()
@click.option("--target", "-t", required=True, help="Database URL or config name (MongoDB).")
@common.repo_option
@click.option("--name", help="Target name in the repository (default: config name).")
@click.option("--poll", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between reads of the oplog; a read that finds nothing new archives"
              " what was gathered.")
@click.option("--max-entries", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Oplog entries per segment at most (a busy server's batches are cut at a"
              " change of second).")
@click.option("--no-encryption", is_flag=True, envvar="SAFEHOLD_NO_ENCRYPTION",
              help="Archive unencrypted (the target's first backup or segment records the"
              " choice).")
@click.option("--namespace", envvar="SAFEHOLD_NAMESPACE", default=None,
              help="Kubernetes namespace of the target (the operator sets it).")
@click.option("--once", is_flag=True, hidden=True,
              help="Archive what the oplog holds now, then stop (tests).")
@common.connection_options
@common.key_file_option
@click.pass_context
def stream(ctx: click.Context, /, target: str, repo: str, name: str | None, poll: float,
           max_entries: int, no_encryption: bool, namespace: str | None, once: bool,
           key_files: tuple[Path, ...], **conn: Any) -> None:
    """Follow the server's oplog and archive the database's entries in the repository.

    Runs until stopped (SIGTERM/Ctrl-C stop it cleanly: what was read is archived first).
    After a restart it continues after the newest archived entry, so nothing the oplog still
    holds is missed; entries the oplog overwrote meanwhile (it wrapped) are reported as a gap.
    """
    from safehold.engines.mongodb import oplog, oplog_stream
    from safehold.engines.mongodb.conn import guard
    from safehold.engines.mongodb.engine import MongoEngine
    from safehold.repository.logarchive import SegmentId

    target_name, engine = common.open_target(ctx, target, **conn)
    if not isinstance(engine, MongoEngine):
        raise UsageError(f"`safehold oplog stream` archives MongoDB oplogs; {target_name} is a"
                         f" {engine.name} target")
    repo_cfg = resolve_repository(common.config(ctx), repo)
    repository = common.open_repo(ctx, repo, create=True)
    keks = common.keks_for(ctx, repository, repo, key_files, create_kdf=True)
    archive = LogArchive(repository, name or target_name, keks[1:],
                         kek=keks[0] if keks else None,
                         no_encryption=no_encryption or repo_cfg.encryption == "none",
                         namespace=namespace or None)
    database = engine.target.database
    with engine.connect() as client, guard(engine.target):
        set_name = oplog.replica_set(client)
        archived = [s.end for s in archive.list(kind="oplog", stream=set_name)]
        backups = [m.end_position for m in repository.scan(archive.target)[0]
                   if m.end_position and m.end_position.get("set") == set_name]
        start = oplog_stream.resume_point(archived, backups, client)

        def put(segment: oplog_stream.Segment) -> None:
            archive.put(SegmentId(archive.target, "oplog", set_name, segment.name),
                        [b"".join(segment.entries)],
                        start=oplog.position(segment.start, set_name),
                        end=oplog.position(segment.end, set_name),
                        first_time=oplog.ts_time(segment.first),
                        last_time=oplog.ts_time(segment.end),
                        meta={"set": set_name, "database": database,
                              "entries": len(segment.entries)})

        follower = oplog_stream.Follower(client, database, start, put,
                                         max_entries=max_entries)
        log.info("archiving the oplog of %s (replica set %s, database %s) after %s into %s",
                 archive.target, set_name, database, oplog.ts_text(start), repository.url)
        try:
            while True:
                read = follower.poll()
                if once and not read:
                    return
                if not read:
                    time.sleep(poll)
        finally:
            follower.flush()  # SIGTERM or an error: what was read is complete


COMMANDS = [oplog_group]
