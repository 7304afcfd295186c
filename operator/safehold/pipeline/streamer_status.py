"""A log streamer's status board and the small HTTP endpoint that serves it.

Engine-neutral: a streamer (binlog, WAL, oplog) tells the :class:`StatusBoard` what it pulled,
what it archived, how far the server is ahead and when it fails; :class:`StatusServer` serves
``GET /status`` (JSON, :class:`~safehold.api.streamer.StreamerStatus`) and ``GET /healthz``
(200 while healthy, 503 while failing) from a daemon thread (stdlib ``http.server``). The
operator polls it, since the streamer has no Kubernetes API rights.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from safehold.api.common import ErrorInfo
from safehold.api.errors import SafeholdError, UsageError
from safehold.api.streamer import HEALTH_PATH, STATUS_PATH, RecoverableWindow, StreamerStatus
from safehold.engines.base import redact_url

log = logging.getLogger(__name__)

WindowSource = Callable[[], tuple[datetime | None, datetime | None]]


def _now() -> datetime:
    return datetime.now(UTC)


def error_info(exc: BaseException) -> ErrorInfo:
    """The error as the status reports it (class, message, hint, whether a retry may help)."""
    if isinstance(exc, SafeholdError):
        return ErrorInfo(error_class=exc.error_class, message=redact_url(exc.message)[:2000],
                         exit_code=int(exc.exit_code),
                         hint=redact_url(exc.hint) if exc.hint else None,
                         transient=exc.transient)
    return ErrorInfo(error_class=type(exc).__name__, message=redact_url(str(exc))[:2000],
                     transient=True)


# seconds between window refreshes from the repository: a backup moves the window's start
# (and a finished one its end) without any log segment being archived
WINDOW_EVERY = 60.0

class StatusBoard:
    """What one streamer knows about itself; every method is thread-safe."""

    def __init__(self, engine: str, target: str, *, window: WindowSource | None = None,
                 clock: Callable[[], datetime] = _now) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._window_source = window
        self._engine, self._target = engine, target
        self._started = clock()
        self._health = "starting"
        self._error: ErrorInfo | None = None
        self._position: dict[str, str] = {}
        self._archived: dict[str, str] = {}
        self._archived_time: datetime | None = None  # the newest archived event
        self._segment: str | None = None
        self._segment_time: datetime | None = None
        self._segments = 0
        self._lag_bytes: int | None = None
        self._caught_up: bool | None = None
        self._window = RecoverableWindow()

    def identify(self, engine: str, target: str) -> None:
        """The engine and target, once the streamer has opened them."""
        with self._lock:
            self._engine, self._target = engine, target

    def pulled(self, position: Mapping[str, str]) -> None:
        with self._lock:
            self._position = dict(position)

    def archived(self, name: str, end: Mapping[str, str], last_event: datetime | None) -> None:
        """Segment ``name`` is durable in the repository; it ends at ``end``."""
        with self._lock:
            self._segment, self._segment_time = name, self._clock()
            self._archived = dict(end)
            self._segments += 1
            if last_event is not None:
                self._archived_time = last_event

    def resumed(self, name: str | None, end: Mapping[str, str], last_event: datetime | None
                ) -> None:
        """Where the archive stood when this run started (nothing counted as archived)."""
        with self._lock:
            self._segment = name
            self._archived = dict(end)
            self._archived_time = last_event

    def lag(self, bytes_behind: int | None, caught_up: bool | None) -> None:
        """How far the server is ahead of the archive; ``caught_up``: no transaction since."""
        with self._lock:
            self._lag_bytes, self._caught_up = bytes_behind, caught_up

    def healthy(self) -> None:
        with self._lock:
            self._health, self._error = "ok", None

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._health, self._error = "error", error_info(exc)

    @property
    def health(self) -> str:
        with self._lock:
            return self._health

    def window_from(self, source: WindowSource) -> None:
        """Where :meth:`refresh_window` reads the window (once the repository is open)."""
        self._window_source = source

    def refresh_window(self) -> None:
        """Recompute the recoverable window from the repository (in the streamer's thread:
        a request never waits for storage)."""
        if self._window_source is None:
            return
        start, end = self._window_source()
        with self._lock:
            self._window = RecoverableWindow(start=start, end=end)

    def snapshot(self) -> StreamerStatus:
        with self._lock:
            now = self._clock()
            seconds: float | None = None
            if self._caught_up:
                seconds = 0.0
            elif self._archived_time is not None:
                seconds = max(0.0, round((now - self._archived_time).total_seconds(), 3))
            return StreamerStatus(
                engine=self._engine, target=self._target, health=self._health,  # type: ignore[arg-type]
                error=self._error, position=self._position, archived_position=self._archived,
                lag_seconds=seconds, lag_bytes=self._lag_bytes, last_segment=self._segment,
                last_segment_time=self._segment_time, segments_archived=self._segments,
                window=self._window, started=self._started, updated=now)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == STATUS_PATH:
            body = self.server.board.snapshot().model_dump_json(by_alias=True).encode()
            self._reply(200, body, "application/json")
        elif path == HEALTH_PATH:
            ok = self.server.board.health != "error"
            self._reply(200 if ok else 503, b"ok\n" if ok else b"error\n", "text/plain")
        else:
            self._reply(404, json.dumps({"error": f"no such path: {path}; try {STATUS_PATH}"
                                         f" or {HEALTH_PATH}"}).encode(), "application/json")

    def _reply(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("status endpoint: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    board: StatusBoard


class _Server6(_Server):
    address_family = socket.AF_INET6


class StatusServer:
    """``GET /status`` and ``GET /healthz`` for ``board`` on ``address:port`` (0: a free port),
    served from a daemon thread until :meth:`close`."""

    def __init__(self, board: StatusBoard, address: str, port: int) -> None:
        host = address.strip("[]")
        kind = _Server6 if ":" in host else _Server
        try:
            self._server = kind((host, port), _Handler)
        except OSError as exc:
            why = ("the port is in use: pick another with --status-port"
                   if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc))
            raise UsageError(f"cannot serve the status endpoint on {address}:{port}: {why}"
                             ) from None
        self._server.board = board
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="safehold-status", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> StatusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
