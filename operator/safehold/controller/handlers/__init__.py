"""kopf handlers (thin: parse the body, call pure logic and builders, patch status via kube).

Importing this package registers every handler with kopf's default registry.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import kopf

from safehold.controller import naming, runtime
from safehold.controller.handlers import adoption, backups, common, jobs, restores, targets
from safehold.controller.kube import Kube
from safehold.controller.settings import Settings

G = naming.GROUP
TICK = 60.0  # the targets' re-check timer; the interval itself is a setting

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
    runtime.set_runtime(runtime.Runtime(Settings.from_env(), Kube()))
    common.configure(settings)


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


# ---------------------------------------------------------------- Restore


@kopf.on.resume(G, "restores")
@kopf.on.create(G, "restores")
def restore_run(body: kopf.Body, **_: Any) -> None:
    restores.reconcile(dict(body))


# ---------------------------------------------------------------- runner Jobs


@kopf.on.event("batch", "v1", "jobs", labels={naming.MANAGED_BY: naming.OPERATOR})
def job_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    jobs.on_event(dict(body), type)
