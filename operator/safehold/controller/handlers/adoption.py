"""Adoption: when a BackupTarget is created, a plan-only Job reads its repository; the newest
backup and its chain become Backup objects (imported), so a Restore can name them."""

from __future__ import annotations

from safehold.api.backup import Backup
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
from safehold.controller.logic import adopt
from safehold.controller.logic.phase import Verdict
from safehold.controller.status import patch


def start(body: Obj) -> None:
    """Once per target (its uid names the Job): look for backups to adopt."""
    rt = runtime.get()
    kube = rt.kube
    target = BackupTarget.from_body(body)
    ns = target.metadata.namespace or ""
    ensure_runner_account(kube, ns)
    ensure_generated_key(kube, body)
    name = naming.job_name("adopt", target.metadata.name, target.metadata.uid or "")
    try:
        job, created = kube.ensure_job(tasks.adopt_job(target, name, rt.settings))
    except Forbidden:
        return  # a terminating namespace: nothing to adopt into
    if created:
        kube.event(body, "Adopting", f"runner Job {name} looks for existing backups of"
                   f" {target.metadata.name} in {target.spec.storage.url}")
    settle_existing(kube, job, created, on_job)


# adopt Jobs already read (a finished Job still sends events); in-process: after a restart a
# Job is read once more, which adopts nothing new (known backups are skipped)
_READ: dict[str, None] = {}


def on_job(job: Obj, verdict: Verdict, deleted: bool) -> None:
    meta = job["metadata"]
    if not verdict.terminal or meta.get("uid") in _READ:
        return
    _READ[meta.get("uid", "")] = None
    while len(_READ) > 10_000:
        _READ.pop(next(iter(_READ)))
    kube = runtime.get().kube
    ns = meta["namespace"]
    body = kube.get_custom("backuptargets", ns,
                           meta.get("annotations", {}).get(naming.OWNER_NAME, ""))
    if body is None or body["metadata"].get("uid") != meta["labels"].get(naming.OWNER_UID):
        return
    target = body["metadata"]["name"]
    result = result_of(verdict, "restore")
    if not result.ok:
        error = result.error
        if error is not None and error.exit_code == int(Exit.NOT_FOUND):
            kube.event(body, "NothingToAdopt", "the repository holds no backups of this target")
        else:
            kube.event(body, "AdoptionFailed", error.message if error else verdict.message,
                       warning=True)
        return
    made = []
    for manifest, facts in adopt.to_adopt(result, target, kube.list_custom("backups", ns)):
        manifest["metadata"]["namespace"] = ns
        created, _ = kube.ensure_custom("backups", manifest)
        bk = Backup.from_body(created)
        if not bk.status.finished:
            new = bk.status.completed(facts, bk.metadata.generation, imported=True)
            kube.patch_status("backups", ns, bk.metadata.name, patch(bk.status, new))
        made.append(bk.metadata.name)
    if made:
        kube.event(body, "Adopted", f"{len(made)} backup(s) found in the repository, imported"
                   f" as {', '.join(made)}")
