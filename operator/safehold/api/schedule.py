"""BackupSchedule (short name ``bs``): when to take which backups, and what to keep.

The cron/time-slot logic is :mod:`safehold.api.slots` (shared with the standalone scheduler);
the operator's reconciler records what it did in :class:`BackupScheduleStatus`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

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
from safehold.api.slots import Cron as CronSchedule
from safehold.api.slots import CronError, zone

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
        for kind, expression in self.crons().items():
            try:
                CronSchedule.parse(expression, self.time_zone)
            except CronError as exc:
                raise ValueError(f"{kind}: {exc.message} ({exc.hint})") from None
        return self

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        try:
            zone(value)
        except CronError as exc:
            raise ValueError(f"{exc.message} ({exc.hint})") from None
        return value

    def crons(self) -> dict[str, str]:
        """Each configured cron by run type (full, differential, incremental, verify)."""
        pairs = (("full", self.full), ("differential", self.differential),
                 ("incremental", self.incremental), ("verify", self.verify))
        return {kind: expr for kind, expr in pairs if expr}


class SlotStatus(StatusModel):
    """What one cron of the schedule did last and does next."""

    last_schedule_time: datetime | None = Field(
        default=None, description="The last slot handled (run, or skipped)."
    )
    next_schedule_time: datetime | None = Field(default=None, description="The next slot.")
    last_run: str | None = Field(
        default=None, description="The Backup (or verify Job) made for the last run."
    )
    skipped: int | None = Field(
        default=None, description="Slots skipped so far (missed deadline, operator down)."
    )
    last_skip_reason: str | None = Field(
        default=None, description="Why the last skipped slot was skipped."
    )


class PrunedBackup(StatusModel):
    """One backup retention pruned."""

    name: str = Field(description="The Backup object (deleted, with deletionPolicy Delete).")
    backup_id: str | None = Field(default=None, description="Its id in the repository.")
    reason: str = Field(description="Why no rule kept it.")


class RetentionStatus(StatusModel):
    """What the last retention pass decided."""

    time: datetime = Field(description="When it ran.")
    kept: int = Field(description="Backups kept.")
    pruned: list[PrunedBackup] = Field(default_factory=list, description="Backups pruned.")
    message: str | None = Field(default=None, description="Anything that stopped it.")


class BackupScheduleStatus(StatusModel):
    """Observed state of a BackupSchedule: per cron the last and next slot, the outcome of the
    schedule's backups, and what retention pruned."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation the status reflects."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Scheduled (firing, or why not: Suspended, InvalidSpec, TargetNotFound);"
        " Verified (the outcome of the last scheduled verify).",
    )
    full: SlotStatus | None = Field(default=None, description="The full backups' cron.")
    differential: SlotStatus | None = Field(
        default=None, description="The differential backups' cron."
    )
    incremental: SlotStatus | None = Field(
        default=None, description="The incremental backups' cron."
    )
    verify: SlotStatus | None = Field(default=None, description="The verify cron.")
    last_schedule_time: datetime | None = Field(
        default=None, description="The last slot any cron ran."
    )
    next_schedule_time: datetime | None = Field(
        default=None, description="The next slot of any cron."
    )
    active: list[str] = Field(
        default_factory=list, description="Backups of this schedule not yet finished."
    )
    last_successful_backup: str | None = Field(
        default=None, description="The newest Completed Backup of this schedule."
    )
    last_success_time: datetime | None = Field(default=None, description="When it completed.")
    last_failed_backup: str | None = Field(
        default=None, description="The newest Failed Backup of this schedule."
    )
    last_failure_time: datetime | None = Field(default=None, description="When it failed.")
    last_promotion: str | None = Field(
        default=None,
        description="The last incremental or differential taken as a full (no usable full to"
        " build on), and why.",
    )
    last_verify_job: str | None = Field(
        default=None, description="The runner Job of the last scheduled verify."
    )
    retention: RetentionStatus | None = Field(
        default=None, description="What the last retention pass kept and pruned."
    )
    retained_for: str | None = Field(
        default=None,
        description="The Completed Backup the last retention pass ran after (it runs once per"
        " successful backup).",
    )


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
