"""Retrying a conditional write without mistaking our own success for a lost race.

A conditional write (``put_if_absent``, ``replace_if``) is retried like any request when it
fails transiently. But a request may have succeeded on the server while its response was lost;
the retry then fails its condition against the object the first attempt wrote. So when a
retried attempt loses, the object is read back: if it holds exactly our bytes, the write was
ours and its version is returned. Callers make every write's bytes unique (a random token),
which is what makes that comparison mean "ours".
"""

from __future__ import annotations

from collections.abc import Callable

from safehold.storage.base import ConditionFailed, ObjectNotFound
from safehold.storage.retry import DEFAULT_POLICY, RetryPolicy, retry_call


def conditional_write(write: Callable[[], str], read_back: Callable[[], tuple[bytes, str]],
                      data: bytes, *, what: str, policy: RetryPolicy = DEFAULT_POLICY) -> str:
    """``write()`` (one request, returning the new version), retried on transient errors."""
    attempts = 0

    def once() -> str:
        nonlocal attempts
        attempts += 1
        try:
            return write()
        except ConditionFailed as lost:
            if attempts == 1:
                raise
            try:
                current, version = read_back()
            except ObjectNotFound:
                raise lost from None
            if current == data:
                return version  # an earlier attempt of ours succeeded; its answer was lost
            raise

    return retry_call(once, what=what, policy=policy)
