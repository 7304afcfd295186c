"""The restricted Pod Security Standard, applied to every runner pod.

https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted — non-root,
seccomp RuntimeDefault, every capability dropped, no privilege escalation; on top of that a
read-only root filesystem (the runner writes only to the ``/tmp`` emptyDir) and no API token.
"""

from __future__ import annotations

from typing import Any

RUNNER_UID = 65532  # the runner image's user (images/runner/Dockerfile)
TMP_VOLUME = "tmp"


def pod_security_context(identity: tuple[int, int, int | None] | None = None
                         ) -> dict[str, Any]:
    """The runner's own user, or ``identity`` (user, group, fsGroup or None): another
    non-root user, such as the database image's for a data directory it will own."""
    user, group, fs_group = identity or (RUNNER_UID, RUNNER_UID, RUNNER_UID)
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if fs_group is not None:
        context["fsGroup"] = fs_group
    return context


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tmp_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, mount) for the writable /tmp of a read-only root filesystem."""
    return (
        {"name": TMP_VOLUME, "emptyDir": {}},
        {"name": TMP_VOLUME, "mountPath": "/tmp"},
    )
