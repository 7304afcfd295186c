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
        assert metrics._served is None or metrics._served != 0
    finally:
        root.setLevel(before[0])
        ours.setLevel(before[1])
