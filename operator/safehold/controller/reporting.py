"""What the operator reports when a Backup or Restore finishes: metrics, trends, notifications.

The handlers call one function each when they write a status (``backup_status_changed``,
``restore_status_changed``); it acts only on the transition to a finished phase, and never
raises: reporting must not fail or retry a backup. Retention and key problems are reported
through :func:`notify_target` by the code that finds them.

- metrics: :mod:`safehold.controller.metrics`;
- trends: the target's ``status.trends`` and its ``Degraded`` condition from
  :func:`safehold.api.trends.summarize` over the target's recent completed Backups;
- notifications: :mod:`safehold.notify.slack`, to the webhooks :mod:`.logic.notify` picks; the
  webhook URL is read from its Secret at each event (a rotated URL takes effect at once). A
  notification that cannot be delivered is a Warning event ``NotificationFailed`` on the object
  it was about and ``safehold_notification_failures_total``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from safehold.api.backup import Backup, BackupStatus
from safehold.api.common import ErrorInfo, utcnow
from safehold.api.restore import Restore, RestoreStatus
from safehold.api.schedule import BackupSchedule
from safehold.api.slots import Cron
from safehold.api.target import BackupTarget
from safehold.api.trends import DEGRADED, Sample, summarize
from safehold.controller import metrics, naming, runtime
from safehold.controller.kube import Kube, Obj
from safehold.controller.logic.notify import webhooks
from safehold.controller.logic.schedules import PRUNED, SCHEDULE, SLOT
from safehold.controller.status import write
from safehold.notify.slack import FailureReason, Notice, SlackNotifier

log = logging.getLogger(__name__)

# set by the schedule reconciler on the Backups it creates (builders/scheduled.py)
SCHEDULE_LABEL = SCHEDULE
SCHEDULED_TIME = SLOT  # annotation: the slot (UTC, RFC 3339) a Backup was made for

_notifiers: dict[str, SlackNotifier] = {}  # by webhook URL (in memory only)
_lock = threading.Lock()


def start(log_level: str, metrics_port: int) -> None:
    """At operator start: the log level (SAFEHOLD_LOG_LEVEL) and /metrics."""
    logging.getLogger().setLevel(log_level)
    logging.getLogger("safehold").setLevel(log_level)
    import kopf

    try:
        metrics.serve(metrics_port)
    except OSError as exc:  # permanent: kopf stops the operator with this message
        raise kopf.PermanentError(f"cannot serve metrics on port {metrics_port} ({exc}): set"
                           " SAFEHOLD_METRICS_PORT to a free port, or 0 to turn metrics off"
                           ) from None


def flush() -> None:
    """Send every pending notification now (at operator shutdown)."""
    with _lock:
        notifiers = list(_notifiers.values())
    for n in notifiers:
        n.flush()


# ---------------------------------------------------------------- Backup


def backup_status_changed(kube: Kube, bk: Backup, new: BackupStatus) -> None:
    """Hook for the Backup handler's status writes: reports a backup that just finished."""
    if bk.status.finished or not new.finished or new.imported:
        return
    try:
        _backup_finished(kube, bk, new)
    except Exception:
        log.exception("reporting on Backup %s/%s failed", bk.metadata.namespace,
                      bk.metadata.name)


