"""The streamer's status board and its HTTP endpoint (a real server on 127.0.0.1)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from safehold.api.errors import DatabaseProblem, UsageError
from safehold.api.streamer import StreamerStatus
from safehold.cli.streamer_status import Endpoint, endpoint
from safehold.pipeline.streamer_status import StatusBoard, StatusServer

T0 = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_board_reports_position_lag_segment_and_window() -> None:
    clock = Clock()
    board = StatusBoard("mysql", "shop", clock=clock)
    first = board.snapshot()
    assert (first.health, first.lag_seconds, first.last_segment) == ("starting", None, None)
    board.window_from(lambda: (T0 - timedelta(hours=1), T0))
    board.refresh_window()
    board.pulled({"binlog_file": "bin.000008", "binlog_pos": "900"})
    clock.now = T0 + timedelta(seconds=30)
    board.archived("bin.000007", {"binlog_file": "bin.000007", "binlog_pos": "4096",
                                  "gtid": "0-1-42"}, T0 + timedelta(seconds=20))
    board.lag(900, caught_up=False)
    board.healthy()
    clock.now = T0 + timedelta(seconds=50)
    s = board.snapshot()
    assert s.health == "ok" and s.error is None
    assert s.position == {"binlog_file": "bin.000008", "binlog_pos": "900"}
    assert s.archived_position["gtid"] == "0-1-42"
    assert (s.last_segment, s.last_segment_time) == ("bin.000007", T0 + timedelta(seconds=30))
    assert (s.lag_seconds, s.lag_bytes, s.segments_archived) == (30.0, 900, 1)
    assert (s.window.start, s.window.end) == (T0 - timedelta(hours=1), T0)
    board.lag(256, caught_up=True)  # only the new file's header: nothing to lose
    assert board.snapshot().lag_seconds == 0.0


def test_board_reports_an_error_with_its_class_and_recovers() -> None:
    board = StatusBoard("mysql", "shop")
    board.failed(DatabaseProblem("access denied for user 'backup'", hint="GRANT ..."))
    s = board.snapshot()
    assert s.health == "error" and s.error is not None
    assert (s.error.error_class, s.error.message, s.error.hint) == (
        "DatabaseProblem", "access denied for user 'backup'", "GRANT ...")
    board.failed(RuntimeError("boom"))  # not ours: its type is its class
    assert board.snapshot().error.error_class == "RuntimeError"  # type: ignore[union-attr]
    board.healthy()
    assert (board.snapshot().health, board.snapshot().error) == ("ok", None)


def test_endpoint_serves_status_and_health_over_http() -> None:
    board = StatusBoard("mysql", "shop")
    with StatusServer(board, "127.0.0.1", 0) as server:
        code, body = get(server.port, "/status")
        assert code == 200
        parsed = StreamerStatus.model_validate(json.loads(body))
        assert (parsed.engine, parsed.target, parsed.health) == ("mysql", "shop", "starting")
        assert "lagSeconds" in json.loads(body)  # camelCase, as the operator reads it
        assert get(server.port, "/healthz") == (200, b"ok\n")
        board.failed(DatabaseProblem("server gone"))
        assert get(server.port, "/healthz") == (503, b"error\n")
        data: dict[str, Any] = json.loads(get(server.port, "/status")[1])
        assert data["error"]["errorClass"] == "DatabaseProblem"
        code, body = get(server.port, "/metrics")
        assert code == 404 and b"/status" in body
    with pytest.raises(OSError):  # closed: nothing listens any more
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_a_port_in_use_is_refused_with_the_fix() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=r"in use.*--status-port"):
            StatusServer(StatusBoard("mysql", "shop"), "127.0.0.1", port)


def test_without_an_endpoint_an_error_ends_the_run() -> None:
    with endpoint(None, "127.0.0.1", 0.1, engine="mysql", target="shop") as ep:
        def fail() -> None:
            raise DatabaseProblem("down")
        with pytest.raises(DatabaseProblem):
            ep.run(fail)
        assert ep.board.health == "error"


def test_with_an_endpoint_errors_are_shown_and_retried() -> None:
    calls: list[str] = []
    with endpoint(0, "127.0.0.1", 0.01, engine="mysql", target="shop") as ep:
        seen: list[str] = []

        def work() -> None:
            calls.append("try")
            if len(calls) < 3:
                raise DatabaseProblem(f"down {len(calls)}")
            seen.append(ep.board.snapshot().error.message)  # type: ignore[union-attr]
            ep.board.healthy()
        ep.run(work)
    assert calls == ["try"] * 3
    assert seen == ["down 2"]
    assert ep.board.health == "ok"


def test_endpoint_run_does_not_swallow_a_stop() -> None:
    ep = Endpoint(StatusBoard("mysql", "shop"), serving=True, retry_after=0.01)

    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ep.run(stop)


def test_a_stream_task_for_an_engine_without_a_streamer_is_refused() -> None:
    from safehold.api.errors import Unsupported
    from safehold.api.task import StreamTask, TaskDatabase, TaskEncryption, TaskRepository
    from safehold.cli.streamers import run_stream_task

    task = StreamTask(repository=TaskRepository(url="file:///repo"), target="t",
                      database=TaskDatabase(engine="sqlite", url="sqlite:///x.db"),
                      encryption=TaskEncryption(mode="none"))
    with pytest.raises(Unsupported, match="no log streamer for the sqlite engine"):
        run_stream_task(task)
