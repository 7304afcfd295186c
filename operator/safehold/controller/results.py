"""What a finished runner pod says: its termination message (the runner's result) and how the
container ended (exit code, OOM kill, eviction).

Pure functions over pod dicts as the API returns them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONTAINER = "runner"


@dataclass(frozen=True)
class PodEnd:
    """How one runner pod ended; ``message`` is the raw termination message (the result JSON)."""

    pod: str
    exit_code: int | None
    reason: str  # Completed, Error, OOMKilled, Evicted, DeadlineExceeded, ...
    message: str
    oom_killed: bool = False
    evicted: bool = False


def pod_end(pod: dict[str, Any]) -> PodEnd | None:
    """The end of a finished pod, or None while it has not ended."""
    status = pod.get("status") or {}
    name = pod.get("metadata", {}).get("name", "")
    phase = status.get("phase")
    if status.get("reason") == "Evicted" or _disrupted(status):
        return PodEnd(name, None, "Evicted", status.get("message", "") or "the pod was evicted",
                      evicted=True)
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") != CONTAINER:
            continue
        term = (cs.get("state") or {}).get("terminated")
        if term is None:
            break
        reason = term.get("reason") or ""
        return PodEnd(
            name,
            term.get("exitCode"),
            reason,
            term.get("message") or "",
            oom_killed=reason == "OOMKilled",
        )
    if phase in ("Succeeded", "Failed"):
        return PodEnd(name, None, status.get("reason") or phase, status.get("message") or "")
    return None


def _disrupted(status: dict[str, Any]) -> bool:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            return cond.get("reason") in ("EvictionByEvictionAPI", "PreemptionByScheduler",
                                          "TerminationByKubelet", "DeletionByTaintManager")
    return False


def running(pods: list[dict[str, Any]]) -> bool:
    return any((p.get("status") or {}).get("phase") == "Running" for p in pods)