def _backup_finished(kube: Kube, bk: Backup, new: BackupStatus) -> None:
    ns = bk.metadata.namespace or ""
    target_name = bk.spec.target_ref.name
    ok = new.phase == "Completed"
    metrics.backup_finished(ns, target_name, new.type or bk.spec.type, ok, new.duration_seconds,
                            new.raw_bytes, new.stored_bytes, new.completed_at)
    schedule = bk.metadata.labels.get(SCHEDULE_LABEL)
    lag = schedule_lag(bk.metadata.annotations.get(SCHEDULED_TIME), new.started_at)
    if schedule and lag is not None:
        metrics.SCHEDULE_LAG.labels(ns, schedule).observe(lag)
    target_body = kube.get_custom("backuptargets", ns, target_name)
    if target_body is None:
        return
    target = BackupTarget.from_body(target_body)
    if ok:
        _trends(kube, target_body, target, bk, new)
    error = new.error
    notice = Notice(
        event="success" if ok else "failure", target=target_name, namespace=ns,
        backup_type=new.type or bk.spec.type, backup_id=new.backup_id, raw_bytes=new.raw_bytes,
        stored_bytes=new.stored_bytes, seconds=new.duration_seconds,
        throughput_bytes_per_second=new.throughput_bytes_per_second,
        error_class=error.error_class if error else None,
        message=error.message if error else None, hint=error.hint if error else None,
        ref=_ref(bk.kind, bk.metadata.name, ns, bk.metadata.uid))
    # a backup that failed on its key also reaches the webhooks that chose keyProblem
    events = ["failure", "keyProblem"] if error and error.error_class == "KeyProblem" else None
    notify_target(kube, target, notice, schedule=schedule, events=events)


def schedule_lag(scheduled: str | None, started: datetime | None) -> float | None:
    """Seconds from the scheduled time (annotation) to the start; None when unknown."""
    if not scheduled or started is None:
        return None
    try:
        when = datetime.fromisoformat(scheduled.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (started - when).total_seconds())


def _trends(kube: Kube, target_body: Obj, target: BackupTarget, bk: Backup,
            new: BackupStatus) -> None:
    """Recompute the target's rolling summary, Degraded, chain length and oldest backup."""
    ns = bk.metadata.namespace or ""
    done: list[BackupStatus] = []
    for body in kube.list_custom("backups", ns):
        if (body.get("spec") or {}).get("targetRef", {}).get("name") != target.metadata.name:
            continue
        if body["metadata"]["name"] == bk.metadata.name:
            done.append(new)
            continue
        try:
            status = BackupStatus.model_validate(body.get("status") or {})
        except ValueError:
            continue
        if status.phase == "Completed":
            done.append(status)
    if not any(s is new for s in done):
        done.append(new)
    done.sort(key=lambda s: (s.completed_at or utcnow(), s.backup_id or ""))
    ours = [s for s in done if not s.imported]
    summary = summarize(Sample.from_backup(s) for s in ours)
    newest = done[-1]
    labels = (ns, target.metadata.name)
    metrics.CHAIN_LENGTH.labels(*labels).set(
        sum(1 for s in done if newest.chain_id and s.chain_id == newest.chain_id) or 1)
    oldest = min((s.completed_at for s in done if s.completed_at), default=None)
    if oldest is not None:
        metrics.OLDEST_BACKUP.labels(*labels).set(oldest.timestamp())
    metrics.DEGRADED.labels(*labels).set(1 if summary.regression else 0)
    updated = target.status.trended(summary, target.metadata.generation)
    write(kube, "backuptargets", ns, target.metadata.name, target.status, updated)
    was = next((c for c in target.status.conditions if c.type == DEGRADED), None)
    if summary.regression is not None and (was is None or was.status != "True"):
        kube.event(target_body, "SlowerThanUsual", summary.regression.message, warning=True)


# ---------------------------------------------------------------- BackupSchedule


def verify_finished(kube: Kube, body: Obj, sched: BackupSchedule, ok: bool,
                    message: str) -> None:
    """Hook for the schedule's verify outcome: the metric and a notification (a failed verify
    goes to the webhooks that chose failure, a passed one to those that chose success)."""
    try:
        ns, target = sched.metadata.namespace or "", sched.spec.target_ref.name
        metrics.VERIFIES.labels(ns, target, "succeeded" if ok else "failed").inc()
        target_body = kube.get_custom("backuptargets", ns, target)
        if target_body is None:
            return
        notice = Notice(event="verify", target=target, namespace=ns, message=message,
                        failed=not ok, ref=event_ref(body))
        notify_target(kube, BackupTarget.from_body(target_body), notice,
                      schedule=sched.metadata.name, events=["success" if ok else "failure"])
    except Exception:
        log.exception("reporting on the verify of %s/%s failed", sched.metadata.namespace,
                      sched.metadata.name)


