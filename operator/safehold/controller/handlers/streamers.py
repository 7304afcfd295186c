"""BackupTarget.spec.pointInTime: keep the streamer Deployment as the spec says, and poll its
status endpoint into status.pointInTime, the PointInTime condition and the metrics.

One look per target every ``SAFEHOLD_STREAMER_POLL_SECONDS`` (a kopf daemon calls
:func:`tick`). The streamer has no API rights: the operator reads ``GET /status`` from the
streamer pod's IP on the status port. A changed spec deletes the Deployment (in the foreground:
its pod is gone first) and the next look creates the new one, so two streamers never run at once.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from safehold.api.common import find_condition, utcnow
from safehold.api.pointintime import POINT_IN_TIME, PointInTimeStatus
from safehold.api.streamer import STATUS_PATH, StreamerStatus
from safehold.api.target import BackupTarget, BackupTargetStatus
from safehold.controller import metrics, runtime
from safehold.controller.builders import streamer
from safehold.controller.handlers.common import ensure_generated_key, ensure_runner_account
from safehold.controller.kube import Forbidden, Kube, Obj
from safehold.controller.status import patch, write

PLURAL = "backuptargets"
TIMEOUT = 5.0  # seconds for one status request

log = logging.getLogger(__name__)


def tick(ns: str, name: str) -> float:
    """One look at the target's streamer; returns the seconds until the next."""
    rt = runtime.get()
    body = rt.kube.get_custom(PLURAL, ns, name)
    if body is not None and not body["metadata"].get("deletionTimestamp"):
        reconcile(rt.kube, body)
    return rt.settings.streamer_poll_seconds


def reconcile(kube: Kube, body: Obj) -> None:
    target = BackupTarget.from_body(body)
    ns = target.metadata.namespace or ""
    now = utcnow()
    if not target.spec.streams:
        if target.status.point_in_time is not None:
            gone = target.status.point_in_time.deployment or streamer.deployment_name(target)
            kube.delete_deployment(ns, gone)
            _record(kube, body, target, None)
            metrics.streamer_removed(ns, target.metadata.name)
            kube.event(body, "StreamerRemoved",
                       f"pointInTime is off: streamer Deployment {gone} deleted; the archived"
                       " log stays in the repository")
        return
    name = _ensure(kube, body, target)
    pit = (target.status.point_in_time or PointInTimeStatus()).model_copy(
        update={"deployment": name})
    address = _pod_address(kube, ns, target, name)
    if address is None:
        pit = pit.model_copy(update={"health": "starting", "error": None})
    else:
        port = runtime.get().settings.streamer_status_port
        seen, why = fetch(address, port)
        pit = pit.polled(seen, now) if seen is not None else pit.unreachable(why, now)
    metrics.streamer_polled(ns, target.metadata.name, pit.health == "ok", pit.lag_seconds,
                            pit.lag_bytes, pit.window_start, pit.window_end)
    _record(kube, body, target, pit)


def _ensure(kube: Kube, body: Obj, target: BackupTarget) -> str:
    """The Deployment as the spec wants it (created, or deleted to be created again)."""
    ns = target.metadata.namespace or ""
    settings = runtime.get().settings
    ensure_runner_account(kube, ns)
    key_secret = ensure_generated_key(kube, body)
    if key_secret and target.status.generated_key_secret != key_secret:
        target = target.model_copy(update={
            "status": target.status.key_generated(key_secret)})
    desired = streamer.streamer_deployment(target, settings)
    name: str = desired["metadata"]["name"]
    existing = kube.get_deployment(ns, name)
    if existing is None:
        try:
            _, created = kube.ensure_deployment(desired)
        except Forbidden as exc:
            kube.event(body, "StreamerRefused", f"cannot create streamer Deployment {name}:"
                       f" {exc}", warning=True)
            return name
        if created:
            kube.event(body, "StreamerCreated", f"streamer Deployment {name} archives the log"
                       " for point-in-time restores")
    elif existing["metadata"].get("deletionTimestamp"):
        pass  # being replaced: created again at a later look, once its pod is gone
    elif (existing["metadata"].get("annotations") or {}).get(streamer.SPEC_HASH) != \
            desired["metadata"]["annotations"][streamer.SPEC_HASH]:
        kube.delete_deployment(ns, name)
        kube.event(body, "StreamerUpdating", f"the target changed: streamer Deployment {name}"
                   " is replaced (the new one resumes after the newest archived file)")
    return name


def _pod_address(kube: Kube, ns: str, target: BackupTarget, deployment: str) -> str | None:
    selector = ",".join(f"{k}={v}" for k, v in streamer.selector(target).items())
    return streamer_pod_address(kube.pods(ns, selector), deployment)


def streamer_pod_address(pods: list[Obj], deployment: str) -> str | None:
    """The IP of the Deployment's running pod, newest first (None while none runs). Only a pod
    of the Deployment's ReplicaSet counts: a pod someone made with the same labels is not
    asked."""
    for pod in reversed(pods):
        status = pod.get("status") or {}
        ip = status.get("podIP")
        owners = pod["metadata"].get("ownerReferences") or []
        ours = any(o.get("kind") == "ReplicaSet" and o.get("controller")
                   and str(o.get("name", "")).startswith(deployment + "-") for o in owners)
        if ours and status.get("phase") == "Running" and ip and not pod["metadata"].get(
                "deletionTimestamp"):
            return f"[{ip}]" if ":" in ip else str(ip)
    return None


def fetch(address: str, port: int, timeout: float = TIMEOUT
          ) -> tuple[StreamerStatus | None, str]:
    """The streamer's status, or None and why it could not be read."""
    url = f"http://{address}:{port}{STATUS_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data: Any = json.loads(resp.read(1 << 20))
        return StreamerStatus.model_validate(data), ""
    except urllib.error.HTTPError as exc:
        return None, f"{url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"{url}: {reason}"
    except (ValueError, ValidationError) as exc:
        return None, f"{url} answered something that is not a streamer status: {str(exc)[:200]}"


def _record(kube: Kube, body: Obj, target: BackupTarget, pit: PointInTimeStatus | None,
            now: datetime | None = None) -> None:
    old = target.status
    new = old.streamer_seen(pit, target.metadata.generation, now)
    write(kube, PLURAL, target.metadata.namespace or "", target.metadata.name, old, new,
          _nested_patch(old, new))
    was, cond = find_condition(old.conditions, POINT_IN_TIME), find_condition(
        new.conditions, POINT_IN_TIME)
    if cond is not None and (was is None or was.reason != cond.reason):
        kube.event(body, cond.reason, cond.message, warning=cond.status == "False")


def _nested_patch(old: BackupTargetStatus, new: BackupTargetStatus) -> dict[str, Any]:
    """The status patch, with status.pointInTime's dropped fields sent as null too (a merge
    patch merges nested maps: a cleared error would otherwise stay)."""
    diff = patch(old, new)
    before = (old.point_in_time.to_kube() if old.point_in_time else {})
    after = diff.get("pointInTime")
    if isinstance(after, dict):
        after.update({k: None for k in before if k not in after})
    return diff
