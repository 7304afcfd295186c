from __future__ import annotations

from safehold.api.common import ErrorInfo
from safehold.api.result import TaskResult
from safehold.api.target import KEYS_ROTATED, BackupTargetStatus
from safehold.controller.logic.rotation import decide, secret_version


def test_first_sight_is_a_baseline_and_only_a_change_rewraps() -> None:
    v1, v2 = secret_version("k", "1"), secret_version("k", "2")
    assert decide(None, v1, running=False) == "baseline"
    assert decide(v1, v1, running=False) == "none"
    assert decide(v1, v2, running=False) == "rewrap"
    assert decide(v1, secret_version("other", "1"), running=False) == "rewrap"  # another Secret
    assert decide(v1, v2, running=True) == "none"  # one re-wrap at a time
    assert decide(v1, secret_version("k", None), running=False) == "none"  # Secret gone


def test_status_records_the_rewrap_and_says_which_keys_may_go() -> None:
    s = BackupTargetStatus().rewrapping("rewrap-x", "k@2", 3)
    cond = next(c for c in s.conditions if c.type == KEYS_ROTATED)
    assert (cond.status, cond.reason, s.rewrap_job) == ("Unknown", "Rewrapping", "rewrap-x")
    done = s.rewrapped(TaskResult(kind="rewrap", phase="Completed", rewrapped=2,
                                  active_key_id="b", retired_key_ids=["a"]), 3)
    cond = next(c for c in done.conditions if c.type == KEYS_ROTATED)
    assert (cond.status, cond.reason) == ("True", "Rewrapped")
    assert "a" in cond.message and "may be removed" in cond.message
    assert done.rewrap_job is None and done.active_key_id == "b" and done.retired_key_ids == ["a"]
    failed = s.rewrapped(TaskResult.failure("rewrap", ErrorInfo(
        error_class="KeyProblem", message="no key unwraps backup 2026", exit_code=5)), 3)
    cond = next(c for c in failed.conditions if c.type == KEYS_ROTATED)
    assert (cond.status, cond.reason) == ("False", "KeyProblem")
    assert "nothing was changed" in cond.message


def test_the_rewrap_annotation_asks_for_a_rewrap_where_the_secret_is_unreadable() -> None:
    assert secret_version("k", None) is None  # nothing to compare: no decision
    unreadable = secret_version("k", None, "2026-12-02")
    assert unreadable == "k@?#2026-12-02"
    assert decide(None, unreadable, running=False) == "baseline"
    assert decide(unreadable, secret_version("k", None, "again"), running=False) == "rewrap"
    # readable too: a new annotation value re-wraps even when the Secret did not change
    assert decide(secret_version("k", "5"), secret_version("k", "5", "x"),
                  running=False) == "rewrap"