def retention_pruned(kube: Kube, body: Obj, sched: BackupSchedule,
                     pruned: dict[str, str]) -> None:
    """Hook for the schedule's retention: the metric and a ``retention`` notification."""
    if not pruned:
        return
    try:
        ns, target = sched.metadata.namespace or "", sched.spec.target_ref.name
        metrics.PRUNED.labels(ns, sched.metadata.name).inc(len(pruned))
        target_body = kube.get_custom("backuptargets", ns, target)
        if target_body is None:
            return
        listed = "; ".join(f"{name} ({why})" for name, why in list(pruned.items())[:20])
        more = f"; and {len(pruned) - 20} more" if len(pruned) > 20 else ""
        notice = Notice(event="retention", target=target, namespace=ns,
                        message=f"schedule {sched.metadata.name} pruned {len(pruned)}"
                        f" backup(s): {listed}{more}", ref=event_ref(body))
        notify_target(kube, BackupTarget.from_body(target_body), notice,
                      schedule=sched.metadata.name)
    except Exception:
        log.exception("reporting on the retention of %s/%s failed", sched.metadata.namespace,
                      sched.metadata.name)


# ---------------------------------------------------------------- Restore


def restore_status_changed(kube: Kube, rs: Restore, new: RestoreStatus) -> None:
    """Hook for the Restore handler's status writes: counts a restore that just finished."""
    if rs.status.finished or not new.finished:
        return
    try:
        spec = rs.spec
        target = (spec.destination.target_ref.name if spec.destination.target_ref
                  else spec.source.target_ref.name if spec.source.target_ref else None)
        if target is None and spec.source.backup_ref is not None:
            body = kube.get_custom("backups", rs.metadata.namespace or "",
                                   spec.source.backup_ref.name)
            target = ((body or {}).get("spec") or {}).get("targetRef", {}).get("name")
        kind = "dryRun" if spec.dry_run else "selective" if spec.include else "full"
        metrics.restore_finished(rs.metadata.namespace or "", target or "unknown", kind,
                                 new.phase == "Completed", new.duration_seconds)
    except Exception:
        log.exception("reporting on Restore %s/%s failed", rs.metadata.namespace,
                      rs.metadata.name)


# ---------------------------------------------------------------- notifications


def notify_target(kube: Kube, target: BackupTarget, notice: Notice, *,
                  schedule: str | None = None, events: Sequence[str] | None = None) -> int:
    """Queue ``notice`` for every webhook that chose one of ``events`` (default: the notice's
    event); returns how many. Never raises.

    For retention and key problems: ``Notice(event="retention"|"keyProblem", target=...,
    message=..., ref=...)`` from the code that finds them.
    """
    ns = target.metadata.namespace or ""
    try:
        schedules = _schedules(kube, ns)
        refs = webhooks(events or [notice.event], target, schedules, schedule=schedule)
    except Exception:
        log.exception("cannot route notifications of %s/%s", ns, target.metadata.name)
        return 0
    sent = 0
    for ref in refs:
        source = f"Secret {ns}/{ref.name} key {ref.key}"
        try:
            url = kube.get_secret_value(ns, ref.name, ref.key)
        except Exception as exc:
            _failed("no_webhook", f"cannot read {source} ({type(exc).__name__})", [notice])
            continue
        if not url:
            _failed("no_webhook", f"{source} does not exist (it holds the Slack webhook URL)",
                    [notice])
            continue
        try:
            notifier = _notifier(url, source)
        except Exception as exc:
            _failed("invalid", f"{source}: {exc}", [notice])
            continue
        notifier.notify(notice)
        sent += 1
    return sent


def _schedules(kube: Kube, ns: str) -> list[BackupSchedule]:
    out = []
    for body in kube.list_custom("backupschedules", ns):
        try:
            out.append(BackupSchedule.from_body(body))
        except ValueError:
            continue  # an invalid schedule never stops a notification of the others
    return out


def _notifier(url: str, source: str) -> SlackNotifier:
    from safehold.notify.slack import check_url

    check_url(url, source=source)
    with _lock:
        found = _notifiers.get(url)
        if found is None:
            window = runtime.get().settings.notify_window_seconds
            found = SlackNotifier(url, window=window, on_failure=_failed,
                                  on_delivered=_delivered)
            _notifiers[url] = found
        return found


