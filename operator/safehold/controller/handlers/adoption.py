"""Adoption: when a BackupTarget is created, list Jobs read its repository page by page; every
backup found becomes a Backup object (imported), so a Restore can name any of them. A periodic
re-check lists what was written since (a standalone runner, another cluster)."""

from __future__ import annotations

from safehold.api.backup import Backup
from safehold.api.common import utcnow
from safehold.api.errors import Exit
from safehold.api.target import BackupTarget
from safehold.controller import naming, runtime
from safehold.controller.builders import tasks
from safehold.controller.handlers.common import (
    ensure_generated_key,
    ensure_runner_account,
    result_of,
    settle_existing,
)
from safehold.controller.kube import Forbidden, Obj
from safehold.controller.logic import adopt, schedule
from safehold.controller.logic.phase import Verdict
from safehold.controller.status import write

PLURAL = "backuptargets"
SHOWN = 5  # names an event lists before "and N more"


def start(body: Obj, salt: str = "create") -> None:
    """List the repository after ``status.adoptedThrough``; ``salt`` names the Job (the target's
    creation, a re-check slot, or the page before), so a restarted operator finds it."""
    rt = runtime.get()
    kube = rt.kube
    target = BackupTarget.from_body(body)
    ns = target.metadata.namespace or ""
    if target.metadata.deletion_timestamp:
        return
    ensure_runner_account(kube, ns)
    ensure_generated_key(kube, body)
    if salt == "create":
        _key_baseline(body, target)
    name = naming.job_name("adopt", target.metadata.name, target.metadata.uid or "", salt)
    try:
        job, created = kube.ensure_job(tasks.adopt_job(
            target, name, rt.settings, after=target.status.adopted_through))
    except Forbidden:
        return  # a terminating namespace: nothing to adopt into
    if target.status.adopt_job != name:
        write(kube, PLURAL, ns, target.metadata.name, target.status,
              target.status.adopting(name))
    if created:
        since = target.status.adopted_through
        kube.event(body, "Adopting", f"runner Job {name} lists the backups of"
                   f" {target.repository_name} in {target.spec.storage.url}"
                   + (f" after {since}" if since else ""))
    settle_existing(kube, job, created, on_job)


def _key_baseline(body: Obj, target: BackupTarget) -> None:
    """Record the key Secret's version at creation: a later change of it is a rotation."""
    from safehold.controller.handlers import rotation

    rotation.maybe_rewrap(body, target)


def maybe_relist(body: Obj) -> None:
    """The periodic re-check: list again once per check interval (none while one runs)."""
    rt = runtime.get()
    target = BackupTarget.from_body(body)
    ns = target.metadata.namespace or ""
    busy = target.status.adopt_job is not None and rt.kube.get_job(
        ns, target.status.adopt_job or "") is not None
    interval = rt.settings.check_interval_seconds
    now = utcnow()
    if schedule.check_due(target.status.last_adoption_time, interval, now, checking=busy):
        start(body, salt=f"t{schedule.slot(now, interval)}")


# adopt Jobs already read (a finished Job still sends events); in-process: after a restart a
# Job is read once more, which adopts nothing new (known backups are skipped)
_READ: dict[str, None] = {}


def on_job(job: Obj, verdict: Verdict, deleted: bool) -> None:
    meta = job["metadata"]
    if not verdict.terminal:
        if deleted:
            _clear(meta)
        return
    if meta.get("uid") in _READ:
        return
    _READ[meta.get("uid", "")] = None
    while len(_READ) > 10_000:
        _READ.pop(next(iter(_READ)))
    kube = runtime.get().kube
    ns = meta["namespace"]
    body = kube.get_custom(PLURAL, ns, meta.get("annotations", {}).get(naming.OWNER_NAME, ""))
    if body is None or body["metadata"].get("uid") != meta["labels"].get(naming.OWNER_UID):
        return
    target = BackupTarget.from_body(body)
    result = result_of(verdict, "list")
    if not result.ok:
        write(kube, PLURAL, ns, target.metadata.name, target.status,
              target.status.adopted(None))
        error = result.error
        if error is not None and error.exit_code == int(Exit.NOT_FOUND):
            if target.status.adopted_through is None:
                kube.event(body, "NothingToAdopt", "the repository holds no backups of"
                           f" {target.repository_name}")
        else:
            kube.event(body, "AdoptionFailed", error.message if error else verdict.message,
                       warning=True)
        return
    made = []
    pairs = adopt.to_adopt(result.backups, target.metadata.name, target.repository_name,
                           kube.list_custom("backups", ns))
    for manifest, facts in pairs:
        manifest["metadata"]["namespace"] = ns
        created, _ = kube.ensure_custom("backups", manifest)
        bk = Backup.from_body(created)
        if not bk.status.finished:
            new = bk.status.completed(facts, bk.metadata.generation, imported=True)
            write(kube, "backups", ns, bk.metadata.name, bk.status, new)
        made.append(bk.metadata.name)
    newest = result.backups[-1].id if result.backups else None
    write(kube, PLURAL, ns, target.metadata.name, target.status,
          target.status.adopted(newest))
    if made:
        shown = ", ".join(made[:SHOWN]) + (f" and {len(made) - SHOWN} more"
                                          if len(made) > SHOWN else "")
        kube.event(body, "Adopted", f"{len(made)} backup(s) found in the repository, imported"
                   f" as {shown}")
    elif target.status.adopted_through is None and not result.backups:
        kube.event(body, "NothingToAdopt", "the repository holds no backups of"
                   f" {target.repository_name}")
    if result.more and newest:
        # the next page: named by this page's newest id, so a restart finds it
        fresh = kube.get_custom(PLURAL, ns, target.metadata.name)
        if fresh is not None:
            start(fresh, salt=f"p{newest}")


def _clear(meta: Obj) -> None:
    """An adopt Job deleted before it finished: forget it, the next re-check lists again."""
    kube = runtime.get().kube
    ns = meta["namespace"]
    body = kube.get_custom(PLURAL, ns, meta.get("annotations", {}).get(naming.OWNER_NAME, ""))
    if body is None or body["metadata"].get("uid") != meta["labels"].get(naming.OWNER_UID):
        return
    target = BackupTarget.from_body(body)
    if target.status.adopt_job == meta["name"]:
        write(kube, PLURAL, ns, target.metadata.name, target.status,
              target.status.model_copy(update={"adopt_job": None}))
