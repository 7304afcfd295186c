"""The runner Job: one pure function from (what to run, how it reaches its secrets, settings).

The pod runs ``safehold run-task`` with the task JSON in ``SAFEHOLD_TASK``. Secrets reach it by
reference only (``secretKeyRef`` env, ``envFrom`` ``secretRef``, Secret volumes): the task names
files and variables, never values. The pod passes the restricted Pod Security Standard.

Lifecycle: ``backoffLimit`` retries (a retry resumes the same backup id, decided by the
operator and written into the task); a pod failure policy fails the Job at once on exit codes no
retry can fix and does not count disruptions (evictions, preemption) against the retries;
``activeDeadlineSeconds`` bounds the run; ``ttlSecondsAfterFinished`` cleans up. The owner
reference makes the garbage collector delete the Job (and its pods) with its object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from safehold.api.common import RunnerOverrides
from safehold.api.errors import Exit
from safehold.controller import naming
from safehold.controller.builders import security
from safehold.controller.settings import Settings

TASK_ENV = "SAFEHOLD_TASK"
CONTAINER = "runner"

# exit codes that a retry cannot fix: fail the Job at the first one
PERMANENT_EXITS = sorted(
    int(e) for e in (Exit.USAGE, Exit.NOT_FOUND, Exit.CORRUPT, Exit.KEY, Exit.UNSUPPORTED,
                     Exit.CONFLICT, Exit.ABORTED)
)


@dataclass(frozen=True)
class Wiring:
    """How a pod reaches the secrets and volumes of a target: references only."""

    env: tuple[dict[str, Any], ...] = ()
    env_from: tuple[dict[str, Any], ...] = ()
    volumes: tuple[dict[str, Any], ...] = ()
    mounts: tuple[dict[str, Any], ...] = ()

    def __add__(self, other: Wiring) -> Wiring:
        return Wiring(
            self.env + other.env,
            self.env_from + other.env_from,
            self.volumes + other.volumes,
            self.mounts + other.mounts,
        )


@dataclass(frozen=True)
class JobSpec:
    """Everything one runner Job needs; ``owner`` is the object's apiVersion/kind/name/uid."""

    name: str
    namespace: str
    purpose: str  # check | backup | restore | delete | recover | list
    owner: dict[str, str]
    task_json: str
    wiring: Wiring = Wiring()
    overrides: RunnerOverrides | None = None
    deadline_seconds: int | None = None
    retries: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # (user, group, fsGroup or None): the pod runs as another image's user, e.g. the database
    # image's for a data directory it will own; the restricted baseline stays
    identity: tuple[int, int, int | None] | None = None


def build_job(spec: JobSpec, settings: Settings) -> dict[str, Any]:
    ov = spec.overrides or RunnerOverrides()
    labels = {
        naming.MANAGED_BY: naming.OPERATOR,
        naming.COMPONENT: "runner",
        naming.PURPOSE: spec.purpose,
        naming.OWNER_KIND: spec.owner["kind"],
        naming.OWNER_UID: spec.owner["uid"],
        **spec.labels,
    }
    tmp_volume, tmp_mount = security.tmp_volume()
    container_sc = security.container_security_context()
    if ov.security_context:
        # overrides may pick another uid or more; the restricted baseline keys stay set
        container_sc = {**container_sc, **ov.security_context, **_restricted_floor()}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": ov.image or settings.runner_image,
        "imagePullPolicy": ov.image_pull_policy or settings.image_pull_policy,
        "args": ["run-task"],
        "env": [{"name": TASK_ENV, "value": spec.task_json}, *spec.wiring.env],
        "volumeMounts": [tmp_mount, *spec.wiring.mounts],
        "securityContext": container_sc,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    if spec.wiring.env_from:
        container["envFrom"] = list(spec.wiring.env_from)
    if ov.resources is not None:
        container["resources"] = ov.resources.to_kube()
    pod_spec: dict[str, Any] = {
        "serviceAccountName": ov.service_account_name or settings.runner_service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "securityContext": security.pod_security_context(spec.identity),
        "containers": [container],
        "volumes": [tmp_volume, *spec.wiring.volumes],
    }
    if ov.node_selector:
        pod_spec["nodeSelector"] = ov.node_selector
    if ov.tolerations:
        pod_spec["tolerations"] = [t.to_kube() for t in ov.tolerations]
    if ov.affinity:
        pod_spec["affinity"] = ov.affinity
    if ov.priority_class_name:
        pod_spec["priorityClassName"] = ov.priority_class_name
    template_meta: dict[str, Any] = {"labels": {**(ov.pod_labels or {}), **labels}}
    if ov.pod_annotations:
        template_meta["annotations"] = ov.pod_annotations
    deadline = ov.active_deadline_seconds or spec.deadline_seconds or settings.job_deadline_seconds
    retries = next(r for r in (ov.backoff_limit, spec.retries, settings.job_retries)
                   if r is not None)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": {naming.OWNER_NAME: spec.owner["name"]},
            "ownerReferences": [
                {
                    "apiVersion": spec.owner["apiVersion"],
                    "kind": spec.owner["kind"],
                    "name": spec.owner["name"],
                    "uid": spec.owner["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": retries,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": PERMANENT_EXITS,
                        },
                    },
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def _restricted_floor() -> dict[str, Any]:
    base = security.container_security_context()
    return {k: base[k] for k in ("allowPrivilegeEscalation", "privileged", "runAsNonRoot",
                                 "capabilities", "seccompProfile")}