def _delivered(notices: Sequence[Notice]) -> None:
    metrics.NOTIFICATIONS.labels("slack").inc()


def _failed(reason: FailureReason | str, detail: str, notices: Sequence[Notice]) -> None:
    metrics.NOTIFICATION_FAILURES.labels("slack", reason).inc()
    kube = runtime.get().kube
    for n in notices:
        if n.ref is not None:
            kube.event(n.ref, "NotificationFailed",
                       f"Slack notification ({n.event}) not delivered: {detail}", warning=True)


def _ref(kind: str, name: str, ns: str, uid: str | None) -> Obj:
    """Enough of an object for Kube.event."""
    return {"apiVersion": f"{naming.GROUP}/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "uid": uid or ""}}


def event_ref(body: Obj) -> dict[str, Any]:
    """The ``ref`` of a Notice about ``body`` (a Backup, target, schedule)."""
    meta = body["metadata"]
    return _ref(body.get("kind", ""), meta["name"], meta["namespace"], meta.get("uid"))



def key_problem_notice(body: Obj, target: BackupTarget, error: ErrorInfo | None, what: str,
                       already_known: bool) -> Notice | None:
    """The ``keyProblem`` notice for a target's check or re-wrap that failed on its key, or
    None: for another failure, or when the last report already said so (a periodic re-check
    that finds the same key problem does not page again every interval)."""
    if error is None or error.error_class != "KeyProblem" or already_known:
        return None
    return Notice(event="keyProblem", target=target.metadata.name,
                  namespace=target.metadata.namespace, error_class=error.error_class,
                  message=f"{what}: {error.message}", hint=error.hint, failed=True,
                  ref=event_ref(body))


def key_problem(kube: Kube, body: Obj, target: BackupTarget, error: ErrorInfo | None,
                what: str, already_known: bool) -> None:
    """Tell the webhooks that chose ``keyProblem`` (see :func:`key_problem_notice`)."""
    notice = key_problem_notice(body, target, error, what, already_known)
    if notice is not None:
        notify_target(kube, target, notice)


def schedule_interval(sched: BackupSchedule, now: datetime, horizon: int = 8) -> float | None:
    """The longest gap between consecutive backup slots over the next ``horizon`` slots of each
    of the schedule's crons, for the fastest cron (a weekday-only cron's weekend counts);
    None when it has no backup cron or one cannot be read (the schedule reports that itself)."""
    gaps = []
    for expression in (sched.spec.full, sched.spec.differential, sched.spec.incremental):
        if not expression:
            continue
        try:
            cron = Cron.parse(expression, sched.spec.time_zone)
            t, longest = cron.next_after(now), 0.0
            for _ in range(horizon):
                after = cron.next_after(t)
                longest, t = max(longest, (after - t).total_seconds()), after
        except (ValueError, KeyError):
            return None
        gaps.append(longest)
    return min(gaps) if gaps else None


def stuck_prunes(backups: Sequence[Obj]) -> int:
    """Backups retention pruned (annotation) whose deletion is refused or failing."""
    return sum(1 for b in backups
               if PRUNED in (b["metadata"].get("annotations") or {})
               and any(c.get("type") == "Deleting" and c.get("status") == "False"
                       for c in (b.get("status") or {}).get("conditions") or []))


def schedule_looked(sched: BackupSchedule, own_backups: Sequence[Obj], now: datetime) -> None:
    """Gauges of one schedule look: its interval and retention stuck on deletions. Never
    raises."""
    ns, name = sched.metadata.namespace or "", sched.metadata.name
    try:
        interval = schedule_interval(sched, now)
        if interval is not None:
            metrics.SCHEDULE_INTERVAL.labels(ns, sched.spec.target_ref.name, name).set(interval)
        metrics.RETENTION_STUCK.labels(ns, name).set(stuck_prunes(own_backups))
    except Exception:
        log.exception("cannot report the gauges of BackupSchedule %s/%s", ns, name)
