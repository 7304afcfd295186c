"""The operator's daemons sleep between looks without leaving a task for kopf's exit to re-raise.

kopf's exit collects every pending task of the loop and re-raises what they end with. kopf's
own ``await stopped.wait(n)`` waits in a task of its own that ends in a TimeoutError when
``n`` runs out, so an operator stopped while a daemon waited failed its exit (CI, once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from kopf._cogs.aiokits import aioenums

from safehold.controller.handlers import _pause


async def _other_tasks_ends(wait: Coroutine[Any, Any, None]) -> list[str]:
    """How the tasks a waiting daemon leaves beside its own end, as kopf's exit would see them."""
    daemon = asyncio.create_task(wait)
    for _ in range(5):
        await asyncio.sleep(0)
    others = asyncio.all_tasks() - {asyncio.current_task(), daemon}
    if others:
        await asyncio.wait(others, timeout=5)
    daemon.cancel()
    return sorted("cancelled" if t.cancelled() else repr(t.exception()) for t in others)


def test_a_daemons_pause_runs_in_the_daemons_own_task() -> None:
    assert asyncio.run(_other_tasks_ends(_pause(0.05))) == []


def test_kopfs_time_limited_stopper_wait_leaves_a_task_that_ends_in_timeout() -> None:
    """The reason for _pause: if kopf stops doing this, _pause can go back to stopped.wait."""

    async def kopf_wait() -> None:
        stopped = aioenums.FlagSetter[str]().async_waiter
        await stopped.wait(0.05)

    assert "TimeoutError()" in asyncio.run(_other_tasks_ends(kopf_wait()))
