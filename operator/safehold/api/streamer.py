"""What a log streamer (`safehold binlog|wal|oplog stream`) reports on its HTTP status endpoint.

The streamer has no Kubernetes API rights, so the operator polls ``GET /status`` (JSON of
:class:`StreamerStatus`) into the BackupTarget's status. The shape is engine-neutral: positions
are the engine's own key/value pairs (``binlog_file``/``binlog_pos``/``gtid``, ``lsn``, ``ts``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from safehold.api.common import ErrorInfo, StatusModel

STATUS_PATH = "/status"
HEALTH_PATH = "/healthz"
DEFAULT_STATUS_PORT = 8089

Health = Literal["starting", "ok", "error"]


class RecoverableWindow(StatusModel):
    """From the oldest full backup's consistent end to the newest archived log or backup end."""

    start: datetime | None = Field(default=None, description="Earliest time a restore can reach.")
    end: datetime | None = Field(default=None, description="Latest time a restore can reach.")


class StreamerStatus(StatusModel):
    """One look at a running log streamer."""

    engine: str = Field(description="Engine of the target, e.g. mysql or postgres.")
    target: str = Field(description="Target name in the repository.")
    health: Health = Field(
        description="starting (not yet connected), ok, or error (see error; it retries).")
    error: ErrorInfo | None = Field(default=None, description="The last failure, while failing.")
    position: dict[str, str] = Field(
        default_factory=dict, description="How far the streamer has pulled from the server.")
    archived_position: dict[str, str] = Field(
        default_factory=dict, description="End of the newest segment durable in the repository.")
    lag_seconds: float | None = Field(
        default=None, ge=0,
        description="Seconds since the newest archived event: at most this much a restore"
                    " right now could miss (0 when the server has written nothing since).")
    lag_bytes: int | None = Field(
        default=None, ge=0,
        description="Bytes the server has logged beyond the archive (where the engine knows).")
    last_segment: str | None = Field(default=None, description="Newest archived segment.")
    last_segment_time: datetime | None = Field(
        default=None, description="When the newest segment was archived.")
    segments_archived: int = Field(default=0, ge=0, description="Segments archived by this run.")
    window: RecoverableWindow = Field(
        default_factory=RecoverableWindow,
        description="The target's recoverable window, from the repository's backups and logs.")
    started: datetime = Field(description="When this streamer process started.")
    updated: datetime = Field(description="When this status was taken.")
