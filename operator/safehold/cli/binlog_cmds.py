"""`safehold binlog stream`: archive a MariaDB server's binary log, file by file, for
point-in-time restore (engines/mysql/binlog_stream.py pulls, pipeline/logarchive.py stores)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from safehold.api.errors import UsageError
from safehold.cli import common, streamer_status
from safehold.cli.config import resolve_repository
from safehold.pipeline.logarchive import LogArchive
from safehold.pipeline.pitr import window_bounds
from safehold.pipeline.streamer_status import WINDOW_EVERY, StatusBoard
from safehold.repository.logarchive import SegmentId, readable_segments, segment_ids

if TYPE_CHECKING:
    from collections.abc import Sequence

    from safehold.api.task import StreamTask
    from safehold.codecs.crypto import Kek
    from safehold.engines.base import Engine
    from safehold.engines.mysql.conn import Target
    from safehold.repository.repo import Repository

log = logging.getLogger("safehold.binlog")


@click.group("binlog")
def binlog_group() -> None:
    """MariaDB binary log capture for point-in-time restore."""


@binlog_group.command()
@click.option("--target", "-t", required=True, help="Database URL or config name (MariaDB).")
@common.repo_option
@click.option("--name", help="Target name in the repository (default: config name).")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Local directory for the file being pulled (default: a directory under"
              " ~/.cache/safehold/binlog/). Losing it loses nothing: a restart pulls again"
              " from the server, after the newest archived file.")
@click.option("--poll", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between looks for completed files.")
@click.option("--flush-every", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Run FLUSH BINARY LOGS this often (seconds; needs RELOAD) so the archive"
              " never lags the server by more; 0: only when the server rotates by itself.")
@click.option("--replica-id", type=click.IntRange(min=1, max=2**32 - 1), default=None,
              help="Server id the puller presents to the server (must differ from every"
              " server and replica; default: derived from the target name).")
@click.option("--no-encryption", is_flag=True, envvar="SAFEHOLD_NO_ENCRYPTION",
              help="Archive unencrypted (the target's first backup or segment records the"
              " choice).")
@click.option("--namespace", envvar="SAFEHOLD_NAMESPACE", default=None,
              help="Kubernetes namespace of the target (the operator sets it).")
@click.option("--once", is_flag=True, hidden=True,
              help="Archive what is complete, then stop (tests).")
@streamer_status.status_options
@common.connection_options
@common.key_file_option
@click.pass_context
def stream(ctx: click.Context, /, target: str, repo: str, name: str | None,
           spool: Path | None, poll: float, flush_every: float, replica_id: int | None,
           no_encryption: bool, namespace: str | None, once: bool, status_port: int | None,
           status_address: str, retry_after: float, key_files: tuple[Path, ...],
           **conn: Any) -> None:
    """Pull the server's binary log and archive each completed file in the repository.

    Runs until stopped (SIGTERM/Ctrl-C stop it cleanly: completed files are archived first).
    After a restart it continues with the file after the newest archived one, so nothing the
    server still has is missed; files the server purged meanwhile are reported as a gap.
    With --status-port it also serves its status (position, lag, last archived file,
    recoverable window, health) as JSON, and retries after errors instead of stopping.
    """
    with streamer_status.endpoint(status_port, status_address, retry_after, engine="mysql",
                                  target=name or "") as ep:
        ep.run(functools.partial(
            _stream, ctx, ep.board, target=target, repo=repo, name=name, spool=spool,
            poll=poll, flush_every=flush_every, replica_id=replica_id,
            no_encryption=no_encryption, namespace=namespace, once=once,
            key_files=key_files, conn=conn))


def _stream(ctx: click.Context, board: StatusBoard, *, target: str, repo: str,
            name: str | None, spool: Path | None, poll: float, flush_every: float,
            replica_id: int | None, no_encryption: bool, namespace: str | None, once: bool,
            key_files: tuple[Path, ...], conn: dict[str, Any]) -> None:
    target_name, engine = common.open_target(ctx, target, **conn)
    _require_mariadb(engine, target_name)
    repo_cfg = resolve_repository(common.config(ctx), repo)
    repository = common.open_repo(ctx, repo, create=True)
    keks = common.keks_for(ctx, repository, repo, key_files, create_kdf=True)
    archive_binlog(board, engine, repository, keks, target=name or target_name,
                   no_encryption=no_encryption or repo_cfg.encryption == "none",
                   namespace=namespace, spool=spool, poll=poll, flush_every=flush_every,
                   replica_id=replica_id, once=once)


def stream_task(task: StreamTask, board: StatusBoard) -> None:
    """The operator's streamer Deployment (`safehold run-task`, kind stream): the same loop,
    opened from the task's references."""
    from safehold.pipeline.tasks import load_keys, open_database, open_repository

    engine = open_database(task.database)
    _require_mariadb(engine, task.target)
    repository = open_repository(task.repository)
    repository.initialize()
    archive_binlog(board, engine, repository, load_keys(task.encryption), target=task.target,
                   no_encryption=task.encryption.mode == "none", namespace=task.namespace,
                   spool=Path(task.spool), poll=task.poll, flush_every=task.flush_every,
                   replica_id=None, once=False)


