"""Key rotation: when does a BackupTarget's key Secret call for a re-wrap Job.

The operator never reads a key Secret's data; it sees the Secret's metadata only. Its version
(``<name>@<resourceVersion>``) is recorded when first seen; any later change of the Secret
(a key added, ``active`` pointed at another key, an old key removed, or the target pointed at
another Secret) starts one re-wrap Job against that version. Re-wrapping is idempotent: when
every data key is already wrapped with the active key it changes nothing, and it fails (before
writing anything) when a key some backup needs has been removed — which is the check that
retiring a key was safe.

Pure: the status and the Secret's version in, a decision out.
"""

from __future__ import annotations

from typing import Literal

REWRAP_ANNOTATION = "safehold.dev/rewrap-keys"

Decision = Literal["none", "baseline", "rewrap"]


def secret_version(name: str, resource_version: str | None, request: str | None = None
                   ) -> str | None:
    """What a change is measured against: ``<secret>@<resourceVersion>``, plus ``#<request>``
    when the target carries the annotation ``safehold.dev/rewrap-keys`` (the way to ask for a
    re-wrap where the operator may not read the Secret's metadata: change its value)."""
    if resource_version is None and request is None:
        return None
    return f"{name}@{resource_version or '?'}" + (f"#{request}" if request else "")


def decide(recorded: str | None, current: str | None, running: bool) -> Decision:
    """``baseline``: record ``current`` (first sight); ``rewrap``: start a re-wrap Job for it;
    ``none``: nothing (no key Secret, unchanged, or a re-wrap Job still running)."""
    if current is None or running:
        return "none"
    if recorded is None:
        return "baseline"
    return "none" if recorded == current else "rewrap"
