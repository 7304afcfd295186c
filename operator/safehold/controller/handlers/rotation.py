"""Key rotation: a change of the target's key Secret starts a re-wrap Job; its result goes into
the target's status (``KeysRotated`` condition, active and retired key ids) and events."""

from __future__ import annotations

from safehold.api.target import BackupTarget
from safehold.controller import naming, reporting, runtime
from safehold.controller.builders import tasks
from safehold.controller.handlers.common import ensure_runner_account, result_of, settle_existing
from safehold.controller.kube import Forbidden, Obj
from safehold.controller.logic import rotation
from safehold.controller.logic.phase import Verdict
from safehold.controller.status import write

PLURAL = "backuptargets"
_WARNED: set[tuple[str, str]] = set()  # targets told once that their key Secret is unreadable


def key_secret_name(target: BackupTarget) -> str | None:
    enc = target.spec.encryption
    if enc.key_secret_ref is not None:
        return enc.key_secret_ref.name
    if enc.generate_key:
        return target.status.generated_key_secret or naming.key_secret_name(target.metadata.name)
    return None


def maybe_rewrap(body: Obj, target: BackupTarget | None = None) -> None:
    """Called on creation and by the target's key timer: compare the key Secret's version."""
    rt = runtime.get()
    kube = rt.kube
    if target is None:
        # read it fresh: a timer's body may predate our own last status patch, and deciding
        # on that would start (and record) a re-wrap that already ran
        meta = body["metadata"]
        fresh = kube.get_custom(PLURAL, meta["namespace"], meta["name"])
        if fresh is None:
            return
        body, target = fresh, BackupTarget.from_body(fresh)
    ns = target.metadata.namespace or ""
    secret = key_secret_name(target)
    if target.metadata.deletion_timestamp or secret is None:
        return
    request = (target.metadata.annotations or {}).get(rotation.REWRAP_ANNOTATION)
    try:
        version = kube.secret_version(ns, secret)
    except Forbidden:
        version = None
        if (ns, target.metadata.name) not in _WARNED:
            _WARNED.add((ns, target.metadata.name))
            kube.event(body, "KeySecretUnreadable", f"cannot read the metadata of key Secret"
                       f" {secret} (RBAC: get on secrets): a key change is not noticed; set the"
                       f" annotation {rotation.REWRAP_ANNOTATION} to a new value to re-wrap",
                       warning=True)
    current = rotation.secret_version(secret, version, request)
    running = target.status.rewrap_job is not None and kube.get_job(
        ns, target.status.rewrap_job or "") is not None
    decision = rotation.decide(target.status.key_secret_version, current, running)
    if decision == "none" or current is None:
        return
    if decision == "baseline":
        write(kube, PLURAL, ns, target.metadata.name, target.status,
              target.status.key_seen(current))
        return
    ensure_runner_account(kube, ns)
    name = naming.job_name("rewrap", target.metadata.name, target.metadata.uid or "", current)
    try:
        job, created = kube.ensure_job(tasks.rewrap_job(target, name, rt.settings))
    except Forbidden:
        return
    new = target.status.rewrapping(name, current, target.metadata.generation)
    write(kube, PLURAL, ns, target.metadata.name, target.status, new)
    if created:
        kube.event(body, "Rewrapping", f"key Secret {secret} changed: re-wrap Job {name} wraps"
                   " every data key with its active key")
    settle_existing(kube, job, created, on_job)


def on_job(job: Obj, verdict: Verdict, deleted: bool) -> None:
    meta = job["metadata"]
    if not verdict.terminal and not deleted:
        return
    kube = runtime.get().kube
    ns = meta["namespace"]
    body = kube.get_custom(PLURAL, ns, meta.get("annotations", {}).get(naming.OWNER_NAME, ""))
    if body is None or body["metadata"].get("uid") != meta["labels"].get(naming.OWNER_UID):
        return
    target = BackupTarget.from_body(body)
    if target.status.rewrap_job != meta["name"]:
        return  # a superseded re-wrap: the newer one's verdict counts
    if not verdict.terminal:  # deleted before it finished: run it again on the next tick
        write(kube, PLURAL, ns, target.metadata.name, target.status,
              target.status.model_copy(update={"rewrap_job": None,
                                               "key_secret_version": "deleted"}))
        return
    # recorded once: afterwards status.rewrapJob no longer names this Job
    result = result_of(verdict, "rewrap")
    new = target.status.rewrapped(result, target.metadata.generation)
    write(kube, PLURAL, ns, target.metadata.name, target.status, new)
    cond = next(c for c in new.conditions if c.type == "KeysRotated")
    kube.event(body, cond.reason, cond.message, warning=not result.ok)
    reporting.key_problem(kube, body, target, result.error, "the key re-wrap",
                          already_known=False)
