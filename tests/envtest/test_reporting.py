"""Metrics, trends and Slack notifications after real backups reach status (envtest: the test
plays the kubelet; the API server, Job controller, operator and the Slack stand-in are real)."""

from __future__ import annotations

import base64
import os
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from safehold.api.common import ErrorInfo
from safehold.api.result import PipelineFigures, TaskResult
from tests.envtest.conftest import Cluster, events_include, eventually, finish_pod
from tests.envtest.test_schedule import Clock
from tests.infra.slackhook import SlackHook, block_kit_problems
from tests.unit.controller import samples

T0 = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    if os.environ.get("SAFEHOLD_TEST_SHOW"):  # the scrape as a user sees it (kopf's runner
        # holds sys.stdout while the operator runs)
        print("\n".join(line for line in text.splitlines() if line.startswith("safehold_")),
              file=sys.__stderr__)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(metrics: dict[Any, float], name: str, **labels: str) -> float | None:
    return metrics.get((name, frozenset(labels.items())))


def _backup(k8s: Cluster, name: str, target: str, result: TaskResult) -> dict[str, Any]:
    """Create a Backup, finish its runner pod with ``result``, wait for its final phase."""
    bk = k8s.create("backups", samples.backup(name, target=target))
    job = eventually(lambda: k8s.jobs(bk["metadata"]["uid"]), f"the Job of {name}")[0]
    bid = eventually(lambda: k8s.status("backups", name).get("backupId"), "backup id")
    finish_pod(k8s, job, exit_code=result.exit_code,
               message=result.model_copy(update={"backup_id": bid}).to_termination_message())
    return eventually(lambda: (s := k8s.status("backups", name)).get("phase") in (
        "Completed", "Failed") and s, f"{name} finished")


def _ok(i: int, seconds: float, stages: dict[str, float]) -> TaskResult:
    """A backup whose pipeline spent ``stages``; the task's coarse stages (open, backup) are
    not pipeline stages and must never be taken for the bottleneck."""
    top = max((k for k in stages if k != "waiting"), key=lambda k: stages[k])
    return TaskResult(kind="backup", phase="Completed", type="full", raw_bytes=4000,
                      stored_bytes=1000, compression_ratio=4.0, seconds=seconds,
                      stage_seconds={"open": 0.1, "backup": seconds},
                      pipeline=PipelineFigures(stage_seconds=stages, bottleneck=top,
                                               cores_busy=0.5),
                      finished_at=T0 + timedelta(hours=i))


def _secret(k8s: Cluster, name: str, url: str) -> None:
    k8s.core.create_namespaced_secret(k8s.ns, {
        "metadata": {"name": name}, "data": {"url": base64.b64encode(url.encode()).decode()}})


