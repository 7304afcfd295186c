"""The key Secret ``generateKey: true`` creates.

It is deliberately NOT owned by the BackupTarget: deleting the target (or its namespace through
an Argo CD prune) must never delete the only copy of the key that decrypts the backups. The
docs (docs/operator.md, "Key escrow") say how to export it.

Layout (the same one a user-provided key Secret uses): one entry per key, ``key-<id>`` holding
the base64 of 32 random bytes, and ``active`` naming the entry new backups are written with.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from safehold.controller import naming

KEY_PREFIX = "key-"
ACTIVE = "active"


def new_key_id() -> str:
    return secrets.token_hex(4)


def key_secret(
    name: str, namespace: str, target: str, *, key_id: str, key: bytes
) -> dict[str, Any]:
    """A Secret holding one key, marked active. ``key`` must be 32 bytes (AES-256)."""
    if len(key) != 32:
        raise ValueError(f"an AES-256 key is 32 bytes, got {len(key)}")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {naming.MANAGED_BY: naming.OPERATOR, naming.TARGET: target[:63]},
            "annotations": {
                f"{naming.GROUP}/escrow": (
                    "the only copy of this target's backup key: export it and store it outside"
                    " the cluster (docs/operator.md, Key escrow)"
                ),
            },
        },
        "data": {
            f"{KEY_PREFIX}{key_id}": b64(b64(key).encode()),
            ACTIVE: b64(f"{KEY_PREFIX}{key_id}".encode()),
        },
    }


def generated_key_secret(name: str, namespace: str, target: str) -> dict[str, Any]:
    """A fresh random key (never logged, never in status)."""
    return key_secret(name, namespace, target, key_id=new_key_id(), key=secrets.token_bytes(32))
