"""`safehold oplog stream`: archive a MongoDB database's oplog entries, batch by batch, for
point-in-time restore (engines/mongodb/oplog_stream.py follows, pipeline/logarchive.py stores)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from safehold.api.errors import UsageError
from safehold.api.task import StreamTask
from safehold.cli import common
from safehold.cli.config import resolve_repository
from safehold.codecs.crypto import Kek
from safehold.pipeline.logarchive import LogArchive
from safehold.pipeline.streamer_status import WINDOW_EVERY, StatusBoard
from safehold.repository.repo import Repository

if TYPE_CHECKING:
    from safehold.engines.mongodb.engine import MongoEngine

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
    from safehold.engines.mongodb.engine import MongoEngine

    target_name, engine = common.open_target(ctx, target, **conn)
    if not isinstance(engine, MongoEngine):
        raise UsageError(f"`safehold oplog stream` archives MongoDB oplogs; {target_name} is a"
                         f" {engine.name} target")
    repo_cfg = resolve_repository(common.config(ctx), repo)
    repository = common.open_repo(ctx, repo, create=True)
    keks = common.keks_for(ctx, repository, repo, key_files, create_kdf=True)
    archive_oplog(StatusBoard(engine.name, name or target_name), engine, repository, keks,
                  target=name or target_name,
                  no_encryption=no_encryption or repo_cfg.encryption == "none",
                  namespace=namespace, poll=poll, max_entries=max_entries, once=once)


def stream_task(task: StreamTask, board: StatusBoard) -> None:
    """The operator's streamer Deployment (`safehold run-task`, kind stream): the same loop,
    opened from the task's references."""
    from safehold.engines.mongodb.engine import MongoEngine
    from safehold.pipeline.tasks import load_keys, open_database, open_repository

    engine = open_database(task.database)
    if not isinstance(engine, MongoEngine):
        raise UsageError(f"an oplog streamer needs a MongoDB target; {task.target} is a"
                         f" {engine.name} target")
    repository = open_repository(task.repository)
    repository.initialize()
    archive_oplog(board, engine, repository, load_keys(task.encryption), target=task.target,
                  no_encryption=task.encryption.mode == "none", namespace=task.namespace,
                  poll=task.poll, max_entries=10_000, once=False)


def archive_oplog(board: StatusBoard, engine: MongoEngine, repository: Repository,
                  keks: Sequence[Kek], *, target: str, no_encryption: bool,
                  namespace: str | None, poll: float, max_entries: int, once: bool) -> None:
    """Follow and archive until stopped (or, with ``once``, what the oplog holds now); the
    position, each archived segment and the recoverable window go on ``board``."""
    from safehold.engines.mongodb import oplog, oplog_stream
    from safehold.engines.mongodb.conn import guard
    from safehold.pipeline.pitr import window_bounds
    from safehold.repository.logarchive import SegmentId

    archive = LogArchive(repository, target, keks[1:], kek=keks[0] if keks else None,
                         no_encryption=no_encryption, namespace=namespace or None)
    board.identify(engine.name, archive.target)
    board.window_from(functools.partial(window_bounds, repository, archive.target))
    board.refresh_window()
    database = engine.target.database
    with engine.connect() as client, guard(engine.target):
        set_name = oplog.replica_set(client)
        records = archive.list(kind="oplog", stream=set_name)
        archived = [s.end for s in records]
        backups = [m.end_position for m in repository.scan(archive.target)[0]
                   if m.end_position and m.end_position.get("set") == set_name]
        start = oplog_stream.resume_point(archived, backups, client)
        if records:
            newest = max(records, key=lambda r: oplog.parse_ts(r.end["oplog_ts"]))
            board.resumed(newest.name, newest.end, newest.last_time)

        def put(segment: oplog_stream.Segment) -> None:
            end = oplog.position(segment.end, set_name)
            archive.put(SegmentId(archive.target, "oplog", set_name, segment.name),
                        [b"".join(segment.entries)],
                        start=oplog.position(segment.start, set_name), end=end,
                        first_time=oplog.ts_time(segment.first),
                        last_time=oplog.ts_time(segment.end),
                        meta={"set": set_name, "database": database,
                              "entries": len(segment.entries)})
            board.archived(segment.name, end, oplog.ts_time(segment.end))
            board.refresh_window()

        follower = oplog_stream.Follower(client, database, start, put,
                                         max_entries=max_entries)
        log.info("archiving the oplog of %s (replica set %s, database %s) after %s into %s",
                 archive.target, set_name, database, oplog.ts_text(start), repository.url)
        refreshed = time.monotonic()
        try:
            while True:
                read = follower.poll()
                board.pulled(oplog.position(follower.last, set_name))
                board.lag(None, not read)  # an empty look: nothing newer than the archive
                board.healthy()
                if once and not read:
                    return
                if time.monotonic() - refreshed >= WINDOW_EVERY:  # a backup moved it
                    board.refresh_window()
                    refreshed = time.monotonic()
                if not read:
                    time.sleep(poll)
        finally:
            follower.flush()  # SIGTERM or an error: what was read is complete


COMMANDS = [oplog_group]
