"""engines.common.run_parallel: the first failure stops the rest and is raised; a task that
gave up because of it (Abandoned) never stands in for it, even when it ended first."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from safehold.engines import common
from safehold.engines.base import Abandoned, EngineError
from safehold.engines.common import run_parallel


def test_results_come_in_item_order() -> None:
    assert run_parallel(lambda n: n * n, range(20), jobs=3, name="par-test") == [
        n * n for n in range(20)]


def test_an_abandoned_task_that_ends_first_does_not_hide_the_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # As in the MariaDB backup: a reader fails, and before its own failure has left its task
    # it tells a waiting task, which gives up at once and so ends first (its future is done,
    # and the run told, before the failing task raises: a done-callback says when).
    told, abandoned_done = threading.Event(), threading.Event()
    failure = EngineError("table 'wide': the server changed values while reading them")
    stopped: list[bool] = []

    class Pool(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            future = super().submit(fn, *args, **kwargs)
            if args == (1,):
                future.add_done_callback(lambda _: abandoned_done.set())
            return future

    def task(n: int) -> int:
        if n == 0:
            told.set()
            assert abandoned_done.wait(10)
            raise failure
        assert told.wait(10)
        raise Abandoned(f"table t{n} was not read: another table failed", failure)

    monkeypatch.setattr(common, "ThreadPoolExecutor", Pool)
    with pytest.raises(EngineError) as raised:
        run_parallel(task, [0, 1], jobs=2, name="par-test",
                     on_failure=lambda: stopped.append(True))
    assert raised.value is failure
    assert stopped == [True]


def test_the_first_failure_is_raised_and_later_tasks_never_start() -> None:
    started: list[int] = []

    def task(n: int) -> int:
        started.append(n)
        if n == 0:
            raise EngineError("first")
        return n

    with pytest.raises(EngineError, match="first"):
        run_parallel(task, range(50), jobs=1, name="par-test")
    assert started == [0]
