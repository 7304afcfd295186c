"""Sample objects shaped like what the API server returns (shared by unit and envtests)."""

from __future__ import annotations

from typing import Any

UID = "5b3c1c0e-8d7f-4a57-9a3e-0c1f2d3e4f50"


def meta(name: str, ns: str = "shop", uid: str = UID, generation: int = 1) -> dict[str, Any]:
    return {"name": name, "namespace": ns, "uid": uid, "generation": generation,
            "creationTimestamp": "2026-12-02T10:11:12Z"}


PG_TARGET_SPEC: dict[str, Any] = {
    "engine": "postgresql",
    "connection": {
        "host": "orders-db.shop.svc",
        "port": 5432,
        "database": "orders",
        "username": "backup",
        "passwordSecretRef": {"name": "orders-db", "key": "password"},
        "tls": {"mode": "verify-full", "caSecretRef": {"name": "orders-ca", "key": "ca.crt"}},
    },
    "storage": {"url": "s3://backups/prod", "credentialsSecretRef": {"name": "s3-creds"}},
    "encryption": {"keySecretRef": {"name": "orders-key"}},
    "compression": "zstd:3",
}

SQLITE_TARGET_SPEC: dict[str, Any] = {
    "engine": "sqlite",
    "sqlite": {"claimName": "app-data", "mountPath": "/data", "path": "/data/app.db"},
    "storage": {"url": "file:///backups", "volume": {"claimName": "backups"}},
    "encryption": {"generateKey": True},
    "runner": {"resources": {"limits": {"memory": "512Mi"}}, "nodeSelector": {"disk": "ssd"}},
}


def target(name: str = "orders", spec: dict[str, Any] | None = None, **kw: Any
           ) -> dict[str, Any]:
    return {"apiVersion": "safehold.dev/v1alpha1", "kind": "BackupTarget",
            "metadata": meta(name, **kw), "spec": spec or PG_TARGET_SPEC}


def backup(name: str = "orders-20261202", target: str = "orders", **spec: Any
           ) -> dict[str, Any]:
    return {"apiVersion": "safehold.dev/v1alpha1", "kind": "Backup",
            "metadata": meta(name, uid="0f1e2d3c-0000-4000-8000-000000000001"),
            "spec": {"targetRef": {"name": target}, "type": "full", **spec}}


def restore(name: str = "orders-back", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "safehold.dev/v1alpha1", "kind": "Restore",
            "metadata": meta(name, uid="0f1e2d3c-0000-4000-8000-000000000002"),
            "spec": {"source": {"backupRef": {"name": "orders-20261202"}},
                     "destination": {"database": "orders_copy"}, **spec}}


MARIADB_PIT_TARGET_SPEC: dict[str, Any] = {
    "engine": "mysql",
    "connection": {"host": "shop-db.shop.svc", "database": "shop", "username": "backup",
                   "passwordSecretRef": {"name": "shop-db", "key": "password"}},
    "storage": {"url": "s3://backups/prod", "credentialsSecretRef": {"name": "s3-creds"}},
    "encryption": {"keySecretRef": {"name": "shop-key"}},
    "pointInTime": {"enabled": True, "segmentSeconds": 300},
}