def _require_mariadb(engine: Engine, name: str) -> None:
    from safehold.engines.mysql.engine import MySQLEngine

    if not isinstance(engine, MySQLEngine):
        raise UsageError(f"`safehold binlog stream` archives MariaDB binary logs; {name}"
                         f" is a {engine.name} target")


def archive_binlog(board: StatusBoard, engine: Engine, repository: Repository,
                   keks: Sequence[Kek], *, target: str, no_encryption: bool,
                   namespace: str | None, spool: Path | None, poll: float, flush_every: float,
                   replica_id: int | None, once: bool) -> None:
    """Pull and archive until stopped (or, with ``once``, what is complete now)."""
    from safehold.engines.mysql import binlog, binlog_stream  # pymysql: only when it runs
    from safehold.engines.mysql.engine import MySQLEngine

    assert isinstance(engine, MySQLEngine)
    archive = LogArchive(repository, target, keks[1:], kek=keks[0] if keks else None,
                         no_encryption=no_encryption, namespace=namespace or None)
    board.identify(engine.name, archive.target)
    board.window_from(functools.partial(window_bounds, repository, archive.target))
    db = engine.target
    newest = _newest_archived(repository, archive.target)
    _resume(board, repository, archive.target)
    board.refresh_window()
    first, server_id, missing = binlog_stream.start_file(
        db, newest, since=None if newest else _newest_backup_file(repository, archive.target))
    if missing:
        log.error("GAP in the binlog archive of %s: the server purged %s before it was"
                  " archived; point-in-time restores cannot cross it: take a full backup now",
                  archive.target, ", ".join(missing[:5]) + ("…" if len(missing) > 5 else ""))
    stream_name = f"server-{server_id}"
    spool = spool or Path.home() / ".cache" / "safehold" / "binlog" / archive.target
    _clear_spool(spool)  # a former run's partial file is pulled again from the server
    replica = replica_id or (4_000_000_000 + (zlib.crc32(archive.target.encode()) & 0xFFFFFF))
    log.info("archiving the binlog of %s (server id %s) from %s into %s", archive.target,
             server_id, first, repository.url)
    puller = binlog_stream.Puller(db, spool, first, replica_id=replica)
    last_flush = last_look = time.monotonic()
    last_window = last_look
    try:
        while True:
            archived = False
            for path in puller.complete_files():
                _archive(archive, db, stream_name, path, board)
                archived = True
            if once:
                return
            if not puller.alive():
                raise binlog.BinlogUnavailable(
                    f"mariadb-binlog stopped: {puller.error() or 'no message'}")
            now = time.monotonic()
            if flush_every and now - last_flush >= flush_every:
                binlog_stream.flush_logs(db)
                last_flush = now
            if archived or now - last_look >= LAG_EVERY or board.health != "ok":
                _look(board, db, spool)
                last_look = now
            if archived or now - last_window >= WINDOW_EVERY:
                board.refresh_window()
                last_window = now
            board.healthy()
            time.sleep(poll)
    finally:
        puller.stop()
        for path in puller.complete_files():  # what finished before the stop
            _archive(archive, db, stream_name, path, board)


