"""Operator settings: which namespaces to watch, the runner image and the Jobs' lifecycle.

Read once at start-up from the environment (the Helm chart sets them), validated by pydantic so a
bad value stops the operator with a message naming the variable and the fix.

Variables (defaults in brackets): ``SAFEHOLD_NAMESPACES`` [all] — ``""`` or ``*`` for every
namespace, ``shop`` for one, ``shop,crm`` for a list; ``SAFEHOLD_RUNNER_IMAGE``;
``SAFEHOLD_IMAGE_PULL_POLICY`` [IfNotPresent]; ``SAFEHOLD_RUNNER_SERVICE_ACCOUNT``
[safehold-runner], the per-namespace ServiceAccount of the Jobs; ``SAFEHOLD_JOB_TTL_SECONDS``
[86400], ``ttlSecondsAfterFinished``; ``SAFEHOLD_JOB_DEADLINE_SECONDS`` [21600],
``activeDeadlineSeconds`` of backup/restore Jobs; ``SAFEHOLD_CHECK_DEADLINE_SECONDS`` [300], of
check/list Jobs; ``SAFEHOLD_JOB_RETRIES`` [2], ``backoffLimit`` (a retried pod resumes the same
backup id); ``SAFEHOLD_CHECK_INTERVAL_SECONDS`` [3600], how often a BackupTarget is re-checked;
``SAFEHOLD_SCHEDULE_POLL_SECONDS`` [30], the longest a BackupSchedule sleeps between looks (it
wakes at its next slot anyway; the poll picks up spec changes and finished backups);
``SAFEHOLD_METRICS_PORT`` [8080], the Prometheus /metrics port (0: off); ``SAFEHOLD_LOG_LEVEL``
[INFO], DEBUG, INFO, WARNING or ERROR; ``SAFEHOLD_NOTIFY_WINDOW_SECONDS`` [10], how long a
burst of notifications is gathered into one Slack message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PREFIX = "SAFEHOLD_"

_ENV = {
    "namespaces": "NAMESPACES",
    "runner_image": "RUNNER_IMAGE",
    "image_pull_policy": "IMAGE_PULL_POLICY",
    "runner_service_account": "RUNNER_SERVICE_ACCOUNT",
    "job_ttl_seconds": "JOB_TTL_SECONDS",
    "job_deadline_seconds": "JOB_DEADLINE_SECONDS",
    "check_deadline_seconds": "CHECK_DEADLINE_SECONDS",
    "job_retries": "JOB_RETRIES",
    "check_interval_seconds": "CHECK_INTERVAL_SECONDS",
    "schedule_poll_seconds": "SCHEDULE_POLL_SECONDS",
    "metrics_port": "METRICS_PORT",
    "log_level": "LOG_LEVEL",
    "notify_window_seconds": "NOTIFY_WINDOW_SECONDS",
    "streamer_status_port": "STREAMER_STATUS_PORT",
    "streamer_poll_seconds": "STREAMER_POLL_SECONDS",
}


class SettingsError(ValueError):
    """A bad operator setting; the message names the environment variable and the fix."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: tuple[str, ...] = Field(
        default=(), description="namespaces to watch; empty means every namespace"
    )
    runner_image: str = Field(default="ghcr.io/safehold/runner:0.1.0", min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    runner_service_account: str = Field(default="safehold-runner", min_length=1, max_length=253)
    job_ttl_seconds: int = Field(default=86400, ge=0)
    job_deadline_seconds: int = Field(default=21600, ge=60)
    check_deadline_seconds: int = Field(default=300, ge=30)
    job_retries: int = Field(default=2, ge=0, le=20)
    check_interval_seconds: int = Field(default=3600, ge=30)
    schedule_poll_seconds: float = Field(default=30.0, ge=0.2, le=3600)
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    notify_window_seconds: float = Field(default=10.0, ge=0, le=3600)
    # the pointInTime streamers' status endpoint (port in their pods) and how often it is read
    streamer_status_port: int = Field(default=8089, ge=1, le=65535)
    streamer_poll_seconds: float = Field(default=30.0, ge=0.2, le=3600)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            names = [n.strip() for n in value.split(",") if n.strip()]
            return () if names in ([], ["*"]) else tuple(names)
        return value

    @field_validator("namespaces")
    @classmethod
    def _dns_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import re

        for name in value:
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
                raise ValueError(f"{name!r} is not a namespace name (a DNS label)")
        return value

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``SAFEHOLD_*`` variables; SettingsError names each bad one."""
        env = os.environ if environ is None else environ
        raw = {field: env[PREFIX + var] for field, var in _ENV.items() if PREFIX + var in env}
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                field = str(err["loc"][0]) if err["loc"] else "?"
                var = PREFIX + _ENV.get(field, field.upper())
                problems.append(f"{var}={env.get(var, '')!r}: {err['msg']}")
            raise SettingsError(
                "bad operator setting: " + "; ".join(problems)
                + " (see docs/operator.md, 'Settings')"
            ) from None
