"""The operator's Prometheus metrics, served on ``SAFEHOLD_METRICS_PORT`` at /metrics.

Names follow Prometheus conventions (``safehold_`` prefix, base units in the name, ``_total``
counters); labels are bounded: namespace and target/schedule names (as many as there are
objects), a backup type (3 values), a result (2 values), a failure reason (a fixed set) — never
a backup id, a Job name or an error message. docs/operator.md lists every metric.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, start_http_server

log = logging.getLogger(__name__)

# 1 s .. 8 h: small SQLite backups to big server dumps
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
LAG_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)

BACKUPS = Counter(
    "safehold_backups", "Backups finished, by target, type and result (succeeded|failed).",
    ["namespace", "target", "type", "result"])
BACKUP_DURATION = Histogram(
    "safehold_backup_duration_seconds", "Wall time of finished backups (the runner's own).",
    ["namespace", "target", "type"], buckets=DURATION_BUCKETS)
BACKUP_RAW_BYTES = Counter(
    "safehold_backup_raw_bytes", "Bytes read from databases by completed backups.",
    ["namespace", "target", "type"])
BACKUP_STORED_BYTES = Counter(
    "safehold_backup_stored_bytes", "Bytes written to storage by completed backups.",
    ["namespace", "target", "type"])
LAST_RAW_BYTES = Gauge(
    "safehold_backup_last_raw_bytes", "Raw size of the target's newest completed backup.",
    ["namespace", "target"])
LAST_STORED_BYTES = Gauge(
    "safehold_backup_last_stored_bytes", "Stored size of the target's newest completed backup.",
    ["namespace", "target"])
LAST_SUCCESS = Gauge(
    "safehold_backup_last_success_timestamp_seconds",
    "Unix time the target's newest completed backup finished.", ["namespace", "target"])
OLDEST_BACKUP = Gauge(
    "safehold_backup_oldest_timestamp_seconds",
    "Unix time the target's oldest completed backup finished (the start of what can be"
    " restored; time() minus this is the recoverable window).", ["namespace", "target"])
CHAIN_LENGTH = Gauge(
    "safehold_backup_chain_length", "Backups in the target's newest chain (its full included).",
    ["namespace", "target"])
DEGRADED = Gauge(
    "safehold_backup_degraded", "1 when the target's newest backup was more than twice as slow"
    " as the trailing median of its type (the Degraded condition), else 0.",
    ["namespace", "target"])
STREAMER_HEALTHY = Gauge(
    "safehold_pitr_streamer_last_healthy_timestamp_seconds",
    "Unix time the target's log streamer (pointInTime) last answered a status poll healthy"
    " (time() minus this: how long it has been failing or unreachable).",
    ["namespace", "target"])
STREAMER_LAG = Gauge(
    "safehold_pitr_lag_seconds", "Seconds since the newest archived log event of the target"
    " (0: nothing written since): at most this much a restore now could miss.",
    ["namespace", "target"])
STREAMER_LAG_BYTES = Gauge(
    "safehold_pitr_lag_bytes", "Bytes the target's server has logged beyond its log archive.",
    ["namespace", "target"])
WINDOW_START = Gauge(
    "safehold_pitr_window_start_timestamp_seconds",
    "Unix time of the start of the target's recoverable window.", ["namespace", "target"])
WINDOW_END = Gauge(
    "safehold_pitr_window_end_timestamp_seconds",
    "Unix time of the end of the target's recoverable window.", ["namespace", "target"])
SCHEDULE_LAG = Histogram(
    "safehold_schedule_lag_seconds", "Delay from a scheduled time to the start of its backup.",
    ["namespace", "schedule"], buckets=LAG_BUCKETS)
VERIFIES = Counter(
    "safehold_verifies", "Scheduled verifies finished, by target and result.",
    ["namespace", "target", "result"])
PRUNED = Counter(
    "safehold_retention_pruned_backups", "Backups retention marked for deletion, by schedule.",
    ["namespace", "schedule"])
SCHEDULE_INTERVAL = Gauge(
    "safehold_schedule_interval_seconds", "Longest gap between the schedule's coming backup"
    " slots (the fastest of its crons): an alert compares the age of the target's newest"
    " backup with it.", ["namespace", "target", "schedule"])
RETENTION_STUCK = Gauge(
    "safehold_retention_stuck_backups", "Backups retention pruned whose deletion is refused or"
    " failing (their Deleting condition is False): retention cannot prune.",
    ["namespace", "schedule"])
RESTORES = Counter(
    "safehold_restores", "Restores finished, by source target, kind and result.",
    ["namespace", "target", "type", "result"])
RESTORE_DURATION = Histogram(
    "safehold_restore_duration_seconds", "Wall time of finished restores.",
    ["namespace", "target", "type"], buckets=DURATION_BUCKETS)
NOTIFICATIONS = Counter(
    "safehold_notifications", "Notification messages delivered, by channel.", ["channel"])
NOTIFICATION_FAILURES = Counter(
    "safehold_notification_failures",
    "Notification messages not delivered after retries, by channel and reason.",
    ["channel", "reason"])

# no *_created series: they would double every counter for no use here
disable_created_metrics()  # type: ignore[no-untyped-call]

_served: tuple[int, Any] | None = None  # (port, server)
_lock = threading.Lock()


def serve(port: int) -> None:
    """Serve /metrics on ``port`` (0: not at all). Once per process: a second call with the same
    port (an operator restarted in-process, as the tests do) is a no-op; with another port the
    old server stops and the new one starts (the counters live on, in the process)."""
    global _served
    if port == 0:
        log.info("metrics disabled (SAFEHOLD_METRICS_PORT=0)")
        return
    with _lock:
        if _served is not None:
            if _served[0] == port:
                return
            old = _served[1]
            old.shutdown()
            old.server_close()
            log.info("metrics moved from port %d to %d", _served[0], port)
            _served = None
        server, _thread = start_http_server(port)
        _served = (port, server)
    log.info("Prometheus metrics on :%d/metrics", port)


def backup_finished(namespace: str, target: str, type: str | None, ok: bool,
                    seconds: float | None, raw: int | None, stored: int | None,
                    finished: datetime | None) -> None:
    kind = type or "unknown"
    BACKUPS.labels(namespace, target, kind, "succeeded" if ok else "failed").inc()
    if seconds is not None:
        BACKUP_DURATION.labels(namespace, target, kind).observe(seconds)
    if not ok:
        return
    if raw is not None:
        BACKUP_RAW_BYTES.labels(namespace, target, kind).inc(raw)
        LAST_RAW_BYTES.labels(namespace, target).set(raw)
    if stored is not None:
        BACKUP_STORED_BYTES.labels(namespace, target, kind).inc(stored)
        LAST_STORED_BYTES.labels(namespace, target).set(stored)
    if finished is not None:
        LAST_SUCCESS.labels(namespace, target).set(finished.timestamp())


def restore_finished(namespace: str, target: str, type: str, ok: bool,
                     seconds: float | None) -> None:
    RESTORES.labels(namespace, target, type, "succeeded" if ok else "failed").inc()
    if seconds is not None:
        RESTORE_DURATION.labels(namespace, target, type).observe(seconds)


def streamer_polled(namespace: str, target: str, up: bool, lag_seconds: float | None,
                    lag_bytes: int | None, start: datetime | None, end: datetime | None
                    ) -> None:
    """A pointInTime streamer's last status poll (unknown figures keep their last value)."""
    if up:
        STREAMER_HEALTHY.labels(namespace, target).set_to_current_time()
    if lag_seconds is not None:
        STREAMER_LAG.labels(namespace, target).set(lag_seconds)
    if lag_bytes is not None:
        STREAMER_LAG_BYTES.labels(namespace, target).set(lag_bytes)
    if start is not None:
        WINDOW_START.labels(namespace, target).set(start.timestamp())
    if end is not None:
        WINDOW_END.labels(namespace, target).set(end.timestamp())


def streamer_removed(namespace: str, target: str) -> None:
    for gauge in (STREAMER_HEALTHY, STREAMER_LAG, STREAMER_LAG_BYTES, WINDOW_START, WINDOW_END):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, target)
