"""slack_sdk's retry handlers as :class:`~safehold.notify.slack.SlackNotifier` uses them.

Kept apart from :mod:`safehold.notify.slack` so that importing the notifier (every CLI command
does) does not import slack_sdk; only a notifier that is built does.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

MAX_RETRY_AFTER = 60.0  # a longer Retry-After is reported (rate_limited), not slept through


class _RateLimitHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (waits Retry-After), except that a wait longer than
    MAX_RETRY_AFTER gives up at once instead of holding the sender for that long."""

    def _can_retry(self, *, state: RetryState, request: HttpRequest,
                   response: HttpResponse | None = None, error: Exception | None = None) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        assert response is not None
        value: str | list[str] = next(
            (v for k, v in response.headers.items() if k.lower() == "retry-after"), "1")
        try:
            return float(value[0] if isinstance(value, list) else value) <= MAX_RETRY_AFTER
        except (ValueError, IndexError):
            return True  # slack_sdk's own handler then waits about a second


def retry_handlers(retries: int, backoff: float) -> list[Any]:
    """slack_sdk's handlers: 429 waits Retry-After; 5xx and connection errors back off."""
    interval = BackoffRetryIntervalCalculator(backoff_factor=backoff)
    return [
        _RateLimitHandler(max_retry_count=retries),
        ServerErrorRetryHandler(max_retry_count=retries, interval_calculator=interval),
        ConnectionErrorRetryHandler(max_retry_count=retries, interval_calculator=interval),
    ]
