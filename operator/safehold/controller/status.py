"""Status patches: the api models decide the new status; this turns (old, new) into a merge
patch. Fields the new status drops are sent as ``null`` so a merge patch removes them (a
finished check's ``checkJob``, a retried backup's old ``error``)."""

from __future__ import annotations

from typing import Any

from safehold.api.common import KubeModel


def patch(old: KubeModel, new: KubeModel) -> dict[str, Any]:
    before = old.to_kube()
    after = new.to_kube()
    out: dict[str, Any] = {k: v for k, v in after.items() if before.get(k) != v}
    out.update({k: None for k in before if k not in after})
    return out
