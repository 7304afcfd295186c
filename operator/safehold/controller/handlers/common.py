"""What every handler shares: start-up, the runner ServiceAccount, generated keys, results."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import kopf
from pydantic import ValidationError

from safehold.api.common import ErrorInfo
from safehold.api.result import TaskKind, TaskResult
from safehold.controller import naming, runtime
from safehold.controller.builders.keysecret import generated_key_secret
from safehold.controller.builders.serviceaccount import runner_service_account
from safehold.controller.kube import Kube, Obj
from safehold.controller.logic.phase import Verdict, decide

log = logging.getLogger(__name__)

# Kubernetes-level failures whose name says more than the runner could (it was killed)
KILLED = frozenset({"OOMKilled", "Evicted", "DeadlineExceeded"})


# namespace -> when its runner ServiceAccount was last ensured (saves two calls per Job; a
# deleted ServiceAccount is re-created within ACCOUNT_RECHECK seconds)
_ACCOUNTS: dict[str, float] = {}
ACCOUNT_RECHECK = 300.0


def ensure_runner_account(kube: Kube, namespace: str) -> None:
    """The per-namespace runner ServiceAccount (no Role, no token), created once."""
    now = time.monotonic()
    if now - _ACCOUNTS.get(namespace, -ACCOUNT_RECHECK) < ACCOUNT_RECHECK:
        return
    name = runtime.get().settings.runner_service_account
    kube.ensure_service_account(runner_service_account(name, namespace))
    _ACCOUNTS[namespace] = now


def ensure_generated_key(kube: Kube, target: Obj) -> str | None:
    """For ``generateKey: true``: the key Secret's name, created (not owned) if absent."""
    enc = (target.get("spec") or {}).get("encryption") or {}
    if not enc.get("generateKey"):
        return None
    meta = target["metadata"]
    name = naming.key_secret_name(meta["name"])
    if kube.ensure_secret(generated_key_secret(name, meta["namespace"], meta["name"])):
        kube.event(target, "KeyGenerated",
                   f"created key Secret {name} (not owned by this target: export and escrow it,"
                   " see docs/operator.md 'Key escrow')")
    return name


def result_of(verdict: Verdict, kind: TaskKind) -> TaskResult:
    """The runner's result for a finished Job, or one made from what Kubernetes says."""
    parsed: TaskResult | None = None
    if verdict.result:
        try:
            parsed = TaskResult.from_termination_message(verdict.result)
        except (ValidationError, ValueError):
            log.warning("unparsable termination message (%d bytes)", len(verdict.result))
    if verdict.phase == "Completed":
        if parsed is not None and parsed.ok:
            return parsed
        return TaskResult.failure(kind, ErrorInfo(
            error_class="ResultMissing",
            message="the runner Job completed without a readable result",
        ))
    if parsed is not None and parsed.error is not None and verdict.reason not in KILLED:
        return parsed
    exit_code = verdict.details.get("exitCode")
    return TaskResult.failure(kind, ErrorInfo(
        error_class=verdict.reason, message=verdict.message,
        exit_code=exit_code if isinstance(exit_code, int) else None,
        transient=verdict.reason in ("Evicted", "OOMKilled"),
    ))


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings: annotations for its bookkeeping (status stays ours), our finalizer."""
    prefix = f"kopf.{naming.GROUP}"
    settings.persistence.finalizer = f"{naming.GROUP}/delete-data"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own events say what happened
    settings.execution.max_workers = 16
    settings.watching.server_timeout = 300


def spec_of(body: Any) -> dict[str, Any]:
    return dict(body.get("spec") or {})


def finished(job: Obj) -> bool:
    """Whether the Job has a terminal condition (Complete or Failed)."""
    return any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
               for c in (job.get("status") or {}).get("conditions") or [])


def settle_existing(kube: Kube, job: Obj, created: bool,
                    on_job: Callable[[Obj, Verdict, bool], None]) -> None:
    """A Job found (not created) already finished: its events may have been seen before the
    status named it (a restart between the two), so read its verdict now."""
    if not created and finished(job):
        on_job(job, decide(job, kube.job_pods(job["metadata"]["namespace"], job)), False)
