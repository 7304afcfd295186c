"""Types every custom resource shares: the base model, conditions, references, runner overrides.

Field names are snake_case in Python and camelCase in Kubernetes JSON (``populate_by_name``, so
both spellings parse). Every field carries a description: :mod:`safehold.api.crdgen` turns the
models into CRD schemas, and ``kubectl explain`` prints these descriptions to users.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

GROUP = "safehold.dev"
VERSION = "v1alpha1"
API_VERSION: Final = "safehold.dev/v1alpha1"
CATEGORY = "safehold"

# Kubernetes names: a DNS-1123 subdomain (most objects) or label (Secrets/PVCs are subdomains).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
Name = Annotated[str, Field(min_length=1, max_length=253, pattern=NAME_PATTERN)]
# A backup's id in the repository: its start time with microseconds (repository/layout.py).
BACKUP_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z$"
BACKUP_REF_PATTERN = r"^(latest|[0-9]{8}T[0-9]{6}\.[0-9]{6}Z)$"
# A Secret data key: alphanumerics, '-', '_' and '.'.
SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
# A resource quantity ("500m", "1Gi", 2) as Kubernetes writes it.
Quantity = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True,
                    "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
                               r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"}),
]
# A free-form Kubernetes object kept as written (securityContext, affinity): validated by the
# API server where it lands in the Pod, not re-modelled here.
FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


def utcnow() -> datetime:
    """Now, in UTC, truncated to seconds (Kubernetes timestamps have second precision)."""
    return datetime.now(UTC).replace(microsecond=0)


class KubeModel(BaseModel):
    """Base of every Kubernetes-facing model: camelCase JSON, snake_case Python, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
        defer_build=True,
    )

    def to_kube(self) -> dict[str, Any]:
        """The JSON body Kubernetes stores: camelCase, unset optional fields left out."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return data


class StatusModel(KubeModel):
    """Status written by the operator: unknown fields (from a newer operator) are ignored."""

    model_config = ConfigDict(extra="ignore")


class LocalObjectReference(KubeModel):
    """A reference to an object of the same namespace, by name."""

    name: Name = Field(description="Name of the object, in the same namespace.")


class SecretKeyRef(KubeModel):
    """One key of a Secret in the same namespace."""

    name: Name = Field(description="Name of the Secret, in the same namespace.")
    key: SecretKey = Field(description="Key within the Secret's data.")


class SecretRef(KubeModel):
    """A whole Secret in the same namespace."""

    name: Name = Field(description="Name of the Secret, in the same namespace.")


class ClaimRef(KubeModel):
    """A PersistentVolumeClaim in the same namespace, mounted into the runner Job."""

    claim_name: Name = Field(
        description="Name of the PersistentVolumeClaim, in the same namespace."
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KubeModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(
        min_length=1, max_length=316, description="Kind of condition in CamelCase, e.g. Ready."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0,
        description="metadata.generation of the object this condition was set from.",
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed from one status to another."
    )
    reason: str = Field(
        max_length=1024, pattern=r"^([A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?)?$",
        description="Machine-readable CamelCase reason for the last transition.",
    )
    message: str = Field(
        default="", max_length=32768, description="Human-readable details of the last transition."
    )


def set_condition(
    conditions: Sequence[Condition],
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    *,
    generation: int | None = None,
    now: datetime | None = None,
) -> tuple[Condition, ...]:
    """``conditions`` with ``type`` set; its lastTransitionTime moves only if the status changed.

    Pure: returns a new tuple, the input is untouched. Other conditions keep their order.
    """
    old = next((c for c in conditions if c.type == type), None)
    when = old.last_transition_time if old and old.status == status else (now or utcnow())
    new = Condition(type=type, status=status, reason=reason, message=message[:32768],
                    observed_generation=generation, last_transition_time=when)
    if old is None:
        return (*conditions, new)
    return tuple(new if c.type == type else c for c in conditions)


def condition_reason(text: str, fallback: str) -> str:
    """A condition reason from e.g. a runner error class: kept if CamelCase, else ``fallback``."""
    ok = (text.isascii() and text[:1].isalpha() and text.replace("_", "").isalnum()
          and len(text) <= 128)
    return text if ok else fallback


def find_condition(conditions: Sequence[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)


class ResourceRequirements(KubeModel):
    """CPU and memory for the runner container, as in a Pod spec."""

    limits: dict[str, Quantity] | None = Field(
        default=None, description="Most the runner may use, e.g. {memory: 1Gi}."
    )
    requests: dict[str, Quantity] | None = Field(
        default=None, description="What the scheduler reserves, e.g. {cpu: 500m, memory: 256Mi}."
    )


class Toleration(KubeModel):
    """A Pod toleration, as in a Pod spec."""

    key: str | None = Field(default=None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (the default)."
    )
    value: str | None = Field(default=None, description="Taint value to match with Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


class RunnerOverrides(KubeModel):
    """How the runner Jobs for this object run; unset fields use the operator's defaults."""

    image: str | None = Field(
        default=None, min_length=1, description="Runner image (default: the operator's setting)."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy of the runner container."
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="CPU and memory requests and limits of the runner container."
    )
    node_selector: dict[str, str] | None = Field(
        default=None, description="Node labels the runner Pod must be scheduled on."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, description="Taints the runner Pod tolerates."
    )
    affinity: FreeForm | None = Field(
        default=None, description="Pod affinity rules (a Kubernetes Affinity object)."
    )
    priority_class_name: str | None = Field(
        default=None, description="PriorityClass of the runner Pod."
    )
    service_account_name: Name | None = Field(
        default=None,
        description="ServiceAccount the runner Pod runs as (default: the operator's runner"
        " ServiceAccount, which has no API permissions; the runner needs none).",
    )
    security_context: FreeForm | None = Field(
        default=None,
        description="Container securityContext merged over the restricted defaults (non-root,"
        " no privilege escalation, all capabilities dropped, RuntimeDefault seccomp).",
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1,
        description="Seconds a runner Job may run before Kubernetes stops it.",
    )
    backoff_limit: int | None = Field(
        default=None, ge=0, le=100,
        description="Retries of a failed runner Pod; a retried backup resumes the same backup id.",
    )
    pod_labels: dict[str, str] | None = Field(
        default=None, description="Extra labels on the runner Pod."
    )
    pod_annotations: dict[str, str] | None = Field(
        default=None, description="Extra annotations on the runner Pod."
    )


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads; everything else is kept as is."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow",
                              frozen=True, defer_build=True)

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    deletion_timestamp: datetime | None = None
    creation_timestamp: datetime | None = None


class ErrorInfo(StatusModel):
    """Why a runner Job failed, as it reported it."""

    error_class: str = Field(
        description="Error class from the runner's taxonomy, e.g. DatabaseProblem."
    )
    message: str = Field(default="", description="What went wrong, in words.")
    exit_code: int | None = Field(default=None, description="Runner exit code (see docs/cli.md).")
    hint: str | None = Field(default=None, description="How to fix it, when known.")
    transient: bool = Field(default=False, description="Whether a retry may succeed.")
