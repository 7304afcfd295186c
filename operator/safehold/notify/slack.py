"""Slack notifications through an incoming webhook, for both planes.

:class:`Notice` is one thing worth telling (a backup finished or failed, retention pruned, a key
problem); :func:`message` turns notices into a Block Kit body (a coloured attachment per batch,
a status emoji, target, type, size, duration, throughput, backup id, and for failures the error
class and the hint). :class:`SlackNotifier` batches the notices of a burst into one message and
sends it with slack_sdk's :class:`~slack_sdk.webhook.WebhookClient`, whose retry handlers honour
HTTP 429 ``Retry-After`` and retry 5xx answers and connection errors with exponential backoff.

A notification never fails what it reports on: :meth:`SlackNotifier.flush` returns False and
calls ``on_failure`` with a short, bounded reason (for an event and a metric) instead of raising.
The webhook URL is a secret (it carries the token): it is never logged or put in a message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from safehold.api.errors import UsageError
from safehold.api.units import human_bytes, human_seconds

if TYPE_CHECKING:
    from safehold.api.result import TaskResult

log = logging.getLogger(__name__)

Event = Literal["success", "failure", "retention", "keyProblem", "verify", "missed"]
# failure reasons handed to on_failure: a bounded set, fit for a metric label
FailureReason = Literal["rate_limited", "client_error", "server_error", "connection", "invalid",
                        "no_webhook"]

MAX_DETAILED = 10  # notices shown in full in one message; the rest are counted
MAX_BLOCKS = 50  # Slack's limit per message
_STYLE: dict[str, tuple[str, str, str]] = {  # event -> (emoji, colour, title)
    "success": (":white_check_mark:", "#2eb886", "Backup completed"),
    "failure": (":x:", "#e01e5a", "Backup failed"),
    "retention": (":broom:", "#439fe0", "Retention pruned backups"),
    "keyProblem": (":key:", "#ecb22e", "Encryption key problem"),
    "verify": (":mag:", "#2eb886", "Verify passed"),
    "missed": (":warning:", "#ecb22e", "Scheduled backup not run"),  # the CLI's daemon
}
_SEVERITY = ("success", "verify", "retention", "missed", "keyProblem", "failure")


@dataclass(frozen=True)
class Notice:
    """One event worth a message; every field but ``event`` and ``target`` is optional."""

    event: Event
    target: str
    namespace: str | None = None
    backup_type: str | None = None
    backup_id: str | None = None
    raw_bytes: int | None = None
    stored_bytes: int | None = None
    seconds: float | None = None
    throughput_bytes_per_second: float | None = None
    error_class: str | None = None
    message: str | None = None
    hint: str | None = None
    failed: bool = False  # a failed verify or retention run (colours it red)
    ref: Any = field(default=None, compare=False)  # the caller's handle on the object (opaque)

    @classmethod
    def from_result(cls, result: TaskResult, *, target: str,
                    namespace: str | None = None) -> Notice:
        """A backup's outcome from its runner result."""
        error = result.error
        return cls(
            event="success" if result.ok else "failure", target=target, namespace=namespace,
            backup_type=result.type, backup_id=result.backup_id, raw_bytes=result.raw_bytes,
            stored_bytes=result.stored_bytes, seconds=result.seconds,
            throughput_bytes_per_second=result.throughput_bytes_per_second,
            error_class=error.error_class if error else None,
            message=error.message if error else None, hint=error.hint if error else None,
        )

    @property
    def severity(self) -> int:
        return len(_SEVERITY) if self.failed else _SEVERITY.index(self.event)


# ---------------------------------------------------------------- Block Kit (pure)


def message(notices: Sequence[Notice]) -> dict[str, Any]:
    """The webhook body for one batch: fallback ``text`` plus one coloured attachment."""
    if not notices:
        raise ValueError("no notices to send")
    worst = max(notices, key=lambda n: n.severity)
    colour = "#e01e5a" if worst.failed else _STYLE[worst.event][1]
    if len(notices) == 1:
        text = _headline(notices[0])
        header = text
    else:
        failures = sum(1 for n in notices if n.event == "failure" or n.failed)
        header = (f"{_STYLE[worst.event][0]} Safehold: {len(notices)} events"
                  + (f", {failures} failed" if failures else ""))
        text = header + ": " + "; ".join(_headline(n, emoji=False) for n in notices[:5])
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(header, 150),
                                    "emoji": True}},
    ]
    shown = 0
    for notice in notices[:MAX_DETAILED]:
        more = ([{"type": "divider"}] if shown else []) + _notice_blocks(
            notice, titled=len(notices) > 1)
        if len(blocks) + len(more) > MAX_BLOCKS - 1:  # room for the "and N more" line
            break
        blocks.extend(more)
        shown += 1
    if len(notices) > shown:
        blocks.append({"type": "context", "elements": [{
            "type": "mrkdwn", "text": f"… and {len(notices) - shown} more"}]})
    return {"text": _clip(text, 3000), "attachments": [{"color": colour, "blocks": blocks}]}


