"""Pure parts of the operator's reporting: webhook routing, schedule lag, the new settings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from safehold.api.schedule import BackupSchedule
from safehold.api.target import BackupTarget
from safehold.controller.logic.notify import webhooks
from safehold.controller.reporting import schedule_lag
from safehold.controller.settings import Settings, SettingsError
from tests.unit.controller import samples


def _slack(secret: str, *on: str) -> dict[str, Any]:
    return {"slack": {"webhookSecretRef": {"name": secret, "key": "url"},
                      **({"on": list(on)} if on else {})}}


def _schedule(name: str, target: str = "orders", **notifications: Any) -> BackupSchedule:
    return BackupSchedule.from_body({
        "metadata": samples.meta(name), "spec": {"targetRef": {"name": target},
                                                 "full": "0 2 * * *",
                                                 "notifications": notifications or None}})


def _target(**notifications: Any) -> BackupTarget:
    spec = dict(samples.PG_TARGET_SPEC, notifications=notifications or None)
    return BackupTarget.from_body(samples.target(spec=spec))


def test_failure_is_the_default_trigger_and_success_must_be_chosen() -> None:
    schedules = [_schedule("nightly", **_slack("ops"))]
    assert [r.name for r in webhooks("failure", _target(), schedules)] == ["ops"]
    assert webhooks("success", _target(), schedules) == []


def test_target_and_schedules_each_choose_and_a_webhook_hears_once() -> None:
    target = _target(**_slack("ops", "failure", "keyProblem"))
    schedules = [
        _schedule("nightly", **_slack("ops", "failure", "success")),
        _schedule("hourly", **_slack("dev", "success", "retention")),
        _schedule("other-db", target="crm", **_slack("crm", "success")),
        _schedule("quiet"),
    ]
    names = lambda event, **kw: [r.name for r in webhooks(event, target, schedules, **kw)]  # noqa: E731
    assert names("failure") == ["ops"]
    assert names("success") == ["ops", "dev"]
    assert names("keyProblem") == ["ops"]
    assert names("retention") == ["dev"]
    # a backup failed on its key: webhooks that chose failure or keyProblem, each once
    assert [r.name for r in webhooks(["failure", "keyProblem"], target, schedules)] == ["ops"]
    assert [r.name for r in webhooks(["success", "retention"], target, schedules)] == \
        ["ops", "dev"]
    # a scheduled backup reports to its own schedule (and the target) only
    assert names("success", schedule="nightly") == ["ops"]
    assert names("success", schedule="hourly") == ["dev"]


def test_schedule_lag() -> None:
    started = datetime(2026, 12, 2, 2, 0, 30, tzinfo=UTC)
    assert schedule_lag("2026-12-02T02:00:00Z", started) == 30
    assert schedule_lag("2026-12-02T03:00:00+01:00", started) == 30
    assert schedule_lag("2026-12-02T02:01:00Z", started) == 0  # clock skew never goes negative
    for bad in (None, "", "yesterday", "2026-12-02T02:00:00"):  # naive times are ambiguous
        assert schedule_lag(bad, started) is None
    assert schedule_lag("2026-12-02T02:00:00Z", None) is None


def test_metrics_port_log_level_and_window_settings() -> None:
    s = Settings.from_env({"SAFEHOLD_METRICS_PORT": "9090", "SAFEHOLD_LOG_LEVEL": "debug",
                           "SAFEHOLD_NOTIFY_WINDOW_SECONDS": "2.5"})
    assert (s.metrics_port, s.log_level, s.notify_window_seconds) == (9090, "DEBUG", 2.5)
    assert Settings.from_env({}).metrics_port == 8080 and Settings().log_level == "INFO"
    with pytest.raises(SettingsError, match="SAFEHOLD_LOG_LEVEL='chatty'"):
        Settings.from_env({"SAFEHOLD_LOG_LEVEL": "chatty"})
    with pytest.raises(SettingsError, match="SAFEHOLD_METRICS_PORT='70000'"):
        Settings.from_env({"SAFEHOLD_METRICS_PORT": "70000"})


def test_start_applies_the_log_level_and_port_zero_serves_nothing() -> None:
    import logging

    from safehold.controller import metrics, reporting

    root, ours = logging.getLogger(), logging.getLogger("safehold")
    before = (root.level, ours.level)
    try:
        reporting.start("ERROR", 0)
        assert (root.level, ours.level) == (logging.ERROR, logging.ERROR)
        assert not ours.isEnabledFor(logging.WARNING)
        assert metrics._served is None or metrics._served[0] != 0
    finally:
        root.setLevel(before[0])
        ours.setLevel(before[1])


def test_a_key_problem_of_a_check_or_rewrap_notifies_once_until_it_changes() -> None:
    from safehold.api.common import ErrorInfo
    from safehold.controller.reporting import key_problem_notice

    target = _target(**_slack("hook", "keyProblem"))
    body = {"kind": "BackupTarget", "metadata": {"name": "orders", "namespace": "shop"}}
    key = ErrorInfo(error_class="KeyProblem", message="key k1 is not in the key Secret",
                    exit_code=5, hint="add k1 back")
    notice = key_problem_notice(body, target, key, "the target's check", already_known=False)
    assert notice is not None and notice.event == "keyProblem" and notice.failed
    assert notice.message == "the target's check: key k1 is not in the key Secret"
    assert notice.hint == "add k1 back" and notice.ref["metadata"]["name"] == "orders"
    # the same problem found again by the periodic re-check: no second page
    assert key_problem_notice(body, target, key, "the target's check", already_known=True) \
        is None
    # other failures are `failure` material, not key problems; no error, nothing
    auth = key.model_copy(update={"error_class": "AuthenticationFailed"})
    assert key_problem_notice(body, target, auth, "the target's check", False) is None
    assert key_problem_notice(body, target, None, "the key re-wrap", False) is None


def test_schedule_interval_is_the_longest_coming_gap_of_the_fastest_cron() -> None:
    from datetime import UTC, datetime

    from safehold.controller.reporting import schedule_interval

    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # a Wednesday

    def sched(**crons: str) -> BackupSchedule:
        return BackupSchedule.from_body({"metadata": samples.meta("s"), "spec": {
            "targetRef": {"name": "orders"}, **crons}})

    # with a daily full, the hourly incremental is the fastest cron
    assert schedule_interval(sched(full="0 2 * * *", incremental="0 * * * *"), now) == 3600
    # a weekday-only cron: its weekend is the longest coming gap
    assert schedule_interval(sched(full="0 2 * * 1-5"), now) == 3 * 86400
    assert schedule_interval(sched(full="0 2 * * *"), now) == 86400
    assert schedule_interval(sched(verify="0 5 * * *"), now) is None


def test_stuck_prunes_counts_pruned_backups_whose_deletion_is_refused() -> None:
    from safehold.controller.reporting import stuck_prunes

    def bk(pruned: bool, deleting: str | None) -> dict[str, Any]:
        return {"metadata": {"annotations": {"safehold.dev/pruned": "keep-last"} if pruned
                             else {}},
                "status": {"conditions": [{"type": "Deleting", "status": deleting}]
                           if deleting else []}}

    assert stuck_prunes([bk(True, "False"), bk(True, "True"), bk(False, "False"),
                         bk(True, None)]) == 1


def test_metrics_move_to_a_new_port_when_restarted_in_process() -> None:
    """An in-process restart with another port (the test sessions do it) serves there, and the
    old port is closed; the same port again is a no-op."""
    import urllib.error
    import urllib.request

    from safehold.controller import metrics
    from tests.infra.procs import free_port

    def scrape(port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    first, second = free_port(), free_port()
    try:
        metrics.serve(first)
        assert "safehold_" in scrape(first)
        metrics.serve(first)  # no-op
        metrics.serve(second)
        assert "safehold_" in scrape(second)
        with pytest.raises(urllib.error.URLError):
            scrape(first)
    finally:
        if metrics._served is not None:
            metrics._served[1].shutdown()
            metrics._served[1].server_close()
            metrics._served = None
