"""kopf handlers (thin: parse the body, call pure logic and builders, patch status via kube).

Importing this package registers every handler with kopf's default registry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Any

import kopf

from safehold.controller import naming, reporting, runtime
from safehold.controller.handlers import (
    adoption,
    backups,
    common,
    jobs,
    restores,
    rotation,
    schedules,
    streamers,
    targets,
)
from safehold.controller.kube import Kube
from safehold.controller.settings import Settings

G = naming.GROUP
TICK = 60.0  # the targets' re-check timer; the interval itself is a setting
KEY_TICK = 30.0  # how often a target's key Secret version is compared (metadata only)

log = logging.getLogger(__name__)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    from kubernetes import config

    in_cluster: Any = config.load_incluster_config
    from_file: Any = config.load_kube_config
    try:
        in_cluster()
    except config.ConfigException:
        from_file(config_file=os.environ.get("KUBECONFIG"))  # else ~/.kube/config
    rt = runtime.Runtime(Settings.from_env(), Kube())
    runtime.set_runtime(rt)
    common.configure(settings)
    reporting.start(rt.settings.log_level, rt.settings.metrics_port)


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    reporting.flush()  # pending Slack notifications go out before the operator stops


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod: its ServiceAccount; elsewhere: the file KUBECONFIG names (read at start)."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    if info is not None:
        return in_cluster_server(info, os.environ)
    return kopf.login_with_kubeconfig(**kwargs)


def in_cluster_server(info: kopf.ConnectionInfo, env: Any) -> kopf.ConnectionInfo:
    """The API server at KUBERNETES_SERVICE_HOST:PORT, as client-go's in-cluster config has it:
    kopf's default, https://kubernetes.default.svc, needs cluster DNS, which not every cluster
    (nor a hostNetwork pod) resolves."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return info
    host = f"[{host}]" if ":" in host else host
    return dataclasses.replace(info, server=f"https://{host}:{port}")


# ---------------------------------------------------------------- BackupTarget


@kopf.on.resume(G, "backuptargets")
@kopf.on.create(G, "backuptargets")
@kopf.on.update(G, "backuptargets", field="spec")
def target_check(body: kopf.Body, meta: kopf.Meta, **_: Any) -> None:
    targets.start_check(dict(body), salt=f"g{meta.get('generation', 0)}")


# only when the target is created: a Backup object deleted later (Retain) is not re-adopted
@kopf.on.create(G, "backuptargets")
def target_adopt(body: kopf.Body, **_: Any) -> None:
    adoption.start(dict(body))


@kopf.timer(G, "backuptargets", interval=TICK, initial_delay=TICK, idle=TICK)
def target_recheck(body: kopf.Body, **_: Any) -> None:
    targets.maybe_recheck(dict(body))


# key rotation (a changed key Secret -> re-wrap Job) and adoption re-checks (backups written
# since the last listing); each tick costs one metadata read of the key Secret
@kopf.timer(G, "backuptargets", interval=KEY_TICK, initial_delay=KEY_TICK)
def target_keys_and_adoption(body: kopf.Body, **_: Any) -> None:
    rotation.maybe_rewrap(dict(body))
    adoption.maybe_relist(dict(body))


# pointInTime: one daemon per target keeps its streamer Deployment as the spec says and polls
# the streamer's status endpoint (every SAFEHOLD_STREAMER_POLL_SECONDS); targets without
# pointInTime cost one read per poll
@kopf.daemon(G, "backuptargets", cancellation_timeout=10.0)
async def target_streamer(namespace: str | None, name: str, stopped: Any, **_: Any) -> None:
    while not stopped:
        try:
            delay = await asyncio.to_thread(streamers.tick, namespace or "", name)
        except Exception:  # a failed look is retried at the next poll, the daemon stays
            log.exception("BackupTarget %s/%s: streamer look failed", namespace, name)
            delay = runtime.get().settings.streamer_poll_seconds
        await _pause(delay)


async def _pause(seconds: float) -> None:
    """A daemon's sleep between looks; stopping the daemon cancels it.

    Not kopf's ``await stopped.wait(seconds)``: that runs the wait as a task of its own, and
    when the operator exits while a daemon waits, kopf collects the pending tasks, including
    that inner one, and re-raises its ordinary timeout (a TimeoutError) as the operator's exit
    error (seen once in CI with a 0.3 s poll). The daemons declare ``cancellation_timeout``, so
    kopf cancels them right after setting ``stopped``; a cancelled ``asyncio.sleep`` ends
    cleanly and leaves no task behind.
    """
    await asyncio.sleep(seconds)


# ---------------------------------------------------------------- Backup


@kopf.on.resume(G, "backups")
@kopf.on.create(G, "backups")
def backup_run(body: kopf.Body, **_: Any) -> None:
    backups.reconcile(dict(body))


def _delete_policy(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("deletionPolicy") == "Delete"


# the finalizer is present only while deletionPolicy is Delete (kopf adds it for matching
# handlers only), so a Retain Backup is never held by a missing operator
@kopf.on.delete(G, "backups", when=_delete_policy)
def backup_delete(body: kopf.Body, **_: Any) -> None:
    backups.delete_data(dict(body))


# ---------------------------------------------------------------- BackupSchedule


# one daemon per schedule: it sleeps until the next slot (at most SAFEHOLD_SCHEDULE_POLL_SECONDS,
# which also bounds how late a spec change or a finished backup is noticed); the look itself
# runs in a thread, so a slow API call never blocks the event loop
@kopf.daemon(G, "backupschedules", cancellation_timeout=10.0)
async def schedule_daemon(namespace: str | None, name: str, stopped: Any, **_: Any) -> None:
    while not stopped:
        try:
            delay = await asyncio.to_thread(schedules.tick, namespace or "", name)
        except Exception:  # a failed look is retried at the next poll, the daemon stays
            log.exception("BackupSchedule %s/%s: look failed", namespace, name)
            delay = runtime.get().settings.schedule_poll_seconds
        await _pause(delay)


# ---------------------------------------------------------------- Restore


@kopf.on.resume(G, "restores")
@kopf.on.create(G, "restores")
def restore_run(body: kopf.Body, **_: Any) -> None:
    restores.reconcile(dict(body))


# ---------------------------------------------------------------- runner Jobs


@kopf.on.event("batch", "v1", "jobs", labels={naming.MANAGED_BY: naming.OPERATOR})
def job_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    jobs.on_event(dict(body), type)
