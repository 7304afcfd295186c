"""BackupSchedule (short name ``bs``): when to take which backups, and what to keep.

The spec is here so the CRD exists; the reconciler, the cron/time-slot logic and the status
fields it records arrive with the schedules issue (issue 12).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from safehold.api.common import (
    API_VERSION,
    Condition,
    KubeModel,
    LocalObjectReference,
    ObjectMeta,
    SecretKeyRef,
    StatusModel,
)
from safehold.api.retention import Duration, RetentionPolicy

CRON_PATTERN = (r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
                r"|\S+(\s+\S+){4})$")
Cron = Annotated[str, Field(pattern=CRON_PATTERN, max_length=256)]
NotifyEvent = Literal["failure", "success", "retention", "keyProblem"]


class ScheduleRetention(RetentionPolicy):
    """Which backups the schedule keeps after each successful backup (chain-aware: a backup
    that a kept backup depends on is kept too, and so is the newest)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": " || ".join(f"(has(self.{f}) && self.{f} > 0)" for f in (
            "keepLast", "keepDaily", "keepWeekly", "keepMonthly", "keepYearly"))
                 + " || has(self.maxAge)",
         "message": "a retention policy needs at least one of keepLast, keepDaily, keepWeekly,"
                    " keepMonthly, keepYearly or maxAge — with none, every backup would be"
                    " pruned"},
    ]})

    min_recovery_window: Duration | None = Field(
        default=None,
        description="Keep whatever point-in-time recovery needs to reach back this far, e.g."
        " 7d (takes effect once point-in-time recovery exists).",
    )


class SlackNotifications(KubeModel):
    """Slack messages through an incoming webhook."""

    webhook_secret_ref: SecretKeyRef = Field(description="Secret key holding the webhook URL.")
    on: list[NotifyEvent] = Field(
        default_factory=lambda: list[NotifyEvent](["failure"]), min_length=1,
        json_schema_extra={"default": ["failure"]},
        description="Events that notify: failure, success, retention, keyProblem.",
    )


class Notifications(KubeModel):
    """Where the schedule reports."""

    slack: SlackNotifications | None = Field(default=None, description="Slack webhook.")


class BackupScheduleSpec(KubeModel):
    """When to take full, differential and incremental backups of a target."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.full) || has(self.differential) || has(self.incremental)"
                 " || has(self.verify)",
         "message": "set at least one of full, differential, incremental or verify (a cron"
                    " expression)"},
    ]})

    target_ref: LocalObjectReference = Field(description="The BackupTarget to back up.")
    full: Cron | None = Field(default=None, description="Cron for full backups, e.g. 0 2 * * 0.")
    differential: Cron | None = Field(
        default=None, description="Cron for differential backups, e.g. 0 2 * * 1-6."
    )
    incremental: Cron | None = Field(
        default=None, description="Cron for incremental backups, e.g. 0 */4 * * *."
    )
    time_zone: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="IANA time zone of the cron expressions, e.g. Europe/Berlin (default UTC).",
    )
    suspend: bool = Field(default=False, description="Take no new backups while true.")
    starting_deadline_seconds: int | None = Field(
        default=None, ge=0,
        description="A run missed by more than this is skipped and recorded, not run late.",
    )
    concurrency_policy: Literal["Forbid", "Replace"] = Field(
        default="Forbid",
        description="Forbid (default): never two backups of one target at once. Replace:"
        " cancel the running backup for the new one.",
    )
    verify: Cron | None = Field(
        default=None, description="Cron for a scheduled verify of the target's backups."
    )
    retention: ScheduleRetention | None = Field(
        default=None, description="Which backups to keep; without it nothing is pruned."
    )
    notifications: Notifications | None = Field(default=None, description="Where to report.")

    @model_validator(mode="after")
    def _check(self) -> BackupScheduleSpec:
        if not (self.full or self.differential or self.incremental or self.verify):
            raise ValueError("set at least one of full, differential, incremental or verify")
        return self


class BackupScheduleStatus(StatusModel):
    """Observed state of a BackupSchedule (extended by the schedules issue)."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation the status reflects."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")


class BackupSchedule(KubeModel):
    """Backups on a schedule, with retention (kind BackupSchedule)."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["safehold.dev/v1alpha1"] = API_VERSION
    kind: Literal["BackupSchedule"] = "BackupSchedule"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: BackupScheduleSpec
    status: BackupScheduleStatus = Field(default_factory=BackupScheduleStatus)

    @classmethod
    def from_body(cls, body: Any) -> BackupSchedule:
        return cls.model_validate(dict(body))
