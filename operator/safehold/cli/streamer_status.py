"""The status endpoint options every log streamer shares (`safehold binlog|wal|oplog stream`).

A streamer adds ``@status_options`` and runs its work through :func:`endpoint`::

    with endpoint(status_port, status_address, retry_after, engine="mysql", target=name) as ep:
        ep.run(lambda: _stream(..., board=ep.board))

Without ``--status-port`` an error ends the command (its exit code says which). With it, the
streamer is a service (the operator's Deployment): an error is reported on the endpoint
(``health: error`` with its class and message) and the work starts again after a back-off, so
the operator sees why it fails instead of a restarting pod.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from safehold.api.errors import Exit
from safehold.api.streamer import STATUS_PATH
from safehold.pipeline.streamer_status import StatusBoard, StatusServer

log = logging.getLogger("safehold.streamer")
F = TypeVar("F", bound=Callable[..., Any])
MAX_BACKOFF = 300.0


def status_options(f: F) -> F:
    """--status-port, --status-address and --retry-after."""
    options = [
        click.option("--status-port", type=click.IntRange(min=0, max=65535), default=None,
                     envvar="SAFEHOLD_STATUS_PORT",
                     help=f"Serve GET {STATUS_PATH} (JSON: position, lag, last segment,"
                     " recoverable window, health) and GET /healthz on this port; with it,"
                     " errors are reported there and retried instead of ending the command."),
        click.option("--status-address", default="127.0.0.1", show_default=True,
                     envvar="SAFEHOLD_STATUS_ADDRESS",
                     help="Address the status endpoint binds (0.0.0.0: every interface, as in"
                     " a pod)."),
        click.option("--retry-after", type=click.FloatRange(min=0.1), default=10.0,
                     show_default=True,
                     help="With --status-port: seconds before retrying after an error (doubles"
                     f" up to {MAX_BACKOFF:.0f})."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@dataclass
class Endpoint:
    board: StatusBoard
    serving: bool
    retry_after: float

    def run(self, work: Callable[[], None]) -> None:
        """Run ``work`` until it returns; while serving, errors are reported and retried."""
        delay = self.retry_after
        while True:
            try:
                work()
                return
            except Exception as exc:  # the board shows it; without an endpoint it ends the run
                if getattr(exc, "exit_code", None) == Exit.TERMINATED:
                    raise  # SIGTERM in run-task: stop, never retry
                self.board.failed(exc)
                if not self.serving:
                    raise
                log.error("streaming failed (%s: %s); retrying in %.0fs", type(exc).__name__,
                          getattr(exc, "message", exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)


@contextlib.contextmanager
def endpoint(port: int | None, address: str, retry_after: float, *, engine: str, target: str
             ) -> Iterator[Endpoint]:
    board = StatusBoard(engine, target)
    if port is None:
        yield Endpoint(board, serving=False, retry_after=retry_after)
        return
    with StatusServer(board, address, port) as server:
        log.info("status endpoint on http://%s:%s%s", address, server.port, STATUS_PATH)
        yield Endpoint(board, serving=True, retry_after=retry_after)
