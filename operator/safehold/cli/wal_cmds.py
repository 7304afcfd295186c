"""`safehold wal stream` and `safehold wal fetch`: PostgreSQL WAL into and out of the
repository's log archive, for point-in-time restores of physical backups
(engines/postgres/walstream.py pulls, pipeline/walarchive.py stores and fetches)."""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from safehold.api.errors import UsageError
from safehold.api.task import StreamTask
from safehold.cli import common, signals, streamer_status
from safehold.cli.config import resolve_repository
from safehold.cli.errors import Terminated
from safehold.codecs.crypto import Kek
from safehold.pipeline.streamer_status import WINDOW_EVERY, StatusBoard
from safehold.repository import layout
from safehold.repository.repo import Repository

if TYPE_CHECKING:
    from safehold.engines.postgres.engine import PostgresEngine

log = logging.getLogger("safehold.wal")


@click.group("wal")
def wal_group() -> None:
    """PostgreSQL WAL capture (stream) and retrieval (fetch: PostgreSQL's restore_command)."""


@wal_group.command()
@click.option("--target", "-t", required=True, help="PostgreSQL URL or config name.")
@common.repo_option
@click.option("--name", help="Target name in the repository (default: config name); the same"
              " name as the target's physical backups.")
@click.option("--slot", default=None, help="Physical replication slot to stream through"
              " (default: safehold_<name>, created when missing).")
@click.option("--status-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Keep position, slot health and segment count here (JSON, about every"
              " second).")
@click.option("--warn-retained", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Warn when the slot holds back more than this much WAL (MiB): the"
              " repository is slow or unreachable.")
@click.option("--no-encryption", is_flag=True, envvar="SAFEHOLD_NO_ENCRYPTION",
              help="Archive unencrypted (the target's first backup or segment records the"
              " choice).")
@click.option("--namespace", envvar="SAFEHOLD_NAMESPACE", default=None,
              help="Kubernetes namespace of the target (the operator sets it).")
@streamer_status.status_options
@common.connection_options
@common.key_file_option
@click.pass_context
def stream(ctx: click.Context, /, target: str, repo: str, name: str | None, slot: str | None,
           status_file: Path | None, warn_retained: int, no_encryption: bool,
           namespace: str | None, status_port: int | None, status_address: str,
           retry_after: float, key_files: tuple[Path, ...], **conn: Any) -> None:
    """Stream the server's WAL through a replication slot into the repository's log archive.

    Runs until stopped. Each complete 16 MiB segment is stored (encrypted and authenticated
    like backups), and only then confirmed to the slot, so the server keeps every byte not yet
    stored: killed at any point, the next run resumes where the slot stands, without a gap.
    SIGTERM stops it after the segment being stored (exit 143); a second SIGTERM at once.
    The server needs max_slot_wal_keep_size set and a role with REPLICATION. With
    --status-port it also serves its status (position, lag, last archived segment,
    recoverable window, health) as JSON, and retries after errors instead of stopping.
    """
    with streamer_status.endpoint(status_port, status_address, retry_after,
                                  engine="postgresql", target=name or "") as ep:
        ep.run(lambda: _stream(ctx, ep.board, target=target, repo=repo, name=name, slot=slot,
                               status_file=status_file, warn_retained=warn_retained,
                               no_encryption=no_encryption, namespace=namespace,
                               key_files=key_files, conn=conn))


def _stream(ctx: click.Context, board: StatusBoard, *, target: str, repo: str,
            name: str | None, slot: str | None, status_file: Path | None, warn_retained: int,
            no_encryption: bool, namespace: str | None, key_files: tuple[Path, ...],
            conn: dict[str, Any]) -> None:
    from safehold.engines.postgres.engine import PostgresEngine

    target_name, engine = common.open_target(ctx, target, **conn)
    if not isinstance(engine, PostgresEngine):
        raise UsageError(f"`safehold wal stream` archives PostgreSQL WAL; {target_name} is a"
                         f" {engine.name} target (MariaDB: `safehold binlog stream`)")
    name = _checked_name(name or target_name)
    repo_cfg = resolve_repository(common.config(ctx), repo)
    repository = common.open_repo(ctx, repo, create=True)
    keks = common.keks_for(ctx, repository, repo, key_files, create_kdf=True)
    archive_wal(board, engine, repository, keks, target=name, slot=slot,
                no_encryption=no_encryption or repo_cfg.encryption == "none",
                namespace=namespace, status_file=status_file,
                warn_retained=warn_retained << 20)


