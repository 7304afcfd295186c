"""Standard conditions (``metav1.Condition``) and status patches.

A condition's ``lastTransitionTime`` moves only when its status flips, so repeated reconciles of
an unchanged situation patch nothing new; ``observedGeneration`` says which spec it describes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Condition = dict[str, Any]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[Condition] | None,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    at: str | None = None,
) -> list[Condition]:
    """A new list with ``type_`` set (others kept, order kept, the new one appended)."""
    value = "True" if status else "False"
    out: list[Condition] = []
    found = False
    for cond in conditions or []:
        if cond.get("type") != type_:
            out.append(cond)
            continue
        found = True
        moved = cond.get("status") != value
        out.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "observedGeneration": generation or 0,
                "lastTransitionTime": (at or now()) if moved else cond.get(
                    "lastTransitionTime", at or now()
                ),
            }
        )
    if not found:
        out.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "observedGeneration": generation or 0,
                "lastTransitionTime": at or now(),
            }
        )
    return out


def get_condition(conditions: list[Condition] | None, type_: str) -> Condition | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
