"""Deterministic names: the same object always maps to the same Job, Secret and backup id.

Creation is create-if-absent by name, so an operator restarted between "create the Job" and
"record it in status" finds the Job it made instead of making a second one. Names are DNS-1123
labels of at most 63 characters (a Job's name is copied into its pods' ``job-name`` label).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

MAX_NAME = 63
DIGEST = 10
GROUP = "safehold.dev"

# labels every object the operator creates carries (selectors, `kubectl get -l`)
MANAGED_BY = "app.kubernetes.io/managed-by"
OPERATOR = "safehold-operator"
COMPONENT = "app.kubernetes.io/component"
PURPOSE = f"{GROUP}/purpose"
OWNER_KIND = f"{GROUP}/owner-kind"
OWNER_UID = f"{GROUP}/owner-uid"
OWNER_NAME = f"{GROUP}/owner-name"  # annotation: names may be longer than a label value
TARGET = f"{GROUP}/target"
IMPORTED = f"{GROUP}/imported"
GENERATION = f"{GROUP}/generation"  # the spec generation a check Job tests


def _digest(*parts: object) -> str:
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()[:DIGEST]


def _slug(text: str, room: int) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower())[:room].strip("-")
    return slug or "x"


def job_name(purpose: str, name: str, uid: str, salt: str | int = "") -> str:
    """``<purpose>-<name...>-<digest>``; the digest covers uid, purpose and salt.

    ``salt`` separates Jobs of one object that must differ (a target's check per generation and
    per periodic slot); everything else is a pure function of the object, never of time.
    """
    digest = _digest(uid, purpose, salt)
    room = MAX_NAME - len(purpose) - len(digest) - 2
    return f"{purpose}-{_slug(name, room)}-{digest}"


def key_secret_name(target: str) -> str:
    """The Secret ``generateKey: true`` creates for a target (not owned by it)."""
    return f"{target[:249]}-key"


def backup_id(created: str | datetime, uid: str) -> str:
    """The repository backup id the operator decides for a Backup object.

    The runner's format (``20261126T114217.123456Z``: sorts in time order) with the second from
    the object's creation time and the microseconds from its uid, so it is stable across
    operator restarts and Job retries (a retried pod resumes the same upload) and two Backups
    created in the same second differ.
    """
    when = datetime.fromisoformat(created.replace("Z", "+00:00")) if isinstance(
        created, str
    ) else created
    micro = int(hashlib.sha256(uid.encode()).hexdigest(), 16) % 1_000_000
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%S") + f".{micro:06d}Z"
