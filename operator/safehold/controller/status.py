"""Status patches: the api models decide the new status; this turns (old, new) into a merge
patch and writes it. Fields the new status drops are sent as ``null`` so a merge patch removes
them (a finished check's ``checkJob``, a retried backup's old ``error``).

Several writers share one object's conditions (a BackupTarget's Ready comes from its check,
PointInTime from its streamer, KeyRotation from its re-wrap), each from the body it was handed,
which may be older than the object. A merge patch replaces a list whole, so a writer sending its
stale list would bring back a condition another writer had just changed or removed. So
:func:`write` sends only the condition types the writer changed, merged into the object's
current list under its resourceVersion, and merges again when another write came first.
"""

from __future__ import annotations

from typing import Any

from safehold.api.common import KubeModel
from safehold.controller.kube import Conflict, Kube

CONDITIONS = "conditions"
ATTEMPTS = 10  # conditional writes before giving up (each lost one means another write landed)


def patch(old: KubeModel, new: KubeModel) -> dict[str, Any]:
    before = old.to_kube()
    after = new.to_kube()
    out: dict[str, Any] = {k: v for k, v in after.items() if before.get(k) != v}
    out.update({k: None for k in before if k not in after})
    return out


def write(kube: Kube, plural: str, ns: str, name: str, old: KubeModel, new: KubeModel,
          diff: dict[str, Any] | None = None) -> None:
    """Patch the object's status from ``old`` (what the writer saw) to ``new`` (``diff``: the
    patch when the caller shaped it itself). Conditions the writer did not change stay as the
    object has them now."""
    diff = patch(old, new) if diff is None else diff
    if not diff:
        return
    if CONDITIONS not in diff:
        kube.patch_status(plural, ns, name, diff)
        return
    changed = changed_conditions(old.to_kube().get(CONDITIONS), new.to_kube().get(CONDITIONS))
    mine = {c["type"]: c for c in diff[CONDITIONS] or []}
    for attempt in range(ATTEMPTS):
        current = kube.get_custom(plural, ns, name)
        if current is None:
            return  # deleted meanwhile: nothing to record
        theirs = (current.get("status") or {}).get(CONDITIONS) or []
        try:
            kube.patch_status(plural, ns, name,
                              {**diff, CONDITIONS: merge_conditions(theirs, mine, changed)},
                              resource_version=current["metadata"]["resourceVersion"])
            return
        except Conflict:
            if attempt == ATTEMPTS - 1:
                raise


def changed_conditions(before: list[dict[str, Any]] | None,
                       after: list[dict[str, Any]] | None) -> set[str]:
    """The condition types a writer set, changed or removed."""
    old = {c["type"]: c for c in before or []}
    new = {c["type"]: c for c in after or []}
    return {t for t in old.keys() | new.keys() if old.get(t) != new.get(t)}


def merge_conditions(current: list[dict[str, Any]], mine: dict[str, dict[str, Any]],
                     changed: set[str]) -> list[dict[str, Any]]:
    """The object's ``current`` conditions with the ``changed`` types as the writer has them
    (``mine``; a changed type missing from it is removed). Order is kept; new types go last."""
    out = [mine[c["type"]] if c["type"] in changed else c for c in current
           if c["type"] not in changed or c["type"] in mine]
    seen = {c["type"] for c in out}
    return out + [c for t, c in mine.items() if t in changed and t not in seen]
