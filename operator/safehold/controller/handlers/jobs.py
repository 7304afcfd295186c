"""Runner Job events -> the owning object's status (dispatched by the Job's labels)."""

from __future__ import annotations

from collections.abc import Callable

from safehold.controller import naming, runtime
from safehold.controller.handlers import backups, restores, targets
from safehold.controller.kube import Obj
from safehold.controller.logic.phase import Verdict, decide

DISPATCH: dict[str, Callable[[Obj, Verdict, bool], None]] = {
    "Backup": backups.on_job,
    "BackupTarget": targets.on_job,
    "Restore": restores.on_job,
}


def on_event(job: Obj, event_type: str | None) -> None:
    kind = (job.get("metadata", {}).get("labels") or {}).get(naming.OWNER_KIND, "")
    handler = DISPATCH.get(kind)
    if handler is None:
        return
    kube = runtime.get().kube
    status = job.get("status") or {}
    # pods only when there is something to read: a finished Job, or a retry to explain
    needs_pods = bool(status.get("conditions") or status.get("failed") or status.get("ready"))
    pods = kube.job_pods(job["metadata"]["namespace"], job) if needs_pods else []
    handler(job, decide(job, pods), event_type == "DELETED")
