"""Runner Job events -> the owning object's status (dispatched by the Job's labels)."""

from __future__ import annotations

from collections.abc import Callable

from safehold.controller import naming, runtime
from safehold.controller.handlers import backups, restores, targets
from safehold.controller.kube import Obj, transient
from safehold.controller.logic.phase import Verdict, decide
from safehold.retry import RetryPolicy, retry_call

DISPATCH: dict[str, Callable[[Obj, Verdict, bool], None]] = {
    "Backup": backups.on_job,
    "BackupTarget": targets.on_job,
    "Restore": restores.on_job,
}


# kopf does not retry an event handler that raised: the Job's verdict would be lost with the
# event (a finished Job sends no more). A few retries ride out an API server that is briefly
# overloaded; the owners' status updates are idempotent, so a repeat is harmless.
EVENT_RETRY = RetryPolicy(attempts=6, initial=0.5, maximum=10.0, deadline=60.0)


def on_event(job: Obj, event_type: str | None) -> None:
    kind = (job.get("metadata", {}).get("labels") or {}).get(naming.OWNER_KIND, "")
    handler = DISPATCH.get(kind)
    if handler is None:
        return
    name = f"{job['metadata'].get('namespace')}/{job['metadata'].get('name')}"
    retry_call(lambda: _handle(handler, job, event_type), what=f"Job {name}: its event",
               policy=EVENT_RETRY, retry_if=transient)


def _handle(handler: Callable[[Obj, Verdict, bool], None], job: Obj,
            event_type: str | None) -> None:
    kube = runtime.get().kube
    status = job.get("status") or {}
    # pods only when there is something to read: a finished Job, or a retry to explain
    needs_pods = bool(status.get("conditions") or status.get("failed") or status.get("ready"))
    pods = kube.job_pods(job["metadata"]["namespace"], job) if needs_pods else []
    handler(job, decide(job, pods), event_type == "DELETED")