def test_backups_feed_metrics_trends_and_slack(
    k8s: Cluster, operator: Any, slack_hook: SlackHook, metrics_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAFEHOLD_NOTIFY_WINDOW_SECONDS", "0.5")
    _secret(k8s, "slack", slack_hook.url)
    notify = {"slack": {"webhookSecretRef": {"name": "slack", "key": "url"},
                        "on": ["failure", "success"]}}
    broken = {"slack": {"webhookSecretRef": {"name": "nope", "key": "url"}, "on": ["success"]}}
    spec = dict(samples.PG_TARGET_SPEC, runner={"backoffLimit": 0})
    with operator():
        k8s.create("backuptargets", samples.target(spec=dict(spec, notifications=notify)))
        k8s.create("backuptargets", samples.target("crm", spec=dict(spec, notifications=broken)))
        usual = {"read": 6.0, "write": 4.0, "waiting": 9.0}
        for i in range(3):
            assert _backup(k8s, f"orders-{i}", "orders", _ok(i, 10.0, usual))["phase"] == \
                "Completed"
        slow = _backup(k8s, "orders-3", "orders",
                       _ok(3, 30.0, {"read": 6.5, "write": 23.5}))
        failed = _backup(k8s, "orders-4", "orders", TaskResult.failure("backup", ErrorInfo(
            error_class="DatabaseProblem", message="password authentication failed",
            exit_code=6, hint="check passwordSecretRef")))
        crm = _backup(k8s, "crm-0", "crm", _ok(0, 10.0, usual))
        target = eventually(lambda: (s := k8s.status("backuptargets", "orders")).get(
            "trends", {}).get("count") == 4 and s, "trends of 4 backups")
        events_include(k8s, "orders", {"SlowerThanUsual"})
        events = eventually(lambda: [e for e in k8s.events("crm-0")
                                     if e.reason == "NotificationFailed"],
                            "NotificationFailed on crm-0")
        notified = eventually(
            lambda: (t := _all_text(slack_hook)) and "password authentication failed" in t
            and t.count("Backup completed") >= 4 and t, "Slack heard of every backup")
        metrics = _scrape(metrics_port)
    assert slow["phase"] == "Completed" and failed["phase"] == "Failed"
    assert crm["phase"] == "Completed"  # an undeliverable notification never fails a backup

    # trends + Degraded, naming the stage that slowed
    trends = target["trends"]
    # (the pipeline's stages from each Backup's status.pipeline, not the task's coarse ones)
    assert slow["pipeline"]["bottleneck"] == "write" and slow["pipeline"]["coresBusy"] == 0.5
    assert trends["p50DurationSeconds"] == 10 and trends["bottleneckStage"] == "read"
    assert trends["compressionRatio"] == 4 and trends["regression"]["stage"] == "write"
    degraded = next(c for c in target["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "SlowerThanUsual"
    assert "stage write slowed most" in degraded["message"]

    # Slack: every message valid Block Kit; the successes and the failure were told
    assert all(block_kit_problems(b) == [] for b in slack_hook.delivered)
    assert "DatabaseProblem" in notified and "check passwordSecretRef" in notified
    assert crm["backupId"] not in notified  # crm's webhook Secret does not exist
    assert "Secret" in events[0].message and "nope" in events[0].message

    # metrics
    ns = k8s.ns
    assert _value(metrics, "safehold_backups_total", namespace=ns, target="orders",
                  type="full", result="succeeded") == 4
    assert _value(metrics, "safehold_backups_total", namespace=ns, target="orders",
                  type="full", result="failed") == 1
    assert _value(metrics, "safehold_backup_duration_seconds_count", namespace=ns,
                  target="orders", type="full") == 4
    assert _value(metrics, "safehold_backup_duration_seconds_sum", namespace=ns,
                  target="orders", type="full") == 60
    assert _value(metrics, "safehold_backup_raw_bytes_total", namespace=ns, target="orders",
                  type="full") == 16000
    assert _value(metrics, "safehold_backup_stored_bytes_total", namespace=ns,
                  target="orders", type="full") == 4000
    assert _value(metrics, "safehold_backup_last_success_timestamp_seconds", namespace=ns,
                  target="orders") == (T0 + timedelta(hours=3)).timestamp()
    assert _value(metrics, "safehold_backup_oldest_timestamp_seconds", namespace=ns,
                  target="orders") == T0.timestamp()
    assert _value(metrics, "safehold_backup_degraded", namespace=ns, target="orders") == 1
    assert (_value(metrics, "safehold_notification_failures_total", channel="slack",
                   reason="no_webhook") or 0) >= 1
    assert (_value(metrics, "safehold_notifications_total", channel="slack") or 0) >= 1
    # bounded labels: no backup id or Job name ever becomes a label value
    values = {v for (_, labels) in metrics for _, v in labels}
    assert not any(v.startswith("2026") or v.startswith("backup-") for v in values)


def _all_text(hook: SlackHook) -> str:
    import json

    return json.dumps(hook.delivered)


def test_scheduled_backups_report_retention_and_schedule_lag(
    k8s: Cluster, operator: Any, slack_hook: SlackHook, metrics_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from safehold.controller.handlers import schedules
    from tests.envtest.test_schedule import _complete, next_slot, schedule

    clock = Clock()  # the schedule handler's clock, moved by hand (as in test_schedule.py)
    monkeypatch.setattr(schedules, "CLOCK", clock)
    monkeypatch.setenv("SAFEHOLD_SCHEDULE_POLL_SECONDS", "0.3")

    monkeypatch.setenv("SAFEHOLD_NOTIFY_WINDOW_SECONDS", "0.3")
    _secret(k8s, "slack", slack_hook.url)
    k8s.create("backuptargets", samples.target())
    spec = {"full": "0 0 * * *", "retention": {"keepLast": 1},
            "notifications": {"slack": {"webhookSecretRef": {"name": "slack", "key": "url"},
                                        "on": ["retention"]}}}
    with operator():
        k8s.create("backupschedules", schedule(**spec))
        first = next_slot(k8s, "full")
        for day in (0, 1):
            when = first + timedelta(days=day)
            clock.to(when + timedelta(seconds=2))
            _complete(k8s, f"orders-full-{when:%Y%m%dt%H%M}", "full", None, None)
        text = eventually(lambda: (t := _all_text(slack_hook)) and "Retention pruned" in t
                          and t, "the retention message")
        metrics = _scrape(metrics_port)
    pruned = f"orders-full-{first:%Y%m%dt%H%M}"
    assert pruned in text and "schedule orders pruned 1 backup(s)" in text
    assert "Backup completed" not in text  # the schedule chose retention only
    assert all(block_kit_problems(b) == [] for b in slack_hook.delivered)
    assert _value(metrics, "safehold_retention_pruned_backups_total", namespace=k8s.ns,
                  schedule="orders") == 1
    # each Backup's Job started after its slot: two lag observations
    assert _value(metrics, "safehold_schedule_lag_seconds_count", namespace=k8s.ns,
                  schedule="orders") == 2
    # what the per-schedule alerts read: a daily full, and nothing stuck in deletion
    assert _value(metrics, "safehold_schedule_interval_seconds", namespace=k8s.ns,
                  target="orders", schedule="orders") == 86400
    assert _value(metrics, "safehold_retention_stuck_backups", namespace=k8s.ns,
                  schedule="orders") == 0


def test_a_failed_scheduled_verify_is_counted_and_told(
    k8s: Cluster, operator: Any, slack_hook: SlackHook, metrics_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from safehold.controller.handlers import schedules
    from tests.envtest.test_schedule import next_slot, schedule

    clock = Clock()
    monkeypatch.setattr(schedules, "CLOCK", clock)
    monkeypatch.setenv("SAFEHOLD_SCHEDULE_POLL_SECONDS", "0.3")
    monkeypatch.setenv("SAFEHOLD_NOTIFY_WINDOW_SECONDS", "0.3")
    _secret(k8s, "slack", slack_hook.url)
    k8s.create("backuptargets", samples.target(spec=dict(samples.PG_TARGET_SPEC,
                                                         runner={"backoffLimit": 0})))
    spec = {"verify": "0 5 * * *",
            "notifications": {"slack": {"webhookSecretRef": {"name": "slack", "key": "url"}}}}
    with operator():
        k8s.create("backupschedules", schedule(**spec))
        clock.to(next_slot(k8s, "verify") + timedelta(seconds=2))
        job = eventually(lambda: k8s.jobs(None, "verify"), "the verify Job")[0]
        result = TaskResult.failure("verify", ErrorInfo(
            error_class="IntegrityError", message="object 3 of backup x fails its SHA-256",
            exit_code=4, hint="restore from another backup"))
        finish_pod(k8s, job, exit_code=4, message=result.to_termination_message())
        text = eventually(lambda: (t := _all_text(slack_hook)) and "Verify failed" in t and t,
                          "the verify message")
        metrics = _scrape(metrics_port)
    assert "fails its SHA-256" in text and "#e01e5a" in text  # red: a failure
    assert _value(metrics, "safehold_verifies_total", namespace=k8s.ns, target="orders",
                  result="failed") == 1
