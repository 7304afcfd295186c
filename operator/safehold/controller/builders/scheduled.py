"""What a BackupSchedule creates (pure): its Backup objects and its verify Jobs.

A scheduled Backup carries the schedule as a label, never as an owner: deleting the schedule
stops future runs and leaves every backup in place. Its name is
:func:`safehold.api.slots.run_name`, so creating it twice finds the first one.
"""

from __future__ import annotations

from typing import Any

from safehold.api.schedule import BackupSchedule
from safehold.api.target import BackupTarget
from safehold.api.task import VerifyTask, task_to_json
from safehold.controller import naming
from safehold.controller.builders import wiring
from safehold.controller.builders.job import JobSpec, build_job
from safehold.controller.builders.tasks import SRC
from safehold.controller.logic.schedules import SCHEDULE, SCHEDULED_TYPE, SLOT, Run, label_value
from safehold.controller.settings import Settings


def scheduled_backup(sched: BackupSchedule, run: Run) -> dict[str, Any]:
    """The Backup for one run of ``sched`` (labelled with it, not owned by it)."""
    annotations = {SCHEDULED_TYPE: run.kind,
                   SLOT: run.slot.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if run.promoted:
        annotations[f"{naming.GROUP}/promoted"] = run.promoted
    return {
        "apiVersion": sched.api_version,
        "kind": "Backup",
        "metadata": {
            "name": run.name,
            "namespace": sched.metadata.namespace,
            "labels": {SCHEDULE: label_value(sched.metadata.name),
                       naming.TARGET: sched.spec.target_ref.name[:63]},
            "annotations": annotations,
        },
        "spec": {"targetRef": {"name": sched.spec.target_ref.name}, "type": run.type},
    }


def verify_job(sched: BackupSchedule, target: BackupTarget, job_name: str,
               settings: Settings) -> dict[str, Any]:
    """A scheduled ``safehold verify`` of every backup of the target (owned by the schedule:
    the Job is bookkeeping, not data)."""
    repo, w_repo = wiring.repository(target.spec, SRC)
    key_secret = None
    if target.spec.encryption.generate_key:
        key_secret = (target.status.generated_key_secret
                      or naming.key_secret_name(target.metadata.name))
    enc, w_enc = wiring.encryption(target.spec, SRC, key_secret)
    task = VerifyTask(repository=repo, target=target.repository_name, encryption=enc)
    return build_job(JobSpec(
        name=job_name, namespace=sched.metadata.namespace or "", purpose="verify",
        owner={"apiVersion": sched.api_version, "kind": sched.kind,
               "name": sched.metadata.name, "uid": sched.metadata.uid or ""},
        task_json=task_to_json(task), wiring=w_repo + w_enc,
        overrides=target.spec.runner, retries=0,
        labels={naming.TARGET: target.metadata.name[:63], SCHEDULE: label_value(
            sched.metadata.name)},
    ), settings)
