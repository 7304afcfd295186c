from __future__ import annotations

from datetime import UTC, datetime, timedelta

from safehold.controller.logic.schedule import check_due, slot

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_check_due() -> None:
    assert check_due(None, 3600, NOW, checking=False)
    assert not check_due(NOW - timedelta(minutes=59), 3600, NOW, checking=False)
    assert check_due(NOW - timedelta(minutes=60), 3600, NOW, checking=False)
    assert not check_due(None, 3600, NOW, checking=True)  # one check at a time


def test_slot_is_shared_within_an_interval() -> None:
    assert slot(NOW, 3600) == slot(NOW + timedelta(minutes=59), 3600)
    assert slot(NOW, 3600) != slot(NOW + timedelta(minutes=60), 3600)
