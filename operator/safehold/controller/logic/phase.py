"""The runner Job phase machine: (Job, its pods) -> what the owning object's status says.

    (no Job)  --create-->  Pending  --pod runs-->  Running  --Complete-->  Completed
                               \\                       \\--Failed----->  Failed
                                \\--(Job gone, no result)-->  Recover (read the repository)

A retried pod (``backoffLimit``) stays Running: it resumes the same backup id. A Job that
failed says why in the reason: the runner's error class from its result, ``OOMKilled``,
``Evicted``, ``DeadlineExceeded`` (``activeDeadlineSeconds``) or ``BackoffLimitExceeded``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from safehold.controller.results import PodEnd, pod_end, running


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"


TERMINAL = frozenset({Phase.COMPLETED, Phase.FAILED})


@dataclass(frozen=True)
class Verdict:
    phase: Phase
    reason: str
    message: str
    # the raw termination message of the pod that decided it (the runner's result JSON), if any
    result: str | None = None
    retries: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL


def _job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def _explain_failure(end: PodEnd, limits: dict[str, Any]) -> tuple[str, str]:
    if end.oom_killed:
        mem = limits.get("memory")
        return "OOMKilled", (
            f"the runner was killed for exceeding its memory limit ({mem or 'none set'});"
            " raise spec.runner.resources.limits.memory or lower the repository's part_size"
            "/concurrency (docs/cli.md, Memory)"
        )
    if end.evicted:
        return "Evicted", f"the runner pod {end.pod} was evicted: {end.message}"
    return end.reason or "Error", (
        f"the runner exited with code {end.exit_code}" if end.exit_code is not None
        else f"the runner pod {end.pod} failed: {end.message or end.reason}"
    )


def decide(job: dict[str, Any], pods: list[dict[str, Any]]) -> Verdict:
    """What a Job and its pods say right now.

    The caller turns ``result`` (the runner's JSON) into the status fields and, for a failure,
    the runner's own error class and message override the generic reason chosen here.
    """
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    failed = int(status.get("failed") or 0)
    ends = [e for e in (pod_end(p) for p in pods) if e is not None]
    container = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    limits = (container[0].get("resources") or {}).get("limits") or {}

    if _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet"):
        winner = next((e for e in reversed(ends) if e.exit_code == 0), None)
        return Verdict(
            Phase.COMPLETED, "Completed", "the runner finished",
            result=winner.message if winner and winner.message else None, retries=failed,
        )

    fail = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")
    if fail:
        last = ends[-1] if ends else None
        reason = fail.get("reason") or "Failed"
        if reason == "DeadlineExceeded":
            return Verdict(
                Phase.FAILED, "DeadlineExceeded",
                f"the Job ran longer than activeDeadlineSeconds={spec.get('activeDeadlineSeconds')}"
                " and was stopped; raise it in the operator settings or the object's runner"
                " overrides",
                result=last.message if last and last.message else None, retries=failed,
            )
        if last is None:
            return Verdict(Phase.FAILED, reason, fail.get("message") or "the Job failed",
                           retries=failed)
        why, message = _explain_failure(last, limits)
        if reason == "BackoffLimitExceeded" and failed > 1:
            message += f" (after {failed} attempts)"
        return Verdict(
            Phase.FAILED, why, message,
            result=last.message or None, retries=failed,
            details={"exitCode": last.exit_code} if last.exit_code is not None else {},
        )

    if running(pods):
        note = ""
        if failed:
            prev = ends[-1] if ends else None
            why = _explain_failure(prev, limits)[0] if prev else "an earlier failure"
            note = f" (retry {failed} of {spec.get('backoffLimit')} after {why}, same backup id)"
        return Verdict(Phase.RUNNING, "Running", "the runner is working" + note, retries=failed)
    return Verdict(Phase.PENDING, "JobCreated", "waiting for the runner pod to start",
                   retries=failed)