def stream_task(task: StreamTask, board: StatusBoard) -> None:
    """The operator's streamer Deployment (`safehold run-task`, kind stream): the same loop,
    opened from the task's references."""
    from safehold.engines.postgres.engine import PostgresEngine
    from safehold.pipeline.tasks import load_keys, open_database, open_repository

    engine = open_database(task.database)
    if not isinstance(engine, PostgresEngine):
        raise UsageError(f"a WAL streamer needs a PostgreSQL target; {task.target} is a"
                         f" {engine.name} target")
    repository = open_repository(task.repository)
    repository.initialize()
    archive_wal(board, engine, repository, load_keys(task.encryption), target=task.target,
                slot=None, no_encryption=task.encryption.mode == "none",
                namespace=task.namespace, status_file=None, warn_retained=1 << 30)


def archive_wal(board: StatusBoard, engine: PostgresEngine, repository: Repository,
                keks: Sequence[Kek], *, target: str, slot: str | None, no_encryption: bool,
                namespace: str | None, status_file: Path | None, warn_retained: int) -> None:
    """Stream and archive until stopped (SIGTERM: after the segment being stored, exit 143)."""
    from safehold.engines.postgres.walstream import StreamStatus, WalStreamer, slot_name
    from safehold.pipeline.logarchive import LogArchive
    from safehold.pipeline.walarchive import ArchiveSink

    archive = LogArchive(repository, target, keks[1:], kek=keks[0] if keks else None,
                         no_encryption=no_encryption, namespace=namespace or None)
    board.identify(engine.name, archive.target)
    from safehold.pipeline.pitr import window_bounds

    board.window_from(functools.partial(window_bounds, repository, archive.target))
    board.refresh_window()
    refreshed = [time.monotonic()]

    def report(status: StreamStatus) -> None:
        if time.monotonic() - refreshed[0] >= WINDOW_EVERY:  # a backup moved the window
            board.refresh_window()
            refreshed[0] = time.monotonic()
        board.pulled({"lsn": status.received_lsn, "timeline": str(status.timeline)})
        # the WAL the slot holds back is what the archive lacks (at most a segment while
        # healthy); "caught up" cannot be told from it, so the lag in time stays the age of
        # the newest covered commit
        board.lag(status.retained_bytes, None)
        board.healthy()

    streamer = WalStreamer(engine.target, slot or slot_name(archive.target),
                           ArchiveSink(archive, board=board), status_file=status_file,
                           warn_retained=warn_retained, on_status=report)
    log.info("archiving the WAL of %s into %s", archive.target, repository.url)
    with _stop_on_sigterm(streamer.stop) as stopped:
        streamer.run()
    if stopped.is_set():
        raise Terminated()


@contextmanager
def _stop_on_sigterm(stop: Callable[[], None]) -> Iterator[threading.Event]:
    """While inside: the first SIGTERM asks ``stop`` (the segment being stored is finished,
    the streamer returns) and sets the event yielded, a second one unwinds at once (exit 143
    either way)."""
    stopped = threading.Event()

    def handle(signum: int, frame: object) -> None:
        if stopped.is_set():
            raise Terminated()
        stopped.set()
        log.info("SIGTERM: stopping after the segment being stored")
        stop()

    with signals.handling(signal.SIGTERM, handle):
        yield stopped


@wal_group.command()
@click.argument("wal_file")
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@common.repo_option
@click.option("--name", required=True,
              help="Target name whose WAL to fetch (as given to `safehold wal stream`).")
@common.key_file_option
@click.pass_context
def fetch(ctx: click.Context, /, wal_file: str, dest: Path, repo: str, name: str,
          key_files: tuple[Path, ...]) -> None:
    """Copy archived WAL file WAL_FILE to DEST: PostgreSQL's restore_command
    (`safehold wal fetch -r REPO --name NAME %f %p`).

    DEST appears only once every byte passed its checks (written aside, then renamed). A file
    the archive does not hold (a later segment, a timeline history file) exits 3 and writes
    nothing: PostgreSQL takes that as the end of the archive. A missing or wrong key (5), a
    damaged or tampered segment (4) or a storage failure (7) are errors; a repository that
    is not there at all is 3 too, saying so.
    """
    from safehold.pipeline.logarchive import LogArchive
    from safehold.pipeline.walarchive import fetch as fetch_segment

    name = _checked_name(name)
    repository = common.open_repo(ctx, repo)
    keks = common.keks_for(ctx, repository, repo, key_files)
    size = fetch_segment(LogArchive(repository, name, keks, tags_suffice=True), wal_file, dest)
    log.info("fetched WAL file %s (%d bytes) into %s", wal_file, size, dest)
    common.audit_heads_to_stderr()  # into the server's log, with the other restore_command lines


def _checked_name(name: str) -> str:
    try:
        return layout.check_target_name(name)
    except ValueError as exc:
        raise UsageError(f"--name: {exc}") from None


COMMANDS = [wal_group]
