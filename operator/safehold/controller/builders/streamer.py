"""The pointInTime streamer: a Deployment owned by its BackupTarget (pure, like the Jobs).

The pod is a runner Job's pod (builders/job.py: restricted security context, the runner
ServiceAccount with no API token, the target's database/repository/key Secrets by reference
through builders/wiring.py) running ``safehold run-task`` with a task of kind ``stream``, kept
running (restartPolicy Always, replicas 1, Recreate: never two streamers at once) and serving
its status endpoint on a named port that the operator polls.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from safehold.api.streamer import HEALTH_PATH
from safehold.api.target import BackupTarget
from safehold.api.task import StreamTask, task_to_json
from safehold.controller import naming
from safehold.controller.builders import wiring
from safehold.controller.builders.job import JobSpec, Wiring, build_job
from safehold.controller.builders.tasks import SRC, _key_secret, owner
from safehold.controller.settings import Settings

PURPOSE = "stream"
PORT_NAME = "status"
SPEC_HASH = f"{naming.GROUP}/spec-hash"  # annotation: a changed hash means replace


def deployment_name(target: BackupTarget) -> str:
    return naming.job_name(PURPOSE, target.metadata.name, target.metadata.uid or "")


def selector(target: BackupTarget) -> dict[str, str]:
    return {naming.MANAGED_BY: naming.OPERATOR, naming.PURPOSE: PURPOSE,
            naming.OWNER_UID: target.metadata.uid or ""}


def stream_task(target: BackupTarget, settings: Settings) -> tuple[StreamTask, Wiring]:
    db, w_db = wiring.database(target.spec, SRC)
    repo, w_repo = wiring.repository(target.spec, SRC)
    enc, w_enc = wiring.encryption(target.spec, SRC, _key_secret(target))
    pit = target.spec.point_in_time
    task = StreamTask(repository=repo, target=target.repository_name,
                      namespace=target.metadata.namespace, database=db, encryption=enc,
                      status_port=settings.streamer_status_port,
                      flush_every=float(pit.segment_seconds if pit else 0))
    return task, w_db + w_repo + w_enc


def streamer_deployment(target: BackupTarget, settings: Settings) -> dict[str, Any]:
    task, wired = stream_task(target, settings)
    job = build_job(JobSpec(
        name=deployment_name(target), namespace=target.metadata.namespace or "",
        purpose=PURPOSE, owner=owner(target), task_json=task_to_json(task), wiring=wired,
        overrides=target.spec.runner, labels={naming.TARGET: target.metadata.name[:63]},
    ), settings)
    template = job["spec"]["template"]
    pod = template["spec"]
    pod["restartPolicy"] = "Always"
    container = pod["containers"][0]
    container["ports"] = [{"name": PORT_NAME, "containerPort": settings.streamer_status_port,
                          "protocol": "TCP"}]
    container["readinessProbe"] = {"httpGet": {"path": HEALTH_PATH, "port": PORT_NAME},
                                   "periodSeconds": 10, "failureThreshold": 3}
    spec = {"replicas": 1, "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(target)}, "template": template}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    meta = job["metadata"]
    meta["annotations"] = {**meta["annotations"], SPEC_HASH: digest}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}