def _headline(n: Notice, *, emoji: bool = True) -> str:
    emo, _, title = _STYLE[n.event]
    if n.failed:
        emo, title = ":x:", title.replace("passed", "failed").replace("pruned", "failed to"
                                                                       " prune")
    where = f"{n.namespace}/{n.target}" if n.namespace else n.target
    kind = f" ({n.backup_type})" if n.backup_type else ""
    return f"{emo + ' ' if emoji else ''}{title}: {where}{kind}"


def _notice_blocks(n: Notice, *, titled: bool) -> list[dict[str, Any]]:
    fields = [("Target", f"{n.namespace}/{n.target}" if n.namespace else n.target)]
    if n.backup_type:
        fields.append(("Type", n.backup_type))
    if n.backup_id:
        fields.append(("Backup id", f"`{n.backup_id}`"))
    if n.stored_bytes is not None:
        size = human_bytes(n.stored_bytes)
        if n.raw_bytes:
            size += f" (raw {human_bytes(n.raw_bytes)})"
        fields.append(("Size", size))
    if n.seconds is not None:
        fields.append(("Duration", human_seconds(n.seconds)))
    if n.throughput_bytes_per_second is not None:
        fields.append(("Throughput", human_bytes(n.throughput_bytes_per_second) + "/s"))
    if n.error_class:
        fields.append(("Error", f"`{n.error_class}`"))
    blocks: list[dict[str, Any]] = []
    if titled:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": _clip("*" + _headline(n) + "*", 3000)}})
    blocks.append({"type": "section", "fields": [
        {"type": "mrkdwn", "text": _clip(f"*{k}*\n{v}", 2000)} for k, v in fields[:10]]})
    if n.message:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": _clip(n.message, 3000)}})
    if n.hint:
        blocks.append({"type": "context", "elements": [{
            "type": "mrkdwn", "text": _clip(f":bulb: *Hint:* {n.hint}", 3000)}]})
    return blocks


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- sending


def check_url(url: str, *, source: str = "the webhook URL") -> str:
    """The URL stripped, or UsageError naming ``source`` (never the URL: it is a secret)."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UsageError(f"{source} is not an http(s) URL",
                         hint="store the incoming webhook URL from Slack, e.g."
                              " https://hooks.slack.com/services/…")
    return url


class SlackNotifier:
    """Sends notices to one webhook; notices within ``window`` seconds go out as one message.

    ``window=None`` batches until :meth:`flush` (a short-lived runner flushes at its end).
    ``on_failure(reason, detail, notices)`` is called when a message could not be delivered
    after the retries, ``on_delivered(notices)`` when it was; neither escapes if it raises.
    """

    def __init__(self, url: str, *, window: float | None = 10.0, retries: int = 3,
                 timeout: float = 10.0, backoff: float = 0.5,
                 on_failure: Callable[[FailureReason, str, Sequence[Notice]], None] | None = None,
                 on_delivered: Callable[[Sequence[Notice]], None] | None = None) -> None:
        # slack_sdk is imported here, not at the top: the CLI starts without it (~0.1 s)
        from slack_sdk.webhook import WebhookClient

        from safehold.notify.slack_retry import retry_handlers

        self._client = WebhookClient(check_url(url), timeout=int(max(1, timeout)),
                                     retry_handlers=retry_handlers(retries, backoff))
        self._window = window
        self._on_failure = on_failure
        self._on_delivered = on_delivered
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: list[Notice] = []
        self._timer: threading.Timer | None = None

    def notify(self, notice: Notice) -> None:
        """Queue ``notice``; the first of a burst starts the window's timer."""
        with self._lock:
            self._pending.append(notice)
            if self._window is not None and self._timer is None:
                self._timer = threading.Timer(self._window, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> bool:
        """Send what is queued as one message now; True when delivered (or nothing queued)."""
        with self._lock:
            batch, self._pending = self._pending, []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if not batch:
            return True
        with self._send_lock:
            return self._send(batch)

    def close(self) -> bool:
        """Flush and stop the timer."""
        return self.flush()

    def _send(self, batch: list[Notice]) -> bool:
        try:
            response = self._client.send_dict(message(batch))
        except Exception as exc:  # connection refused, TLS, timeout: after the retries
            return self._failed("connection", f"{type(exc).__name__}", batch)
        if response.status_code == 200:
            _call(self._on_delivered, batch)
            return True
        reason: FailureReason = (
            "rate_limited" if response.status_code == 429
            else "server_error" if response.status_code >= 500 else "client_error")
        body = (response.body or "")[:200]
        return self._failed(reason, f"HTTP {response.status_code} {body}".strip(), batch)

    def _failed(self, reason: FailureReason, detail: str, batch: list[Notice]) -> bool:
        log.warning("Slack notification of %d event(s) not delivered: %s", len(batch), detail)
        _call(self._on_failure, reason, detail, batch)
        return False


def _call(hook: Callable[..., None] | None, *args: Any) -> None:
    """Run a reporting hook; it must never break the caller."""
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        log.exception("notification hook %r raised", hook)
