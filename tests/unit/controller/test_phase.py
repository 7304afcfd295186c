"""The Job phase machine over Job and pod dicts shaped like the API's."""

from __future__ import annotations

from typing import Any

from safehold.controller.logic.phase import Phase, decide


def job(*conds: tuple[str, str], failed: int = 0, active: int = 0) -> dict[str, Any]:
    return {
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": 600,
            "template": {"spec": {"containers": [{"resources": {"limits": {"memory": "256Mi"}}}]}},
        },
        "status": {
            "failed": failed,
            "active": active,
            "conditions": [{"type": t, "status": "True", "reason": r} for t, r in conds],
        },
    }


def pod(phase: str, *, exit_code: int | None = None, reason: str = "", message: str = "",
        pod_reason: str | None = None, name: str = "p") -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}} if exit_code is None else {
        "terminated": {"exitCode": exit_code, "reason": reason, "message": message}
    }
    status: dict[str, Any] = {"phase": phase, "containerStatuses": [{"name": "runner",
                                                                    "state": state}]}
    if pod_reason:
        status = {"phase": phase, "reason": pod_reason, "message": "node low on memory"}
    return {"metadata": {"name": name, "creationTimestamp": name}, "status": status}


def test_created_job_without_pods_is_pending() -> None:
    v = decide(job(active=1), [])
    assert v.phase is Phase.PENDING and not v.terminal


def test_running_pod_is_running() -> None:
    assert decide(job(active=1), [pod("Running")]).phase is Phase.RUNNING


def test_retry_stays_running_and_says_it_resumes() -> None:
    pods = [pod("Failed", exit_code=137, reason="OOMKilled", name="a"), pod("Running", name="b")]
    v = decide(job(failed=1, active=1), pods)
    assert v.phase is Phase.RUNNING
    assert "retry 1 of 2 after OOMKilled" in v.message and "same backup id" in v.message


def test_complete_carries_the_result_of_the_successful_pod() -> None:
    pods = [pod("Failed", exit_code=7, message='{"phase":"Failed"}', name="a"),
            pod("Succeeded", exit_code=0, message='{"phase":"Completed"}', name="b")]
    v = decide(job(("Complete", "Completed")), pods)
    assert v.phase is Phase.COMPLETED and v.result == '{"phase":"Completed"}' and v.retries == 0


def test_complete_without_a_pod_has_no_result() -> None:
    v = decide(job(("Complete", "Completed")), [])
    assert v.phase is Phase.COMPLETED and v.result is None


def test_oom_killed_is_named() -> None:
    v = decide(job(("Failed", "BackoffLimitExceeded"), failed=3),
               [pod("Failed", exit_code=137, reason="OOMKilled")])
    assert v.phase is Phase.FAILED and v.reason == "OOMKilled"
    assert "256Mi" in v.message and "after 3 attempts" in v.message


def test_evicted_is_named() -> None:
    v = decide(job(("Failed", "BackoffLimitExceeded"), failed=1),
               [pod("Failed", pod_reason="Evicted")])
    assert v.reason == "Evicted" and "node low on memory" in v.message


def test_deadline_is_named_with_the_limit() -> None:
    v = decide(job(("Failed", "DeadlineExceeded")), [pod("Failed", exit_code=143)])
    assert v.reason == "DeadlineExceeded" and "activeDeadlineSeconds=600" in v.message


def test_runner_failure_keeps_its_result_for_the_error_class() -> None:
    msg = '{"phase":"Failed","error_class":"DatabaseProblem"}'
    v = decide(job(("Failed", "PodFailurePolicy")), [pod("Failed", exit_code=6, reason="Error",
                                                         message=msg)])
    assert v.phase is Phase.FAILED and v.result == msg and v.details == {"exitCode": 6}
