"""Which Slack webhooks hear of an event (pure).

A target's own ``spec.notifications`` and those of its BackupSchedules each choose their events
(``on``). A Backup a schedule created (labelled with it) reports to that schedule and the target;
any other Backup (manual, or a retention/key event of the target) reports to every schedule of
the target and the target. One webhook (Secret name and key) hears of an event once.
"""

from __future__ import annotations

from collections.abc import Sequence

from safehold.api.common import SecretKeyRef
from safehold.api.schedule import BackupSchedule, Notifications
from safehold.api.target import BackupTarget


def webhooks(event: str, target: BackupTarget, schedules: Sequence[BackupSchedule],
             *, schedule: str | None = None) -> list[SecretKeyRef]:
    """The webhook Secret keys to notify of ``event`` about ``target``, each once, in order."""
    chosen: list[Notifications | None] = [target.spec.notifications]
    for s in schedules:
        if s.spec.target_ref.name != target.metadata.name:
            continue
        if schedule is not None and s.metadata.name != schedule:
            continue
        chosen.append(s.spec.notifications)
    refs: list[SecretKeyRef] = []
    for n in chosen:
        if n is not None and n.slack is not None and event in n.slack.on:
            ref = n.slack.webhook_secret_ref
            if ref not in refs:
                refs.append(ref)
    return refs