LAG_EVERY = 10.0  # seconds between looks at the server's end (lag in bytes)


def _resume(board: StatusBoard, repository: Any, target: str) -> None:
    from safehold.engines.mysql import binlog

    records = [r for r in readable_segments(repository, target)[0] if r.kind == "binlog"]
    if records:
        newest = max(records, key=lambda r: binlog.file_seq(r.name))
        board.resumed(newest.name, newest.end, newest.last_time)


def _look(board: StatusBoard, db: Target, spool: Path) -> None:
    """How far the puller got, and how far the server is ahead of the archive."""
    from safehold.engines.mysql import binlog
    from safehold.engines.mysql.conn import connect

    pulled = sorted((p for p in spool.iterdir() if p.is_file()), key=lambda p: p.name)
    if pulled:
        board.pulled({"binlog_file": pulled[-1].name, "binlog_pos": str(pulled[-1].stat().st_size)})
    conn = connect(db)
    try:
        state = binlog.server_log(conn)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    done = board.snapshot().archived_position
    last = done.get("binlog_file")
    if not last:
        board.lag(None, None)
        return
    behind = sum(size for file, size in state.files.items()
                 if binlog.file_seq(file) > binlog.file_seq(last))
    board.lag(behind, bool(done.get("gtid")) and done.get("gtid") == state.gtid)


def _newest_archived(repository: Any, target: str) -> str | None:
    from safehold.engines.mysql import binlog

    names = [s.name for s in segment_ids(repository, target, "binlog")[0]]
    return max(names, key=binlog.file_seq) if names else None


def _newest_backup_file(repository: Any, target: str) -> str | None:
    """With nothing archived yet: the file where the newest backup ended, so the archive
    continues the backups without a gap (an unauthenticated hint: only where to start)."""
    ends = [m.end_position for m in repository.scan(target)[0]
            if m.end_position and m.end_position.get("binlog_file")]
    return str(ends[-1]["binlog_file"]) if ends else None


def _clear_spool(spool: Path) -> None:
    spool.mkdir(parents=True, exist_ok=True)
    for path in spool.iterdir():
        if path.is_file():
            path.unlink()


def _archive(archive: LogArchive, db: Target, stream_name: str, path: Path,
             board: StatusBoard) -> None:
    from safehold.engines.mysql import binlog_stream

    facts = binlog_stream.file_facts(path)
    server = f"server-{facts.server_id}" if facts.server_id else stream_name
    end = {"binlog_file": facts.name, "binlog_pos": str(facts.size),
           "server_id": str(facts.server_id)}
    if facts.last_time is not None:
        end["time"] = facts.last_time.isoformat()
    gtid = binlog_stream.gtid_at(db, facts.name, facts.size)
    if gtid:
        end["gtid"] = gtid
    with path.open("rb") as f:
        archive.put(SegmentId(archive.target, "binlog", server, facts.name),
                    iter(lambda: f.read(1 << 20), b""),
                    start={"binlog_file": facts.name, "binlog_pos": "4",
                           "server_id": str(facts.server_id)},
                    end=end, first_time=facts.first_time, last_time=facts.last_time,
                    meta={"server_id": str(facts.server_id)})
    board.archived(facts.name, end, facts.last_time)
    os.unlink(path)  # durable in the repository: the spool copy is no longer needed


COMMANDS = [binlog_group]
