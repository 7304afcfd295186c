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
from safehold.controller.logic.schedules import label_value


def webhooks(event: str | Sequence[str], target: BackupTarget,
             schedules: Sequence[BackupSchedule], *, schedule: str | None = None
             ) -> list[SecretKeyRef]:
    """The webhook Secret keys that chose ``event`` (or any of several) about ``target``, each
    once, in order."""
    events = {event} if isinstance(event, str) else set(event)
    chosen: list[Notifications | None] = [target.spec.notifications]
    for s in schedules:
        if s.spec.target_ref.name != target.metadata.name:
            continue
        if schedule is not None and label_value(s.metadata.name) != label_value(schedule):
            continue
        chosen.append(s.spec.notifications)
    refs: list[SecretKeyRef] = []
    for n in chosen:
        if n is not None and n.slack is not None and events & set(n.slack.on):
            ref = n.slack.webhook_secret_ref
            if ref not in refs:
                refs.append(ref)
    return refs
