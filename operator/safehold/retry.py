"""The one retry policy of the runner: exponential backoff with full jitter, transient errors only.

Storage backends retry each idempotent request (a part upload, a ranged read, a list page);
engines retry a connection or a whole table/collection. Both go through :func:`retry_call`.
A storage failure that reaches an engine has already had its retries, so an engine never
retries it again: retries do not multiply (8 storage attempts inside 3 engine attempts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from safehold.api.errors import StorageProblem

T = TypeVar("T")
log = logging.getLogger("safehold.retry")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    initial: float = 0.2  # seconds; the cap of the first jittered wait
    maximum: float = 20.0  # seconds; the cap of any single wait
    deadline: float = 300.0  # seconds for one operation including its retries


DEFAULT_POLICY = RetryPolicy()


def is_transient(exc: BaseException) -> bool:
    """Whether a retry may help: the error says so (``transient``, set where it is classified)."""
    return bool(getattr(exc, "transient", False))


def not_yet_retried(exc: BaseException) -> bool:
    """For callers above storage: transient, and not a storage error (storage retried it)."""
    return is_transient(exc) and not isinstance(exc, StorageProblem)


def retry_call(fn: Callable[[], T], *, what: str, policy: RetryPolicy = DEFAULT_POLICY,
               retry_if: Callable[[BaseException], bool] = is_transient) -> T:
    """Call ``fn``; after an error ``retry_if`` accepts, wait (exponential, full jitter), retry."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s failed (%s); retry %d in %.1fs", what, exc, state.attempt_number,
                    state.next_action.sleep if state.next_action else 0.0)

    retrying = Retrying(
        retry=retry_if_exception(retry_if),
        wait=wait_random_exponential(multiplier=policy.initial, max=policy.maximum),
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.deadline),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)
