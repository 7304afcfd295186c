"""Point in time in Kubernetes: ``BackupTarget.spec.pointInTime`` runs the engine's log streamer
as a Deployment owned by the target; the operator polls its status endpoint
(:mod:`safehold.api.streamer`) into ``status.pointInTime`` and the ``PointInTime`` condition.

Engine-neutral: :data:`STREAMER_ENGINES` lists the engines with a streamer (the CRD's CEL rule
and the runner's registry, cli/streamers.py, follow it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from safehold.api.common import ErrorInfo, KubeModel, StatusModel, condition_reason
from safehold.api.streamer import StreamerStatus

STREAMER_ENGINES: tuple[str, ...] = ("mongodb", "mysql", "postgresql")
# engines a Restore brings to a point in time in a database; PostgreSQL's replays WAL into a
# new data directory instead: a Restore's destination.volume (VOLUME_ENGINES)
RESTORE_ENGINES: tuple[str, ...] = ("mongodb", "mysql")
VOLUME_ENGINES: tuple[str, ...] = ("postgresql",)
POINT_IN_TIME = "PointInTime"  # the BackupTarget condition type

StreamerHealth = Literal["starting", "ok", "error", "unreachable"]


def engines_cel() -> str:
    return "[" + ", ".join(f"'{e}'" for e in STREAMER_ENGINES) + "]"


def no_streamer_message() -> str:
    return (f"pointInTime needs a log streamer; engines with one: {', '.join(STREAMER_ENGINES)}"
            " (mongodb, `safehold oplog stream`; mysql = MariaDB, `safehold binlog stream`;"
            " postgresql, `safehold wal stream`):"
            " set pointInTime.enabled to false or remove pointInTime for this engine")


PHYSICAL_MESSAGE = ("pointInTime for postgresql archives WAL, which replays onto physical"
                    " backups only: set method: physical")


MULTI_DB_MESSAGE = ("pointInTime archives one database's log: it cannot be combined with"
                    " databases (several databases); use one BackupTarget per database")


class PointInTimeSpec(KubeModel):
    """Continuous log capture for point-in-time restore."""

    enabled: bool = Field(
        default=False,
        description="Run the engine's log streamer (runner image, restricted pod, no API"
        " rights) as a Deployment owned by this target; it archives the server's log into the"
        " repository, so a Restore can reach any time in the recoverable window.")
    segment_seconds: int = Field(
        default=0, ge=0, le=86400,
        description="Close the server's current log file this often, so the archive never"
        " lags the server by more (MariaDB: FLUSH BINARY LOGS, needs RELOAD); 0: only when"
        " the server switches files by itself.")


class PointInTimeStatus(StatusModel):
    """What the operator last saw of the target's streamer."""

    deployment: str | None = Field(default=None, description="Name of the streamer Deployment.")
    health: StreamerHealth = Field(
        default="starting", description="starting, ok, error (see error; the streamer retries)"
        " or unreachable (its status endpoint did not answer).")
    window_start: datetime | None = Field(
        default=None, description="Earliest time a Restore can reach.")
    window_end: datetime | None = Field(
        default=None, description="Latest time a Restore can reach (the newest archived log or"
        " backup end).")
    lag_seconds: float | None = Field(
        default=None, description="Seconds since the newest archived event (0: nothing written"
        " since): at most this much a restore now could miss.")
    lag_bytes: int | None = Field(
        default=None, description="Bytes the server has logged beyond the archive.")
    last_segment: str | None = Field(default=None, description="Newest archived log file.")
    last_segment_time: datetime | None = Field(
        default=None, description="When the newest log file was archived.")
    position: dict[str, str] = Field(
        default_factory=dict, description="How far the streamer has pulled from the server.")
    last_poll_time: datetime | None = Field(
        default=None, description="When the operator last read the streamer's status.")
    error: ErrorInfo | None = Field(default=None, description="Why it fails, while it fails.")

    def polled(self, seen: StreamerStatus, now: datetime) -> PointInTimeStatus:
        return self.model_copy(update={
            "health": seen.health, "window_start": seen.window.start,
            "window_end": seen.window.end, "lag_seconds": seen.lag_seconds,
            "lag_bytes": seen.lag_bytes, "last_segment": seen.last_segment,
            "last_segment_time": seen.last_segment_time, "position": seen.position,
            "last_poll_time": now, "error": seen.error})

    def unreachable(self, why: str, now: datetime) -> PointInTimeStatus:
        return self.model_copy(update={
            "health": "unreachable", "last_poll_time": now,
            "error": ErrorInfo(error_class="StreamerUnreachable", message=why, transient=True)})

    def condition(self) -> tuple[Literal["True", "False", "Unknown"], str, str]:
        """The PointInTime condition (status, reason, message) this status implies."""
        window = (f"recoverable window {self.window_start.isoformat()} .."
                  f" {self.window_end.isoformat()}" if self.window_start and self.window_end
                  else "no recoverable window yet (it starts at the first full backup's end)")
        if self.health == "ok":
            return "True", "Streaming", f"streamer {self.deployment} archives the log; {window}"
        if self.health == "starting":
            return ("Unknown", "StreamerStarting",
                    f"streamer {self.deployment} is starting (not yet connected)")
        err = self.error
        text = (err.message + (f" (hint: {err.hint})" if err.hint else "")) if err else ""
        if self.health == "unreachable":
            return ("False", "StreamerUnreachable",
                    f"the status endpoint of streamer {self.deployment} did not answer: {text}")
        reason = condition_reason(err.error_class if err else "", "StreamerFailed")
        return "False", reason, f"streamer {self.deployment} fails and retries: {text}"
