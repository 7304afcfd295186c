"""safehold.notify.slack against a local Slack webhook stand-in (tests/infra/slackhook.py).

The happy path is a real HTTP exchange; the stand-in checks the Block Kit rules Slack applies
and answers 400 as Slack would when one is broken. 429 and 5xx answers are scripted.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from safehold.api.common import ErrorInfo
from safehold.api.errors import UsageError
from safehold.api.result import TaskResult
from safehold.notify.slack import MAX_DETAILED, Notice, SlackNotifier, message
from tests.infra.slackhook import SlackHook, block_kit_problems

OK = TaskResult(kind="backup", phase="Completed", backup_id="20261202T020000.000000Z",
                type="full", raw_bytes=3 * 2**30, stored_bytes=2**30, seconds=75.5,
                throughput_bytes_per_second=42 * 2**20)
FAILED = TaskResult.failure("backup", ErrorInfo(
    error_class="DatabaseProblem", message="password authentication failed for user backup",
    exit_code=6, hint="check passwordSecretRef"), type="incremental")


def _texts(body: dict[str, Any]) -> str:
    """Every text of the message, joined (to look for what a reader sees)."""
    out = [body["text"]]
    for att in body["attachments"]:
        for block in att["blocks"]:
            if "text" in block:
                out.append(block["text"]["text"])
            out += [f["text"] for f in block.get("fields", [])]
            out += [e["text"] for e in block.get("elements", [])]
    return "\n".join(out)


def _notifier(hook: SlackHook, failures: list[tuple[str, str]] | None = None,
              **kw: Any) -> SlackNotifier:
    kw.setdefault("window", None)
    kw.setdefault("backoff", 0.01)
    seen = failures if failures is not None else []
    return SlackNotifier(hook.url, on_failure=lambda r, d, b: seen.append((r, d)), **kw)


def test_success_message_carries_every_fact(slack_hook: SlackHook) -> None:
    n = _notifier(slack_hook)
    n.notify(Notice.from_result(OK, target="orders", namespace="shop"))
    assert n.flush() is True
    [body] = slack_hook.delivered
    assert block_kit_problems(body) == []
    att = body["attachments"][0]
    assert att["color"] == "#2eb886"
    assert att["blocks"][0]["type"] == "header"
    assert att["blocks"][0]["text"]["text"].startswith(":white_check_mark: Backup completed")
    text = _texts(body)
    for fact in ("shop/orders", "full", "20261202T020000.000000Z", "1.0 GiB (raw 3.0 GiB)",
                 "1m 16s", "42.0 MiB/s"):
        assert fact in text, fact


def test_failure_message_has_error_class_and_hint_in_red(slack_hook: SlackHook) -> None:
    n = _notifier(slack_hook)
    n.notify(Notice.from_result(FAILED, target="orders", namespace="shop"))
    assert n.flush()
    [body] = slack_hook.delivered
    assert body["attachments"][0]["color"] == "#e01e5a"
    text = _texts(body)
    assert ":x: Backup failed: shop/orders (incremental)" in text
    assert "`DatabaseProblem`" in text and "password authentication failed" in text
    assert "Hint:* check passwordSecretRef" in text


def test_a_burst_is_one_message_and_the_worst_sets_the_colour(slack_hook: SlackHook) -> None:
    n = _notifier(slack_hook)
    for i in range(3):
        n.notify(Notice.from_result(OK, target=f"db{i}"))
    n.notify(Notice.from_result(FAILED, target="db9"))
    assert n.flush() and n.flush()  # the second flush has nothing to send
    [body] = slack_hook.delivered
    assert len(slack_hook.received) == 1
    assert body["attachments"][0]["color"] == "#e01e5a"
    assert body["attachments"][0]["blocks"][0]["text"]["text"] == \
        ":x: Safehold: 4 events, 1 failed"
    text = _texts(body)
    assert all(f"db{i}" in text for i in (0, 1, 2, 9))


def test_a_huge_burst_stays_within_slacks_limits(slack_hook: SlackHook) -> None:
    notices = [Notice.from_result(FAILED, target=f"db{i}") for i in range(60)]
    body = message(notices)
    assert block_kit_problems(body) == []
    shown = sum(1 for b in body["attachments"][0]["blocks"] if b["type"] == "divider") + 1
    assert 0 < shown <= MAX_DETAILED and f"… and {60 - shown} more" in _texts(body)
    few = message([Notice.from_result(OK, target=f"db{i}") for i in range(MAX_DETAILED + 2)])
    assert block_kit_problems(few) == [] and "… and 2 more" in _texts(few)
    long = Notice(event="failure", target="x" * 300, message="m" * 10_000, hint="h" * 5000)
    assert block_kit_problems(message([long])) == []


def test_the_window_sends_without_an_explicit_flush(slack_hook: SlackHook) -> None:
    n = _notifier(slack_hook, window=0.2)
    n.notify(Notice(event="retention", target="orders", message="pruned 3 backups"))
    deadline = time.monotonic() + 30
    while not slack_hook.delivered and time.monotonic() < deadline:
        time.sleep(0.05)
    [body] = slack_hook.delivered
    assert ":broom: Retention pruned backups: orders" in _texts(body)


def test_429_waits_for_retry_after_then_delivers(slack_hook: SlackHook) -> None:
    slack_hook.script = [(429, {"Retry-After": "1"}, "rate_limited")]
    failures: list[tuple[str, str]] = []
    n = _notifier(slack_hook, failures)
    started = time.monotonic()
    n.notify(Notice.from_result(OK, target="orders"))
    assert n.flush() is True
    assert [r.answered for r in slack_hook.received] == [429, 200]
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured, not a fixed backoff
    assert failures == []


def test_a_retry_after_beyond_a_minute_is_reported_not_slept_through(
        slack_hook: SlackHook) -> None:
    slack_hook.script = [(429, {"Retry-After": "3600"}, "rate_limited")]
    failures: list[tuple[str, str]] = []
    n = _notifier(slack_hook, failures)
    n.notify(Notice.from_result(OK, target="orders"))
    assert n.flush() is False
    assert len(slack_hook.received) == 1 and failures[0][0] == "rate_limited"


def test_5xx_is_retried_with_backoff_then_delivers(slack_hook: SlackHook) -> None:
    slack_hook.script = [(503, {}, "service_unavailable"), (500, {}, "oops")]
    n = _notifier(slack_hook)
    n.notify(Notice.from_result(OK, target="orders"))
    assert n.flush() is True
    assert [r.answered for r in slack_hook.received] == [503, 500, 200]


def test_persistent_failure_is_reported_never_raised(slack_hook: SlackHook) -> None:
    slack_hook.script = [(500, {}, "oops")] * 10
    failures: list[tuple[str, str]] = []
    n = _notifier(slack_hook, failures, retries=2)
    n.notify(Notice.from_result(OK, target="orders"))
    assert n.flush() is False
    assert len(slack_hook.received) == 3  # the first try and 2 retries
    assert failures == [("server_error", "HTTP 500 oops")]


def test_a_rejected_payload_is_a_client_error_not_retried(slack_hook: SlackHook) -> None:
    slack_hook.script = [(400, {}, "invalid_blocks")]
    failures: list[tuple[str, str]] = []
    n = _notifier(slack_hook, failures)
    n.notify(Notice.from_result(OK, target="orders"))
    assert n.flush() is False
    assert len(slack_hook.received) == 1 and failures[0][0] == "client_error"


def test_an_unreachable_webhook_is_a_connection_failure() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    failures: list[tuple[str, str]] = []
    n = SlackNotifier(f"http://127.0.0.1:{port}/hook", window=None, retries=1, backoff=0.01,
                      on_failure=lambda r, d, b: failures.append((r, d)))
    n.notify(Notice(event="keyProblem", target="orders", message="key k1 is missing"))
    assert n.flush() is False
    assert failures and failures[0][0] == "connection"


@pytest.mark.parametrize("url", ["", "hooks.slack.com/services/x", "ftp://example.com/x",
                                 "https:///"])
def test_a_bad_webhook_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(UsageError, match="not an http") as info:
        SlackNotifier(url + "secret-token")
    assert "secret-token" not in str(info.value)
    assert info.value.hint and "hooks.slack.com" in info.value.hint


def test_a_raising_failure_hook_does_not_escape(slack_hook: SlackHook) -> None:
    slack_hook.script = [(404, {}, "no_service")]

    def boom(reason: str, detail: str, batch: Any) -> None:
        raise RuntimeError("hook broke")

    n = SlackNotifier(slack_hook.url, window=None, on_failure=boom)
    n.notify(Notice.from_result(OK, target="orders"))
    assert n.flush() is False
